//! Bulk messages (`spec.recipients`): one email per recipient, each rendered
//! with its own data, sent batch by batch through the transport's batch form.
//! Every batch is claimed (status Sending, guarded by resourceVersion) before
//! it is sent and its results recorded after, so a crash in between repeats
//! at most that one batch; `status.bulk` counts what was sent and failed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tracing::warn;

use super::context::{Context, Verified};
use super::error::Error;
use super::message::{
    CLAIM_CONFLICT_RETRY, Limits, announce, build_email, not_before, now, record, record_metrics,
    slots_busy_retry, write_claim,
};
use super::{backoff, provider};
use crate::api::condition::{self, Reason, SENT};
use crate::api::message::{BulkStatus, DeliveryPolicy, LastError, RecipientFailure};
use crate::api::{EmailMessage, EmailProvider, EmailTemplate, Phase};
use crate::transport::{BatchOutcome, SendError};

/// How many failures `status.bulk.failures` lists; the counters hold the rest.
pub const MAX_FAILURES_LISTED: usize = 20;

/// Everything a bulk send needs from the message's reconcile.
pub(super) struct Job<'a> {
    pub api: &'a Api<EmailMessage>,
    pub message: &'a EmailMessage,
    pub ctx: &'a Context,
    pub provider: &'a EmailProvider,
    pub verified: &'a Verified,
    pub template: Option<&'a EmailTemplate>,
    pub limits: &'a Limits,
    pub uid: &'a str,
}

/// The message's data with a recipient's laid over it (top-level keys).
pub fn merged_data(message: Option<&Value>, recipient: Option<&Value>) -> Value {
    let mut data = message.cloned().unwrap_or_else(|| json!({}));
    if let (Some(base), Some(Value::Object(own))) = (data.as_object_mut(), recipient) {
        for (key, value) in own {
            base.insert(key.clone(), value.clone());
        }
    }
    data
}

fn fail(progress: &mut BulkStatus, to: &str, why: Reason, text: &str) {
    progress.failed += 1;
    if progress.failures.len() < MAX_FAILURES_LISTED {
        progress.failures.push(RecipientFailure {
            to: to.to_string(),
            reason: why.into(),
            message: text.to_string(),
        });
    }
}

/// Sends the next batch of a bulk message and records how it went.
pub(super) async fn send(job: Job<'_>) -> Result<Action, Error> {
    let Job {
        api,
        message,
        ctx,
        provider,
        verified,
        template,
        limits,
        uid,
    } = job;
    let recipients = &message.spec.recipients;
    let total = recipients.len();
    let status = message.status.clone().unwrap_or_default();
    let mut progress = status.bulk.clone().unwrap_or_default();
    progress.total = total as u32;
    let start = (progress.next as usize).min(total);
    let mut end = (start + verified.transport.batch_size().max(1)).min(total);
    let budget = verified.transport.batch_bytes();
    let mut batch_bytes = 0usize;

    // A send slot from before the claim until the progress is recorded, as
    // for a single message; taken first, so a message waiting for one does
    // not render its batch each time it looks.
    let key = (
        provider.namespace().unwrap_or_default(),
        provider.name_any(),
    );
    let Some(_slot) = ctx
        .sends
        .take(&key, &message.namespace().unwrap_or_default())
        .await
    else {
        return Ok(Action::requeue(slots_busy_retry()));
    };

    // This batch's emails; one that cannot be built fails on its own.
    let mut base = message.spec.clone();
    base.recipients = Vec::new();
    let default_from = provider.spec.default_from.as_deref();
    let (mut emails, mut indices, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
    for (i, recipient) in recipients.iter().enumerate().take(end).skip(start) {
        let mut spec = base.clone();
        spec.to = vec![recipient.to.clone()];
        spec.data = Some(merged_data(
            message.spec.data.as_ref(),
            recipient.data.as_ref(),
        ));
        let key = format!("{uid}.{i}");
        match build_email(&spec, template, default_from, &key) {
            Ok(email) => {
                // The service's batch byte limit: this email waits for the
                // next batch (every batch takes at least one).
                batch_bytes += crate::transport::api::limits::email_bytes(&email);
                if budget.is_some_and(|b| batch_bytes > b) && i > start {
                    end = i;
                    break;
                }
                emails.push(email);
                indices.push(i);
            }
            Err(text) => invalid.push((
                i,
                text.replace("spec.to[0]", &format!("spec.recipients[{i}].to")),
            )),
        }
    }

    // Claim the batch before any I/O.
    let generation = message.metadata.generation;
    let attempt = status.attempts + 1;
    let mut claim = status.clone();
    claim.phase = Some(Phase::Sending);
    claim.attempts = attempt;
    claim.last_attempt_time = Some(now());
    claim.next_attempt_time = None;
    claim.observed_generation = generation;
    claim.bulk = Some(progress.clone());
    let text = format!("recipients {}-{end} of {total} under way", start + 1);
    condition::set(
        &mut claim.conditions,
        SENT,
        false,
        Reason::Sending,
        text,
        generation,
    );
    let Some(claimed) = write_claim(api, message, claim).await? else {
        return Ok(Action::requeue(CLAIM_CONFLICT_RETRY));
    };

    let started = std::time::Instant::now();
    let outcome = if emails.is_empty() {
        BatchOutcome::default()
    } else {
        verified.transport.send_batch(&emails).await
    };
    if let Some(e) = &outcome.stopped
        && e.is_provider_failure()
        && ctx.transports.withdraw(&key, &verified.fingerprint)
    {
        provider::mark_unverified(ctx, provider, &verified.fingerprint, e).await;
    }

    // What was handled: every result, and the emails that could not be built
    // before the point the batch stopped at.
    let handled = outcome.results.len();
    let mut next = match outcome.stopped {
        Some(_) => indices.get(handled).copied().unwrap_or(end),
        None => end,
    };
    for (result, &i) in outcome.results.iter().zip(&indices) {
        match result {
            Ok(_) => progress.sent += 1,
            Err(e) => fail(&mut progress, &recipients[i].to, e.reason(), &e.message),
        }
    }
    let mut new = claimed.status.clone().unwrap_or_default();
    let mut action = Action::requeue(Duration::from_millis(10));
    if let Some(error) = &outcome.stopped {
        new.last_error = Some(last_error(error));
        if error.maybe_delivered && message.spec.delivery_policy == DeliveryPolicy::AtMostOnce {
            // The batch may have gone out: under AtMostOnce it is not repeated.
            let text = format!("may or may not have been sent: {}", error.message);
            for &i in &indices[handled..] {
                fail(
                    &mut progress,
                    &recipients[i].to,
                    Reason::OutcomeUnknown,
                    &text,
                );
            }
            next = end;
            progress.retries = 0;
        } else {
            progress.retries += 1;
            let delay = backoff::delay(progress.retries, error.retry_after);
            let due = not_before(jiff::Timestamp::now(), delay);
            let give_up =
                progress.retries >= limits.max_attempts || limits.deadline.is_some_and(|d| due > d);
            if give_up {
                let text = format!(
                    "gave up after {} tries: {}",
                    progress.retries, error.message
                );
                for recipient in &recipients[next..] {
                    fail(&mut progress, &recipient.to, error.reason(), &text);
                }
                next = total;
            } else {
                new.phase = Some(Phase::Pending);
                new.next_attempt_time = Some(Time(due));
                let text = format!(
                    "recipients {}-{end}: the batch stopped, retrying in {}s: {}",
                    next + 1,
                    delay.as_secs(),
                    error.message
                );
                condition::set(
                    &mut new.conditions,
                    SENT,
                    false,
                    error.reason(),
                    text,
                    generation,
                );
                action = Action::requeue(delay);
            }
        }
    } else {
        progress.retries = 0;
    }
    for (i, text) in invalid.iter().filter(|(i, _)| *i < next) {
        fail(
            &mut progress,
            &recipients[*i].to,
            Reason::InvalidRequest,
            text,
        );
    }
    progress.next = next as u32;
    let finished = next >= total;
    if finished {
        conclude(&mut new, &progress, generation);
        action = Action::await_change();
    } else if outcome.stopped.is_none() {
        new.phase = Some(Phase::Pending);
        let text = format!("{next} of {total} recipients handled; sending the next batch");
        condition::set(
            &mut new.conditions,
            SENT,
            false,
            Reason::Sending,
            text,
            generation,
        );
    }
    new.bulk = Some(progress);

    let elapsed = started.elapsed();
    match record(api, &claimed, new.clone(), attempt).await {
        Ok(Some(recorded)) => {
            ctx.written
                .note(uid, recorded.metadata.resource_version.as_deref());
            if finished {
                record_metrics(ctx, message, verified.transport.name(), &new, elapsed);
                announce(ctx, &recorded, &new, elapsed).await;
            }
            Ok(action)
        }
        Ok(None) => Ok(Action::await_change()),
        Err(e) => {
            warn!(error = %e, "the batch's outcome could not be recorded; it is kept and written on the next reconcile");
            ctx.unrecorded.keep(uid.to_string(), new);
            Err(e)
        }
    }
}

fn last_error(error: &SendError) -> LastError {
    LastError {
        reason: error.reason().to_string(),
        message: error.message.clone(),
        retryable: error.retryable(),
        code: error.code,
        provider_code: error.provider_code.clone(),
    }
}

/// The end state once every recipient was handled: Sent when all were
/// accepted, Sent with reason PartiallyAccepted when some were, Failed when
/// none were.
fn conclude(
    status: &mut crate::api::EmailMessageStatus,
    progress: &BulkStatus,
    generation: Option<i64>,
) {
    let (sent, failed, total) = (progress.sent, progress.failed, progress.total);
    status.next_attempt_time = None;
    let (phase, ready, why, text) = if failed == 0 {
        let text = format!("all {total} recipients accepted by the server");
        (Phase::Sent, true, Reason::Accepted, text)
    } else if sent > 0 {
        let text = format!(
            "{sent} of {total} recipients accepted, {failed} failed (see status.bulk.failures)"
        );
        (Phase::Sent, true, Reason::PartiallyAccepted, text)
    } else {
        let why = progress
            .failures
            .first()
            .and_then(|f| Reason::parse(&f.reason))
            .unwrap_or(Reason::Rejected);
        let text =
            format!("none of the {total} recipients was accepted (see status.bulk.failures)");
        (Phase::Failed, false, why, text)
    };
    if phase == Phase::Sent {
        status.sent_time = Some(now());
        status.last_error = None;
    }
    status.phase = Some(phase);
    condition::set(&mut status.conditions, SENT, ready, why, text, generation);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_data_is_laid_over_the_message_data() {
        let message = json!({"plan": "free", "team": "a"});
        let own = json!({"plan": "pro", "name": "Bo"});
        assert_eq!(
            merged_data(Some(&message), Some(&own)),
            json!({"plan": "pro", "team": "a", "name": "Bo"})
        );
        assert_eq!(merged_data(None, None), json!({}));
    }

    #[test]
    fn only_the_first_failures_are_listed() {
        let mut progress = BulkStatus::default();
        for i in 0..30 {
            fail(
                &mut progress,
                &format!("r{i}@example.org"),
                Reason::Rejected,
                "no",
            );
        }
        assert_eq!(progress.failed, 30);
        assert_eq!(progress.failures.len(), MAX_FAILURES_LISTED);
    }
}
