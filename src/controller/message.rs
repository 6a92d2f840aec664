//! Reconciles EmailMessages: validates the spec, waits for a Ready provider,
//! claims the message (status Sending, guarded by resourceVersion) before any
//! I/O, sends it once, and records the outcome. See docs/delivery.md.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::error::Error;
use super::{backoff, provider};
use crate::api::condition::{self, READY, SENT, reason};
use crate::api::message::{LastError, ServerReply};
use crate::api::{EmailMessage, EmailMessageStatus, EmailProvider, Phase};
use crate::compose;
use crate::transport::{Accepted, SendError};

/// How soon a message looks again for a provider that is Ready but whose
/// transport this controller has not verified yet (just after a restart, or
/// while another replica's verification is being repeated here).
const TRANSPORT_WARMUP_RETRY: Duration = Duration::from_secs(2);
/// How often a waiting message looks again on its own; provider changes wake
/// it sooner.
const WAITING_RETRY: Duration = Duration::from_secs(300);
/// How many times a result is written before it is kept for a later reconcile.
const RECORD_TRIES: u32 = 6;

/// Reconciles one message.
#[tracing::instrument(skip_all, fields(namespace = message.namespace().unwrap_or_default(), email = message.name_any()))]
pub async fn reconcile(message: Arc<EmailMessage>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = message.status.clone().unwrap_or_default();
    if status.phase.is_some_and(Phase::is_finished) {
        return Ok(Action::await_change());
    }
    let namespace = message.namespace().unwrap_or_default();
    let api: Api<EmailMessage> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = message.uid().unwrap_or_default();

    // A result that was sent but could not be written yet: write it, never send again.
    if let Some(outcome) = ctx.unrecorded.take(&uid) {
        let attempt = outcome.attempts;
        return match record(&api, &message, outcome.clone(), attempt).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) => {
                ctx.unrecorded.keep(uid, outcome);
                Err(e)
            }
        };
    }

    let provider_name = &message.spec.provider_ref.name;
    let provider = ctx
        .providers
        .get(&ObjectRef::<EmailProvider>::new(provider_name).within(&namespace));
    let Some(provider) = provider else {
        let text = format!("EmailProvider {provider_name:?} not found in namespace {namespace:?}");
        return wait(
            &api,
            &message,
            reason::PROVIDER_NOT_FOUND,
            text,
            WAITING_RETRY,
        )
        .await;
    };

    let email = match compose::compose(&message.spec, provider.spec.default_from.as_deref(), &uid) {
        Ok(mut email) => {
            if let Some(id) = &status.message_id {
                email.message_id = id.clone();
            }
            email
        }
        Err(invalid) => return fail_invalid(&api, &message, &ctx, invalid.to_string()).await,
    };

    let key = (namespace.clone(), provider_name.clone());
    let Some(verified) = ctx.transports.get(&key) else {
        let ready = provider
            .status
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, READY));
        return match ready {
            Some(c) if c.status == "True" => Ok(Action::requeue(TRANSPORT_WARMUP_RETRY)),
            Some(c) => {
                let text = format!(
                    "EmailProvider {provider_name:?} is not Ready: {}: {}",
                    c.reason, c.message
                );
                wait(
                    &api,
                    &message,
                    reason::PROVIDER_NOT_READY,
                    text,
                    WAITING_RETRY,
                )
                .await
            }
            // Verification is under way; its status write wakes this message.
            // Waiting quietly keeps a message applied together with its
            // provider within two status writes.
            None => Ok(Action::requeue(WAITING_RETRY)),
        };
    };

    if let Some(due) = status.next_attempt_time.as_ref().and_then(remaining) {
        return Ok(Action::requeue(due));
    }

    // Claim: written before any I/O and guarded by resourceVersion, so a stale
    // view of the message (or a second controller) can never start a send.
    let interrupted = status.phase == Some(Phase::Sending);
    let attempt = status.attempts + 1;
    let mut claim = status.clone();
    claim.phase = Some(Phase::Sending);
    claim.attempts = attempt;
    claim.message_id = verified
        .transport
        .sets_message_id()
        .then(|| email.message_id.clone());
    claim.last_attempt_time = Some(now());
    claim.next_attempt_time = None;
    claim.observed_generation = message.metadata.generation;
    let (claim_reason, claim_text) = if interrupted {
        (
            reason::INTERRUPTED,
            format!(
                "attempt {attempt}: the previous attempt was interrupted before its result was recorded; sending again"
            ),
        )
    } else {
        (reason::SENDING, format!("attempt {attempt} under way"))
    };
    condition::set(
        &mut claim.conditions,
        SENT,
        false,
        claim_reason,
        claim_text,
        message.metadata.generation,
    );
    let claimed = match replace_status(&api, &message, claim).await {
        Ok(claimed) => claimed,
        Err(e) if e.is_conflict() => {
            debug!("the message changed since it was read; reconciling the newer version");
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        Err(e) => return Err(e),
    };

    let started = std::time::Instant::now();
    let result = verified.transport.send(&email).await;
    if let Err(e) = &result
        && e.is_provider_failure()
        && ctx.transports.withdraw(&key, &verified.fingerprint)
    {
        provider::mark_unverified(&ctx, &provider, &verified.fingerprint, e).await;
    }
    let outcome = outcome(&claimed, attempt, result, ctx.settings.max_attempts);
    let elapsed = started.elapsed();

    let action = match outcome.phase {
        Some(Phase::Pending) => {
            let due = outcome
                .next_attempt_time
                .as_ref()
                .and_then(remaining)
                .unwrap_or_default();
            Action::requeue(due.max(Duration::from_millis(100)))
        }
        _ => Action::await_change(),
    };
    match record(&api, &claimed, outcome.clone(), attempt).await {
        Ok(recorded) => {
            announce(&ctx, &recorded, &outcome, elapsed).await;
            Ok(action)
        }
        Err(e) => {
            warn!(error = %e, "the outcome could not be recorded; it is kept and written on the next reconcile");
            ctx.unrecorded.keep(uid, outcome);
            Err(e)
        }
    }
}

/// The status after an attempt.
fn outcome(
    claimed: &EmailMessage,
    attempt: u32,
    result: Result<Accepted, SendError>,
    max_attempts: u32,
) -> EmailMessageStatus {
    let generation = claimed.metadata.generation;
    let mut status = claimed.status.clone().unwrap_or_default();
    match result {
        Ok(accepted) => {
            status.phase = Some(Phase::Sent);
            status.provider_message_id = accepted
                .provider_message_id
                .clone()
                .or_else(|| status.message_id.clone());
            status.server_reply = Some(ServerReply {
                code: accepted.code,
                message: accepted.message.clone(),
            });
            status.provider_message_ids = accepted.all_ids.clone();
            status.sent_time = Some(now());
            status.last_error = None;
            let text = format!(
                "accepted by the server on attempt {attempt}: {} {}",
                accepted.code, accepted.message
            );
            condition::set(
                &mut status.conditions,
                SENT,
                true,
                reason::ACCEPTED,
                text,
                generation,
            );
        }
        Err(error) => {
            let retry = error.retryable() && attempt < max_attempts;
            status.last_error = Some(LastError {
                reason: error.reason().to_string(),
                message: error.message.clone(),
                retryable: error.retryable(),
                code: error.code,
                provider_code: error.provider_code.clone(),
            });
            if let Some(code) = error.code {
                status.server_reply = Some(ServerReply {
                    code,
                    message: error.message.clone(),
                });
            }
            let text = if retry {
                let delay = backoff::delay(attempt, error.retry_after);
                status.phase = Some(Phase::Pending);
                status.next_attempt_time = Some(Time(not_before(jiff::Timestamp::now(), delay)));
                format!(
                    "attempt {attempt} failed, retrying in {}s: {}",
                    delay.as_secs(),
                    error.message
                )
            } else {
                status.phase = Some(Phase::Failed);
                if error.retryable() {
                    format!("gave up after {attempt} attempts: {}", error.message)
                } else {
                    error.message.clone()
                }
            };
            condition::set(
                &mut status.conditions,
                SENT,
                false,
                error.reason(),
                text,
                generation,
            );
        }
    }
    status
}

/// Writes the outcome of `attempt`. A conflict means the object changed (a
/// label, say) since the claim: the write is repeated on the fresh object as
/// long as the claim of this attempt still stands. Other failures (the
/// apiserver restarting) are retried with growing pauses.
async fn record(
    api: &Api<EmailMessage>,
    claimed: &EmailMessage,
    outcome: EmailMessageStatus,
    attempt: u32,
) -> Result<EmailMessage, Error> {
    let mut base = claimed.clone();
    let mut pause = Duration::from_millis(250);
    let mut last_error = None;
    for _ in 0..RECORD_TRIES {
        match replace_status(api, &base, outcome.clone()).await {
            Ok(written) => return Ok(written),
            Err(e) if e.is_conflict() => {
                let fresh = api.get(&claimed.name_any()).await.map_err(Error::Kube)?;
                let still_ours = fresh
                    .status
                    .as_ref()
                    .is_some_and(|s| s.attempts == attempt && s.phase == Some(Phase::Sending));
                if !still_ours {
                    warn!(
                        "the claim of attempt {attempt} was replaced by another writer; its outcome is not recorded"
                    );
                    return Ok(fresh);
                }
                base = fresh;
            }
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    Err(last_error.unwrap_or(Error::Contended(RECORD_TRIES)))
}

/// Logs the outcome and publishes an Event on Sent and on Failed.
async fn announce(
    ctx: &Context,
    message: &EmailMessage,
    status: &EmailMessageStatus,
    elapsed: Duration,
) {
    let (type_, event_reason, note) = match status.phase {
        Some(Phase::Sent) => {
            info!(
                attempts = status.attempts,
                ms = elapsed.as_millis() as u64,
                "sent"
            );
            let reply = status
                .server_reply
                .as_ref()
                .map(|r| format!(" ({} {})", r.code, r.message))
                .unwrap_or_default();
            (
                EventType::Normal,
                "Sent",
                format!("accepted by the server{reply}"),
            )
        }
        Some(Phase::Failed) => {
            let error = status.last_error.as_ref();
            let why = error
                .map(|e| format!("{}: {}", e.reason, e.message))
                .unwrap_or_default();
            warn!(
                attempts = status.attempts,
                reason = error.map(|e| e.reason.as_str()),
                "failed"
            );
            (EventType::Warning, "Failed", why)
        }
        _ => {
            let error = status.last_error.as_ref();
            info!(
                attempts = status.attempts,
                reason = error.map(|e| e.reason.as_str()),
                "attempt failed; will retry"
            );
            return;
        }
    };
    publish(ctx, message, type_, event_reason, note).await;
}

async fn publish(
    ctx: &Context,
    message: &EmailMessage,
    type_: EventType,
    event_reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: event_reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: "Send".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &message.object_ref(&())).await {
        warn!(error = %e, "publishing the event failed");
    }
}

/// Marks a message that can never be sent as Failed, naming the field.
async fn fail_invalid(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    text: String,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let mut status = message.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Failed);
    status.observed_generation = generation;
    status.last_error = Some(LastError {
        reason: reason::INVALID_REQUEST.to_string(),
        message: text.clone(),
        retryable: false,
        code: None,
        provider_code: None,
    });
    condition::set(
        &mut status.conditions,
        SENT,
        false,
        reason::INVALID_REQUEST,
        &text,
        generation,
    );
    match replace_status(api, message, status).await {
        Ok(written) => {
            warn!(reason = reason::INVALID_REQUEST, message = %text, "failed");
            publish(
                ctx,
                &written,
                EventType::Warning,
                "Failed",
                format!("{}: {text}", reason::INVALID_REQUEST),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e),
    }
}

/// Records that a message waits (phase Pending with the reason), writing only
/// when that changes what the status says.
async fn wait(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    wait_reason: &str,
    text: String,
    retry: Duration,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let old = message.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.phase = Some(Phase::Pending);
    status.observed_generation = generation;
    condition::set(
        &mut status.conditions,
        SENT,
        false,
        wait_reason,
        &text,
        generation,
    );
    if old.phase == status.phase && condition::same_meaning(&old.conditions, &status.conditions) {
        return Ok(Action::requeue(retry));
    }
    info!(reason = wait_reason, message = %text, "waiting");
    match replace_status(api, message, status).await {
        Ok(_) => Ok(Action::requeue(retry)),
        Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e),
    }
}

/// Replaces the status of `message`, guarded by its resourceVersion.
async fn replace_status(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    status: EmailMessageStatus,
) -> Result<EmailMessage, Error> {
    let mut object = message.clone();
    object.status = Some(status);
    api.replace_status(&message.name_any(), &PostParams::default(), &object)
        .await
        .map_err(Error::Kube)
}

/// `from + delay`, rounded up to a whole second: status times are stored to
/// the second, and a retry must never come earlier than the server asked.
fn not_before(from: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    let due = from + delay;
    let whole = jiff::Timestamp::from_second(due.as_second()).unwrap_or(due);
    if whole < due {
        whole + jiff::SignedDuration::from_secs(1)
    } else {
        due
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Time left until `t`, or `None` if it has passed.
fn remaining(t: &Time) -> Option<Duration> {
    let left = t.0.duration_since(jiff::Timestamp::now());
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_is_rounded_up_to_a_whole_second() {
        let from = jiff::Timestamp::from_millisecond(1_000_300).expect("time");
        let due = not_before(from, Duration::from_secs(7));
        assert_eq!(due.as_millisecond(), 1_008_000);
        let exact = jiff::Timestamp::from_second(1_000).expect("time");
        assert_eq!(not_before(exact, Duration::from_secs(7)).as_second(), 1_007);
    }
}
