//! Just before the claim: the provider's rate limit (a short wait is slept
//! through, a longer one written as RateLimited) and the attachments, read
//! last so a file is read once per attempt and held no longer.

use std::time::Duration;

use kube::ResourceExt;

use super::attachments::{self, LoadError};
use super::gate::Stop;
use super::inputs::key_of;
use crate::api::condition::Reason;
use crate::api::provider::{DEFAULT_MAX_ATTACHMENT_BYTES, RateLimit};
use crate::api::tenancy::TenantPolicy;
use crate::api::{EmailMessage, EmailProvider, Phase};
use crate::compose::Email;
use crate::controller::attachment_memory::Taken;
use crate::controller::context::{Context, Verified};
use crate::controller::error::Error;
use crate::controller::usage::{HOLD_RECHECK, Held, Reservation};
use kube::runtime::events::EventType;

/// How often a message looks again for an attachment's missing Secret or
/// ConfigMap (nothing wakes it when one appears).
const ATTACHMENT_RETRY: Duration = Duration::from_secs(15);

/// What is ready to claim: the email (`None` for a bulk message), the
/// place in the namespace's quota held for it, and the memory its
/// attachments hold.
pub struct Prepared {
    /// The email, attachments read.
    pub email: Option<Box<Email>>,
    /// The quota reserved for a single message (kept when it is sent).
    pub reservation: Option<Reservation>,
    /// The attachment memory the email holds, given back when dropped.
    pub attachment_memory: Option<Taken>,
}

/// An email with its attachments read, and the memory they hold.
pub(super) type Attached = (Option<Box<Email>>, Option<Taken>);

/// What is ready to claim, or why not now.
pub async fn prepare(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    verified: &Verified,
    tenant: Option<&TenantPolicy>,
    email: Option<Box<Email>>,
) -> Result<Result<Prepared, Stop>, Error> {
    let reservation = match tenant {
        Some(policy) => match quota(ctx, message, provider, policy, email.is_some()).await {
            Ok(reservation) => Some(reservation),
            Err(stop) => return Ok(Err(stop)),
        },
        None => None,
    };
    if let Some(stop) = rate_limit(ctx, message, provider, verified, tenant).await {
        return Ok(Err(stop));
    }
    Ok(attach(ctx, message, provider, email)
        .await?
        .map(|(email, attachment_memory)| Prepared {
            email,
            reservation,
            attachment_memory,
        }))
}

/// The namespace's place in its quota on the provider (one message for a
/// single message; a bulk message is counted batch by batch as it is
/// accepted), or a wait for the quota or the reputation hold.
async fn quota(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    policy: &TenantPolicy,
    single: bool,
) -> Result<Reservation, Stop> {
    let namespace = message.namespace().unwrap_or_default();
    let key = key_of(provider);
    let now = jiff::Timestamp::now();
    let reserve = u64::from(single);
    let held = match ctx.usage.admit(&key, &namespace, policy, now, reserve) {
        Ok(reservation) => return Ok(reservation),
        Err(held) => held,
    };
    Err(match held {
        Held::Quota { text, until } => Stop::Wait {
            reason: Reason::QuotaExceeded,
            text,
            until: Some(until.max(Duration::from_secs(1))),
        },
        Held::Reputation { text, new } => {
            if new {
                tracing::warn!(provider = %key, namespace, "{text}");
                super::report::publish(
                    ctx,
                    message,
                    EventType::Warning,
                    "ReputationHold",
                    text.clone(),
                )
                .await;
            }
            Stop::Wait {
                reason: Reason::ReputationHold,
                text,
                until: Some(HOLD_RECHECK),
            }
        }
    })
}

/// A wait for the namespace's share of the provider's rate limit, then for
/// the provider's, when it is longer than a moment.
async fn rate_limit(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    verified: &Verified,
    tenant: Option<&TenantPolicy>,
) -> Option<Stop> {
    let limit = provider.spec.rate_limit.as_ref();
    let namespace = message.namespace().unwrap_or_default();
    let key = key_of(provider);
    let share = tenant
        .and_then(|t| t.rate_share_percent)
        .zip(limit)
        .map(|(percent, limit)| shared(limit, percent));
    let who = message.uid().unwrap_or_default();
    let (wait_for, text) = match ctx
        .rate_limits
        .acquire(&key, Some(&namespace), &who, share.as_ref())
        .await
    {
        Some(wait) => {
            let rate = share.as_ref().map_or(0, |r| r.messages_per_second);
            let text = format!(
                "the namespace's share of EmailProvider {:?} (spec.tenants[].rateSharePercent) is {rate} message(s) per second; waiting for a slot",
                provider.name_any()
            );
            (wait, text)
        }
        None => {
            let wait = ctx.rate_limits.acquire(&key, None, &who, limit).await?;
            let rate = limit.map_or(0, |r| r.messages_per_second);
            let text = format!(
                "EmailProvider {:?} allows {rate} message(s) per second; waiting for a slot",
                provider.name_any()
            );
            (wait, text)
        }
    };
    let transport = verified.transport.name();
    ctx.telemetry
        .metrics
        .count_rate_limit_wait(&namespace, &provider.name_any(), transport);
    Some(Stop::Wait {
        reason: Reason::RateLimited,
        text,
        until: Some(wait_for),
    })
}

/// `percent` of `limit` (at least one message per second).
fn shared(limit: &RateLimit, percent: u32) -> RateLimit {
    let part = |n: u32| (u64::from(n) * u64::from(percent)).div_ceil(100).max(1);
    RateLimit {
        messages_per_second: u32::try_from(part(limit.messages_per_second)).unwrap_or(u32::MAX),
        burst: limit
            .burst
            .map(|b| u32::try_from(part(b)).unwrap_or(u32::MAX)),
    }
}

/// The email with its attachments read and the memory they hold, or why it
/// cannot have them (now, or ever).
pub(super) async fn attach(
    ctx: &Context,
    message: &EmailMessage,
    provider: &EmailProvider,
    mut email: Option<Box<Email>>,
) -> Result<Result<Attached, Stop>, Error> {
    if message.spec.attachments.is_empty() {
        return Ok(Ok((email, None)));
    }
    let cap = provider
        .spec
        .max_attachment_bytes
        .unwrap_or(DEFAULT_MAX_ATTACHMENT_BYTES);
    let namespace = message.namespace().unwrap_or_default();
    let mut memory = ctx.attempts.attachment_memory.account(&namespace);
    let loaded = attachments::load(
        &ctx.client,
        &namespace,
        &message.spec.attachments,
        u64::from(cap),
        &mut memory,
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
            Ok(Ok((email, Some(memory))))
        }
        Err(LoadError::NoRoomNow { .. }) => {
            Ok(Err(Stop::Requeue(super::attempt::slots_busy_retry())))
        }
        Err(e @ LoadError::NeverRoom { .. }) => Ok(Err(end(Reason::InvalidRequest, e))),
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
