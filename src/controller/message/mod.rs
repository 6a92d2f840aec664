//! Reconciles EmailMessages as a pipeline, one module per step:
//!
//! 1. `inputs` gathers what the caches know (provider, access, template,
//!    verified transport, retry limits);
//! 2. `gate` decides, without I/O, whether to send, wait, end or look again,
//!    and `once` whether the same message was sent before (the ledger);
//! 3. `verdict` writes a decision that is not a send;
//! 4. `prepare` takes the rate-limit slot and reads the attachments;
//! 5. `single` or `bulk` makes the attempt through `attempt` (claim before
//!    any I/O, send, record), and `report` counts and announces it.
//!
//! See docs/architecture.md and docs/delivery.md.

mod attachments;
mod attempt;
pub(crate) mod backoff;
mod bulk;
mod clock;
pub(crate) mod deliverability;
mod dry_run;
pub(crate) mod email;
mod failover;
pub(crate) mod fits;
mod gate;
mod inputs;
mod limits;
mod once;
mod prepare;
mod report;
mod route;
mod single;
mod test_mode;
mod verdict;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

#[cfg(test)]
pub(crate) use clock::not_before;
pub(crate) use inputs::provider_of;
#[cfg(test)]
pub(crate) use limits::deadline;

use super::context::Context;
use super::error::Error;
use crate::api::EmailMessage;
use gate::Decision;

/// How soon a message is looked at again when the cache is older than an
/// outcome this controller wrote (normally its watch event comes first).
const STALE_CACHE_RETRY: Duration = Duration::from_secs(1);

/// Reconciles one message. A turn in a send line it was given and did not
/// use goes on to the next message in that line.
#[tracing::instrument(skip_all, fields(namespace = message.namespace().unwrap_or_default(), email = message.name_any(), trace_id = crate::logging::trace_id()))]
pub async fn reconcile(message: Arc<EmailMessage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action = reconcile_once(message.clone(), ctx.clone()).await;
    ctx.attempts
        .sends
        .waiters
        .done(&ObjectRef::from_obj(&*message));
    action
}

/// What one reconcile of a message does: a wait, an end, or an attempt.
async fn reconcile_once(message: Arc<EmailMessage>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Judged only once the caches it is judged against are complete.
    if !ctx.caches_ready().await {
        return Ok(Action::await_change());
    }
    // The cache has not caught up with an outcome written here: its newer
    // version brings a reconcile of its own.
    let uid = message.uid().unwrap_or_default();
    let version = message.metadata.resource_version.as_deref();
    if ctx.attempts.written.is_stale(&uid, version) {
        return Ok(Action::requeue(STALE_CACHE_RETRY));
    }
    // An attempt the claim journal lists and the status does not show was
    // interrupted: the message is judged as claimed.
    let message = ctx.journal.overlay(message);
    if let Some(stop) = gate::settled(&message) {
        return verdict::write(&ctx, &message, stop, None).await;
    }
    // A result that was sent but could not be written yet: write it, never
    // send again.
    if let Some(outcome) = ctx.attempts.unrecorded.take(&uid) {
        return attempt::write_kept(&ctx, &message, outcome).await;
    }

    let inputs = inputs::gather(&message, &ctx).await?;
    let deadline = inputs.limits.deadline;
    let email = match gate::decide(&message, &inputs.view(), jiff::Timestamp::now()) {
        Decision::Send(email) => email,
        Decision::Stop(stop) => return verdict::write(&ctx, &message, stop, deadline).await,
    };
    // A dry run stops here: nothing is claimed, and the ledger is not asked.
    if message.spec.dry_run {
        return dry_run::run(&ctx, &message, &inputs, email).await;
    }
    if let Some(stop) = once::check(&ctx, &message).await? {
        return verdict::write(&ctx, &message, stop, deadline).await;
    }
    // The gate sends only with both; this is never taken.
    let (Some(provider), Some(verified)) = (&inputs.provider, &inputs.verified) else {
        return Ok(Action::requeue(gate::TRANSPORT_WARMUP_RETRY));
    };
    let tenant = inputs.tenant.as_ref();
    let prepared = match prepare::prepare(&ctx, &message, provider, verified, tenant, email).await?
    {
        Ok(prepared) => prepared,
        Err(stop) => return verdict::write(&ctx, &message, stop, deadline).await,
    };

    let limits = &inputs.limits;
    let reservation = prepared.reservation;
    // Held until the send ends: the email's files stay in memory till then.
    let _attachment_memory = prepared.attachment_memory;
    match prepared.email {
        Some(email) => {
            let job = single::Job {
                ctx: &ctx,
                message: &message,
                provider,
                verified,
                email: &email,
                limits,
                route: inputs.route.as_ref().and_then(|r| r.as_ref().ok()),
                reservation,
            };
            single::send(job).await
        }
        None => {
            let template = inputs.template.flatten();
            let job = bulk::Job {
                ctx: &ctx,
                message: &message,
                provider,
                verified,
                template: template.as_deref(),
                limits,
                suppressions: &inputs.suppressions,
                route: inputs.route.as_ref().and_then(|r| r.as_ref().ok()),
                tenant,
                unsubscribe_keys: match &inputs.unsubscribe_keys {
                    Some(Ok(keys)) => Some(keys),
                    _ => None,
                },
            };
            bulk::send(job).await
        }
    }
}
