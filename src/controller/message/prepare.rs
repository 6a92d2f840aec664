//! Just before the claim: the provider's rate limit (a short wait is slept
//! through, a longer one written as RateLimited) and the attachments, read
//! last so a file is read once per attempt and held no longer.

use std::time::Duration;

use kube::ResourceExt;

use super::attachments::{self, LoadError};
use super::gate::Stop;
use super::inputs::key_of;
use crate::api::condition::Reason;
use crate::api::provider::DEFAULT_MAX_ATTACHMENT_BYTES;
use crate::api::{EmailMessage, EmailProvider, Phase};
use crate::compose::Email;
use crate::controller::context::{Context, Verified};
use crate::controller::error::Error;

/// How often a message looks again for an attachment's missing Secret or
/// ConfigMap (nothing wakes it when one appears).
const ATTACHMENT_RETRY: Duration = Duration::from_secs(15);

/// The email ready to claim (`None` for a bulk message), or why not now.
pub async fn prepare(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    verified: &Verified,
    email: Option<Box<Email>>,
) -> Result<Result<Option<Box<Email>>, Stop>, Error> {
    if let Some(stop) = rate_limit(ctx, message, provider, verified).await {
        return Ok(Err(stop));
    }
    attach(ctx, message, provider, email).await
}

/// A wait for the provider's rate limit, when it is longer than a moment.
async fn rate_limit(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    verified: &Verified,
) -> Option<Stop> {
    let limit = provider.spec.rate_limit.as_ref();
    let wait_for = ctx.rate_limits.acquire(&key_of(provider), limit).await?;
    let name = &message.spec.provider_ref.name;
    let namespace = message.namespace().unwrap_or_default();
    let transport = verified.transport.name();
    ctx.telemetry
        .metrics
        .count_rate_limit_wait(&namespace, name, transport);
    let rate = limit.map_or(0, |r| r.messages_per_second);
    Some(Stop::Wait {
        reason: Reason::RateLimited,
        text: format!(
            "EmailProvider {name:?} allows {rate} message(s) per second; waiting for a slot"
        ),
        until: Some(wait_for),
    })
}

/// The email with its attachments read, or why it cannot have them.
async fn attach(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    mut email: Option<Box<Email>>,
) -> Result<Result<Option<Box<Email>>, Stop>, Error> {
    if message.spec.attachments.is_empty() {
        return Ok(Ok(email));
    }
    let cap = provider
        .spec
        .max_attachment_bytes
        .unwrap_or(DEFAULT_MAX_ATTACHMENT_BYTES);
    let namespace = message.namespace().unwrap_or_default();
    let loaded = attachments::load(
        &ctx.client,
        &namespace,
        &message.spec.attachments,
        u64::from(cap),
    )
    .await;
    let end = |reason, e: LoadError| Stop::End {
        phase: Phase::Failed,
        reason,
        text: e.to_string(),
    };
    match loaded {
        Ok(files) => {
            if let Some(email) = email.as_mut() {
                email.attachments = files;
            }
            Ok(Ok(email))
        }
        Err(e @ LoadError::Missing { .. }) => Ok(Err(Stop::Wait {
            reason: Reason::AttachmentNotFound,
            text: e.to_string(),
            until: Some(ATTACHMENT_RETRY),
        })),
        Err(e @ LoadError::TooLarge { .. }) => Ok(Err(end(Reason::InvalidRequest, e))),
        Err(e @ LoadError::NotAllowed { .. }) => Ok(Err(end(Reason::AttachmentNotAllowed, e))),
        Err(LoadError::Api { field, source }) => Err(Error::Attachments { field, source }),
    }
}
