//! Writes what the gate decided when it is not a send: a wait (Pending and
//! why, written only when that changes what the status says), an end
//! (Failed or Unknown and why, with an Event), a retry refused, or the
//! clean-up of a finished message.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::clock::{not_before, remaining};
use super::gate::Stop;
use super::report;
use crate::api::condition::{self, Reason, SENT};
use crate::api::message::{LastError, RETRY_ANNOTATION};
use crate::api::{EmailMessage, EmailMessageStatus, Phase};
use crate::controller::context::Context;
use crate::controller::error::Error;

/// How often a waiting message looks again on its own; what it waits for
/// wakes it sooner.
const WAITING_RETRY: Duration = Duration::from_secs(300);

/// Writes `stop` for `message`; `deadline` bounds how long a wait sleeps.
pub async fn write(
    ctx: &Context,
    message: &EmailMessage,
    stop: Stop,
    deadline: Option<jiff::Timestamp>,
) -> Result<Action, Error> {
    let api = api(ctx, message);
    tracing::debug!(?stop, "not sent now");
    match stop {
        Stop::Wait {
            reason,
            text,
            until,
        } => wait(&api, message, reason, text, until, deadline).await,
        Stop::End {
            phase,
            reason,
            text,
        } => conclude(&api, message, ctx, phase, reason, text).await,
        Stop::Requeue(after) => Ok(Action::requeue(after)),
        // Its time to live is kept by `expiry`, outside the cache.
        Stop::Finished => Ok(Action::await_change()),
        Stop::RefuseRetry(phase) => refuse_retry(&api, message, ctx, phase).await,
        Stop::AlreadySent(entry) => already_sent(&api, message, &entry).await,
    }
}

/// The API of `message`'s namespace.
pub fn api(ctx: &Context, message: &EmailMessage) -> Api<EmailMessage> {
    Api::namespaced(ctx.client.clone(), &message.namespace().unwrap_or_default())
}

/// Ends a message that will not be sent (Failed) or whose fate is not known
/// (Unknown), with the reason, and an Event.
pub async fn conclude(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    phase: Phase,
    why: Reason,
    text: String,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let mut status = message.status.clone().unwrap_or_default();
    status.phase = Some(phase);
    status.observed_generation = generation;
    status.next_attempt_time = None;
    status.last_error = Some(LastError {
        reason: why.into(),
        message: text.clone(),
        retryable: phase == Phase::Unknown,
        code: None,
        provider_code: None,
        may_have_been_delivered: phase == Phase::Unknown,
    });
    condition::set(&mut status.conditions, SENT, false, why, &text, generation);
    match replace_status(api, message, status).await {
        Ok(written) => {
            warn!(reason = why.as_str(), message = %text, phase = ?phase, "concluded");
            report::concluded(ctx, &written, phase, why, &text).await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_conflict() => Ok(Action::requeue(crate::controller::error::CONFLICT_RETRY)),
        Err(e) => Err(e),
    }
}

/// Ends a message whose identity the ledger holds: Sent, reason
/// AlreadySent, naming the original send; nothing is sent.
async fn already_sent(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    entry: &crate::ledger::Entry,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let mut status = message.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Sent);
    status.observed_generation = generation;
    status.next_attempt_time = None;
    status.last_error = None;
    status.sent_time = Some(Time(entry.sent));
    status.provider_message_id = entry.provider_message_id.clone();
    let original = match &entry.provider_message_id {
        Some(id) => format!("EmailMessage {:?}, provider message id {id}", entry.name),
        None => format!("EmailMessage {:?}", entry.name),
    };
    let text = format!(
        "not sent again: the same message was sent at {} ({original}); the record lasts until {}. Annotate {RETRY_ANNOTATION}=true to send it anyway, or set a new spec.idempotencyKey",
        entry.sent, entry.until
    );
    condition::set(
        &mut status.conditions,
        SENT,
        true,
        Reason::AlreadySent,
        &text,
        generation,
    );
    match replace_status(api, message, status).await {
        Ok(_) => {
            info!(original = %entry.name, sent = %entry.sent, "already sent; not sent again");
            Ok(Action::await_change())
        }
        Err(e) if e.is_conflict() => Ok(Action::requeue(crate::controller::error::CONFLICT_RETRY)),
        Err(e) => Err(e),
    }
}

/// Records that a message waits (phase Pending with the reason), writing only
/// when that changes what the status says. `until` schedules the next look
/// (a rate limit); otherwise a change of the provider wakes the message.
async fn wait(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    wait_reason: Reason,
    text: String,
    until: Option<Duration>,
    deadline: Option<jiff::Timestamp>,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let old = message.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.phase = Some(Phase::Pending);
    status.observed_generation = generation;
    // A backoff already scheduled still holds while the message waits.
    status.next_attempt_time = until
        .map(|d| Time(not_before(jiff::Timestamp::now(), d)))
        .or(old.next_attempt_time.clone());
    condition::set(
        &mut status.conditions,
        SENT,
        false,
        wait_reason,
        &text,
        generation,
    );
    let mut retry = until.map_or(WAITING_RETRY, |d| d.max(Duration::from_millis(100)));
    // Look again when the deadline passes, to end the message then.
    if let Some(left) = deadline.map(|d| d.duration_since(jiff::Timestamp::now()))
        && let Ok(left) = Duration::try_from(left)
    {
        retry = retry.min(left + Duration::from_millis(100));
    }
    // Rewrite only when the status would say something new: another phase or
    // reason, or a wait whose scheduled time has already passed.
    let schedule_current =
        until.is_none() || old.next_attempt_time.as_ref().and_then(remaining).is_some();
    let unchanged = old.phase == status.phase
        && schedule_current
        && condition::same_meaning(&old.conditions, &status.conditions);
    if unchanged {
        return Ok(Action::requeue(retry));
    }
    info!(reason = wait_reason.as_str(), message = %text, "waiting");
    match replace_status(api, message, status).await {
        Ok(_) => Ok(Action::requeue(retry)),
        Err(e) if e.is_conflict() => Ok(Action::requeue(crate::controller::error::CONFLICT_RETRY)),
        Err(e) => Err(e),
    }
}

/// Answers a retry asked of a finished message that is not Unknown (a Sent
/// one was accepted; a Failed one can never be sent as it is) with a Warning
/// Event, and removes the annotation.
async fn refuse_retry(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    phase: Phase,
) -> Result<Action, Error> {
    match clear_retry_annotation(api, message).await {
        Ok(_) => {}
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) if e.is_conflict() => {
            return Ok(Action::requeue(crate::controller::error::CONFLICT_RETRY));
        }
        Err(e) => return Err(e),
    }
    let note = format!(
        "{RETRY_ANNOTATION} is only taken on an Unknown message; this one is {phase:?} and is not sent again (create a new EmailMessage to send it again)"
    );
    report::publish(ctx, message, EventType::Warning, "RetryRefused", note).await;
    Ok(Action::await_change())
}

/// Removes the retry annotation; returns the updated object.
pub async fn clear_retry_annotation(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
) -> Result<EmailMessage, Error> {
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": message.resource_version(),
            "annotations": {RETRY_ANNOTATION: null}
        }
    });
    api.patch(
        &message.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)
}

/// Replaces the status of `message`, guarded by its resourceVersion.
pub async fn replace_status(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    status: EmailMessageStatus,
) -> Result<EmailMessage, Error> {
    let mut object = message.clone();
    let mut status = status;
    status.recipient = message.spec.recipient_summary();
    crate::api::health::message(&mut status, message.metadata.generation);
    object.status = Some(status);
    api.replace_status(&message.name_any(), &PostParams::default(), &object)
        .await
        .map_err(Error::Kube)
}
