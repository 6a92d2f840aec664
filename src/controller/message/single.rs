//! Sends a message with one email: a person's retry annotation taken off
//! first (so a retry happens once per request), a send slot, the claim
//! (written unless the service is idempotent), the send, and the outcome
//! recorded and reported.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::attempt::{self, ClaimWrite, Retry};
use super::clock::{now, remaining};
use super::failover;
use super::gate::Sender;
use super::inputs::key_of;
use super::limits::Limits;
use super::route::{self, Plan};
use super::{report, verdict};
use crate::api::condition::{self, Reason, SENT};
use crate::api::message::{DeliveryPolicy, RETRY_ANNOTATION, ServerReply};
use crate::api::{EmailMessage, EmailMessageStatus, EmailProvider, Phase, ProviderId};
use crate::compose::Email;
use crate::controller::context::{Context, Verified};
use crate::controller::error::CONFLICT_RETRY;
use crate::controller::error::Error;
use crate::controller::usage::Reservation;
use crate::transport::{Accepted, SendError};

/// What one send needs.
pub struct Job<'a> {
    /// The context.
    pub ctx: &'a Context,
    /// The message, as the cache has it.
    pub message: &'a EmailMessage,
    /// Its provider.
    pub provider: &'a EmailProvider,
    /// The provider's verified transport.
    pub verified: &'a Verified,
    /// The email, attachments included.
    pub email: &'a Email,
    /// The retry limits.
    pub limits: &'a Limits,
    /// Its EmailRoute and the provider chosen, if it names one.
    pub route: Option<&'a Plan>,
    /// Its place in the namespace's quota, kept if it is sent.
    pub reservation: Option<Reservation>,
}

/// Claims, sends and records one attempt.
pub async fn send(job: Job<'_>) -> Result<Action, Error> {
    let Job {
        ctx,
        message,
        provider,
        verified,
        email,
        limits,
        route,
        reservation,
    } = job;
    let api = verdict::api(ctx, message);
    let retry_requested = message.annotations().contains_key(RETRY_ANNOTATION);
    let base = if retry_requested {
        match verdict::clear_retry_annotation(&api, message).await {
            Ok(fresh) => fresh,
            Err(e) if e.is_conflict() => return Ok(Action::requeue(CONFLICT_RETRY)),
            Err(e) => return Err(e),
        }
    } else {
        message.clone()
    };

    // The send slot, held until the outcome is recorded.
    let key = key_of(provider);
    let namespace = message.namespace().unwrap_or_default();
    let _slot = match attempt::slot(ctx, provider, verified, message).await {
        Ok(slot) => slot,
        Err(later) => return Ok(later),
    };
    let mut claim = claim(message, verified, email, retry_requested);
    attempt::note_provider(&mut claim, message, route);
    claim.redirected_to = email.redirected_to.clone();
    let attempt = claim.attempts;
    let claim_write = ClaimWrite::for_transport(verified.transport.idempotent());
    let Some((claimed, claim_write)) =
        attempt::take_claim(ctx, &api, &base, claim, claim_write).await?
    else {
        return Ok(Action::requeue(CONFLICT_RETRY));
    };

    let started = std::time::Instant::now();
    let result = verified.transport.send(email).await;
    if let Err(e) = &result {
        attempt::withdraw_on_provider_failure(ctx, &key, provider, verified, e).await;
    }
    attempt::judge_provider(ctx, provider, result.as_ref().err()).await;
    let policy = message.spec.delivery_policy;
    let sender = Sender::of(verified.transport.as_ref());
    let claimed_status = claimed.status.clone().unwrap_or_default();
    let move_on = match (&result, route) {
        (Err(e), Some(plan))
            if failover::moves_on(e, sender) && plan.has_another(&claimed_status) =>
        {
            Some(plan)
        }
        _ => None,
    };
    let mut outcome = status_after(&claimed, attempt, result, limits, policy, move_on);
    super::test_mode::mark(&mut outcome, provider, claimed.metadata.generation);
    if move_on.is_some() && outcome.phase == Some(Phase::Pending) {
        failed_over(ctx, &claimed, &key, &outcome).await;
    }
    let elapsed = started.elapsed();
    ctx.attempts
        .sends
        .note_attempt(&key, &provider.spec, elapsed);
    // What the server did counts, whether or not the status write lands.
    let now = jiff::Timestamp::now();
    match (outcome.phase, reservation) {
        (Some(Phase::Sent), Some(reservation)) => reservation.keep(now),
        (Some(Phase::Sent), None) => ctx.usage.sent(&key, &namespace, 1, now),
        (Some(Phase::Failed | Phase::Unknown), _) => ctx.usage.failed(&key, &namespace),
        // Pending: its place is given back, and taken again next time.
        _ => {}
    }

    let Some(recorded) =
        attempt::finish(ctx, &api, &claimed, &outcome, attempt, claim_write).await?
    else {
        return Ok(Action::await_change());
    };
    let transport = verified.transport.name();
    report::attempt_metrics(ctx, message, transport, &outcome, elapsed);
    report::announce(ctx, &recorded, &outcome, elapsed).await;
    Ok(match outcome.phase {
        Some(Phase::Pending) => {
            let due = outcome.next_attempt_time.as_ref().and_then(remaining);
            Action::requeue(due.unwrap_or_default().max(Duration::from_millis(100)))
        }
        _ => Action::await_change(),
    })
}

/// The claim of the next attempt, saying why it is made.
fn claim(
    message: &EmailMessage,
    verified: &Verified,
    email: &Email,
    retry_requested: bool,
) -> EmailMessageStatus {
    let status = message.status.clone().unwrap_or_default();
    let attempt = status.attempts + 1;
    let (reason, text) = if status.phase == Some(Phase::Sending) {
        let text = format!(
            "attempt {attempt}: the previous attempt was interrupted before its result was recorded; sending again"
        );
        (Reason::Interrupted, text)
    } else if retry_requested {
        let text = format!("attempt {attempt}: sending again as {RETRY_ANNOTATION} asked");
        (Reason::Sending, text)
    } else {
        (Reason::Sending, format!("attempt {attempt} under way"))
    };
    let mut claim = attempt::claim(&status, message.metadata.generation, reason, text);
    claim.message_id = verified
        .transport
        .sets_message_id()
        .then(|| email.message_id.clone());
    claim
}

/// The status after an attempt; `move_on` when it failed in a way that
/// lets the message go on through another provider of its route.
fn status_after(
    claimed: &EmailMessage,
    attempt: u32,
    result: Result<Accepted, SendError>,
    limits: &Limits,
    policy: DeliveryPolicy,
    move_on: Option<&Plan>,
) -> EmailMessageStatus {
    let status = claimed.status.clone().unwrap_or_default();
    let generation = claimed.metadata.generation;
    let mut status = match result {
        Ok(accepted) => sent(status, attempt, &accepted, generation),
        Err(error) if error.provider_code.as_deref() == Some(KEY_ALREADY_USED) => {
            already_taken(status, &error, generation)
        }
        Err(error) => match move_on {
            Some(plan) if attempt < limits.max_attempts => {
                let mut status = moved_on(status, attempt, &error, plan, generation);
                route::note_outcome(&mut status, Some(error.reason()), true);
                return status;
            }
            _ => failed(status, attempt, &error, limits, policy, generation),
        },
    };
    let reason = status
        .last_error
        .as_ref()
        .and_then(|e| Reason::parse(&e.reason));
    route::note_outcome(&mut status, reason, false);
    status
}

/// The attempt through one provider of the route certainly did not deliver:
/// the message goes on through the next at once.
fn moved_on(
    mut status: EmailMessageStatus,
    attempt: u32,
    error: &SendError,
    plan: &Plan,
    generation: Option<i64>,
) -> EmailMessageStatus {
    status.last_error = Some(attempt::last_error(error));
    status.phase = Some(Phase::Pending);
    status.next_attempt_time = None;
    let from = plan
        .chosen_ref()
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    let text = format!(
        "attempt {attempt} through {from:?} certainly did not deliver ({}: {}); going on through the next provider of EmailRoute {:?}",
        error.reason(),
        error.message,
        plan.route
    );
    let why = Reason::FailedOver;
    condition::set(&mut status.conditions, SENT, false, why, text, generation);
    status
}

/// Counts a message moved on from `from`, and says so once per message (a
/// Warning Event the first time it leaves its first provider).
async fn failed_over(
    ctx: &Context,
    claimed: &EmailMessage,
    from: &ProviderId,
    outcome: &EmailMessageStatus,
) {
    ctx.telemetry.metrics.count_failover(from);
    let first = outcome.provider_attempts.len() == 1;
    if first {
        let note = condition::find(&outcome.conditions, SENT)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        report::publish(ctx, claimed, EventType::Warning, "FailedOver", note).await;
    }
}

/// Resend's answer to an Idempotency-Key it holds from another request:
/// the same message (same identity) was accepted before, by an object
/// whose record this controller no longer has.
const KEY_ALREADY_USED: &str = "invalid_idempotent_request";

/// The service already took a send with this message's identity: it is not
/// sent again, and says so (Sent, reason AlreadySent).
fn already_taken(
    mut status: EmailMessageStatus,
    error: &SendError,
    generation: Option<i64>,
) -> EmailMessageStatus {
    status.phase = Some(Phase::Sent);
    status.sent_time = Some(now());
    status.last_error = None;
    let text = format!(
        "not sent again: the service already accepted a send with this message's identity (its idempotency key): {}. Set a new spec.idempotencyKey to send it again",
        error.message
    );
    let why = Reason::AlreadySent;
    condition::set(&mut status.conditions, SENT, true, why, text, generation);
    status
}

fn sent(
    mut status: EmailMessageStatus,
    attempt: u32,
    accepted: &Accepted,
    generation: Option<i64>,
) -> EmailMessageStatus {
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
    let redirected = status
        .redirected_to
        .as_ref()
        .map(|to| format!(" (redirected to {to} by the provider's recipient guard; the spec's recipients got nothing)"))
        .unwrap_or_default();
    let text = format!(
        "accepted by the server on attempt {attempt}: {} {}{redirected}",
        accepted.code, accepted.message
    );
    let why = Reason::Accepted;
    condition::set(&mut status.conditions, SENT, true, why, text, generation);
    status
}

fn failed(
    mut status: EmailMessageStatus,
    attempt: u32,
    error: &SendError,
    limits: &Limits,
    policy: DeliveryPolicy,
    generation: Option<i64>,
) -> EmailMessageStatus {
    status.last_error = Some(attempt::last_error(error));
    if let Some(code) = error.code {
        status.server_reply = Some(ServerReply {
            code,
            message: error.message.clone(),
        });
    }
    let message = &error.message;
    let now = jiff::Timestamp::now();
    let (phase, why, text) = if error.maybe_delivered && policy == DeliveryPolicy::AtMostOnce {
        let text = format!(
            "attempt {attempt} ended without a clear answer ({message}); the server may have the message. \
             Under AtMostOnce it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway"
        );
        (Phase::Unknown, Reason::OutcomeUnknown, text)
    } else if !error.retryable() {
        (Phase::Failed, error.reason(), message.clone())
    } else {
        match attempt::retry(attempt, error.retry_after, limits, now) {
            Retry::Exhausted => {
                let text = format!("gave up after {attempt} attempts: {message}");
                (Phase::Failed, error.reason(), text)
            }
            Retry::PastDeadline => {
                let text = format!(
                    "attempt {attempt} failed and the next would come after the deadline: {message}"
                );
                (Phase::Failed, Reason::DeadlineExceeded, text)
            }
            Retry::At { due, .. } => {
                status.next_attempt_time = Some(Time(due));
                let wait = due.duration_since(now).as_secs_f64().ceil();
                let text = format!("attempt {attempt} failed, retrying in {wait}s: {message}");
                (Phase::Pending, error.reason(), text)
            }
        }
    };
    status.phase = Some(phase);
    condition::set(&mut status.conditions, SENT, false, why, text, generation);
    status
}
