//! Bulk messages (`spec.recipients`): one email per recipient, each rendered
//! with its own data, sent batch by batch through the transport's batch form.
//! Every batch is claimed (status Sending, guarded by resourceVersion) before
//! it is sent and its results recorded after, so a crash in between repeats
//! at most that one batch; `status.bulk` counts what was sent and failed.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::attempt::{self, ClaimWrite, Retry};
use super::clock::now;
use super::email::{build, recipient_spec};
use super::inputs::key_of;
use super::limits::Limits;
use super::route::Plan;
use super::{deliverability, report, verdict};
use crate::api::condition::{self, Reason, SENT, WARNING};
use crate::api::message::{BulkStatus, DeliveryPolicy, RecipientFailure};
use crate::api::origin::Origin;
use crate::api::tenancy::TenantPolicy;
use crate::api::{EmailMessage, EmailMessageStatus, EmailProvider, EmailTemplate, Phase};
use crate::compose::Email;
use crate::controller::context::{Context, Verified};
use crate::controller::error::CONFLICT_RETRY;
use crate::controller::error::Error;
use crate::controller::suppressions::{Scope, Suppressed};
use crate::controller::tenants::{self, Guarded};
use crate::delivery::unsubscribe::token::KeyRing;
use crate::transport::{BatchOutcome, SendError};

/// How many failures `status.bulk.failures` lists; the counters hold the rest.
pub const MAX_FAILURES_LISTED: usize = 20;

/// Everything a bulk send needs from the message's reconcile.
pub struct Job<'a> {
    /// The context.
    pub ctx: &'a Context,
    /// The message, as the cache has it.
    pub message: &'a EmailMessage,
    /// Its provider.
    pub provider: &'a EmailProvider,
    /// The provider's verified transport.
    pub verified: &'a Verified,
    /// Its template, if it names one.
    pub template: Option<&'a EmailTemplate>,
    /// The retry limits (of one batch).
    pub limits: &'a Limits,
    /// The suppression lists of its provider (every provider's of a route).
    pub suppressions: &'a Scope,
    /// Its EmailRoute and the provider chosen, if it names one.
    pub route: Option<&'a Plan>,
    /// The provider's policy for the message's namespace.
    pub tenant: Option<&'a TenantPolicy>,
    /// The unsubscribe keys, when a hosted unsubscribe is in effect.
    pub unsubscribe_keys: Option<&'a KeyRing>,
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

/// The next batch: the emails that could be built (and their recipients'
/// indices), the ones that could not (with why, naming the field), and
/// where the batch ends.
struct Batch {
    start: usize,
    end: usize,
    emails: Vec<Email>,
    indices: Vec<usize>,
    /// Recipients not sent to: why (InvalidRequest, Suppressed) in words.
    invalid: Vec<(usize, Reason, String)>,
}

/// Sends the next batch of a bulk message and records how it went.
pub async fn send(job: Job<'_>) -> Result<Action, Error> {
    let Job {
        ctx,
        message,
        provider,
        verified,
        limits,
        route,
        ..
    } = job;
    let api = verdict::api(ctx, message);
    // A send slot from before the claim until the progress is recorded, as
    // for a single message; taken first, so a message waiting for one does
    // not render its batch each time it looks.
    let key = key_of(provider);
    let namespace = message.namespace().unwrap_or_default();
    let _slot = match attempt::slot(ctx, provider, verified, message).await {
        Ok(slot) => slot,
        Err(later) => return Ok(later),
    };
    let status = message.status.clone().unwrap_or_default();
    let mut progress = status.bulk.clone().unwrap_or_default();
    progress.total = message.spec.recipients.len() as u32;
    let batch = next_batch(&job, progress.next as usize);

    // Claim the batch before any I/O.
    let text = format!(
        "recipients {}-{} of {} under way",
        batch.start + 1,
        batch.end,
        progress.total
    );
    // The batch under way was cut off before its result was recorded: one
    // more stop in a row (the gate ends the message once they reach
    // maxAttempts).
    if status.phase == Some(Phase::Sending) {
        progress.retries += 1;
    }
    let generation = message.metadata.generation;
    let mut claim = attempt::claim(&status, generation, Reason::Sending, text);
    attempt::note_provider(&mut claim, message, route);
    claim.bulk = Some(progress.clone());
    let warn_now = warn_without_unsubscribe(message, provider, &mut claim);
    let attempt = claim.attempts;
    let Some(claimed) = attempt::write_claim(&api, message, claim).await? else {
        return Ok(Action::requeue(CONFLICT_RETRY));
    };

    if warn_now {
        let note = UNSUBSCRIBE_MISSING.to_string();
        report::publish(
            ctx,
            &claimed,
            EventType::Warning,
            "UnsubscribeMissing",
            note,
        )
        .await;
    }
    let started = std::time::Instant::now();
    let outcome = if batch.emails.is_empty() {
        BatchOutcome::default()
    } else {
        verified.transport.send_batch(&batch.emails).await
    };
    if let Some(e) = &outcome.stopped {
        attempt::withdraw_on_provider_failure(ctx, &key, provider, verified, e).await;
    }
    attempt::judge_provider(ctx, provider, outcome.stopped.as_ref()).await;
    let accepted = outcome.results.iter().filter(|r| r.is_ok()).count();
    if accepted > 0 {
        let now = jiff::Timestamp::now();
        ctx.usage.sent(&key, &namespace, accepted as u64, now);
    }
    let mut new = claimed.status.clone().unwrap_or_default();
    let (action, finished) = progress_after(&mut new, progress, message, &batch, &outcome, limits);
    if finished {
        super::test_mode::mark(&mut new, provider, message.metadata.generation);
    }
    // A batch that stopped is retried after its backoff through whichever
    // provider the route gives then; it does not move on at once.
    let reason = outcome.stopped.as_ref().map(|e| e.reason());
    super::route::note_outcome(&mut new, reason, false);
    let elapsed = started.elapsed();
    let Some(recorded) =
        attempt::finish(ctx, &api, &claimed, &new, attempt, ClaimWrite::Written).await?
    else {
        return Ok(Action::await_change());
    };
    if finished {
        report::attempt_metrics(ctx, message, verified.transport.name(), &new, elapsed);
        report::announce(ctx, &recorded, &new, elapsed).await;
    }
    Ok(action)
}

/// What the Warning condition says of a bulk message without unsubscribe.
const UNSUBSCRIBE_MISSING: &str = "bulk message without one-click unsubscribe: Gmail and Yahoo require it of bulk senders (set spec.unsubscribe, or the provider's spec.unsubscribe)";

/// Sets the `Warning` condition on a bulk message sent without one-click
/// unsubscribe; `true` the first time, when an Event says so too.
fn warn_without_unsubscribe(
    message: &EmailMessage,
    provider: &EmailProvider,
    claim: &mut EmailMessageStatus,
) -> bool {
    if !deliverability::lacks_unsubscribe(&message.spec, &provider.spec) {
        return false;
    }
    let first = condition::find(&claim.conditions, WARNING).is_none();
    let generation = message.metadata.generation;
    condition::set(
        &mut claim.conditions,
        WARNING,
        true,
        Reason::UnsubscribeMissing,
        UNSUBSCRIBE_MISSING,
        generation,
    );
    first
}

/// Builds the batch that starts at recipient `start`: up to the transport's
/// batch size, and within its batch byte limit (every batch takes at least
/// one email). One that cannot be built fails on its own. Each email is
/// built as a single message to its recipient on the bulk message's list.
fn next_batch(job: &Job<'_>, start: usize) -> Batch {
    let (message, provider, verified) = (job.message, job.provider, job.verified);
    let (template, tenant) = (job.template, job.tenant);
    let namespace = message.namespace().unwrap_or_default();
    let hosting = deliverability::Hosting {
        namespace: &namespace,
        keys: job.unsubscribe_keys,
    };
    let recipients = &message.spec.recipients;
    let key = super::gate::send_key(message);
    let start = start.min(recipients.len());
    let mut batch = Batch {
        start,
        end: (start + verified.transport.batch_size().max(1)).min(recipients.len()),
        emails: Vec::new(),
        indices: Vec::new(),
        invalid: Vec::new(),
    };
    let budget = verified.transport.batch_bytes();
    let mut bytes = 0usize;
    let unsubscribe = provider.spec.unsubscribe.as_ref();
    for i in (start..batch.end).take(recipients.len()) {
        let Some(spec) = recipient_spec(&message.spec, i, unsubscribe) else {
            break;
        };
        let built = match (
            build(
                &spec,
                template,
                &provider.spec,
                &format!("{key}.{i}"),
                hosting,
            ),
            tenant,
        ) {
            (Ok(mut email), Some(policy)) => {
                let field = format!("spec.recipients[{i}].to");
                if let Guarded::Refused(text) = tenants::guard(&mut email, policy, &field) {
                    batch.invalid.push((i, Reason::RecipientNotAllowed, text));
                    continue;
                }
                Ok(email)
            }
            (built, _) => built,
        };
        match built {
            Ok(email) if let Some(found) = suppressed(job.suppressions, &email) => {
                let field = format!("spec.recipients[{i}].to");
                batch
                    .invalid
                    .push((i, Reason::Suppressed, found.explain(&field)));
            }
            Ok(mut email) => {
                email.origin = Some(Origin::of(message, u32::try_from(i).ok()));
                bytes += crate::transport::api::limits::email_bytes(&email);
                if budget.is_some_and(|b| bytes > b) && i > start {
                    batch.end = i;
                    break;
                }
                batch.emails.push(email);
                batch.indices.push(i);
            }
            Err(text) => {
                let text = text.replace("spec.to[0]", &format!("spec.recipients[{i}].to"));
                batch.invalid.push((i, Reason::InvalidRequest, text));
            }
        }
    }
    batch
}

/// The suppression of the one recipient of a bulk email, if it has one.
fn suppressed(suppressions: &Scope, email: &Email) -> Option<Suppressed> {
    let to = email.to.first()?;
    suppressions.find(to.email.as_ref())
}

/// Lays the batch's results into `new` (the claimed status): the progress,
/// a retry when the batch stopped, and the end state once every recipient
/// was handled. Returns when to look again and whether the message is done.
fn progress_after(
    new: &mut EmailMessageStatus,
    mut progress: BulkStatus,
    message: &EmailMessage,
    batch: &Batch,
    outcome: &BatchOutcome,
    limits: &Limits,
) -> (Action, bool) {
    let recipients = &message.spec.recipients;
    let total = recipients.len();
    let generation = message.metadata.generation;
    // What was handled: every result, and the emails that could not be built
    // before the point the batch stopped at.
    let handled = outcome.results.len();
    let mut next = match outcome.stopped {
        Some(_) => batch.indices.get(handled).copied().unwrap_or(batch.end),
        None => batch.end,
    };
    for (result, &i) in outcome.results.iter().zip(&batch.indices) {
        match result {
            Ok(_) => progress.sent += 1,
            Err(e) => fail(&mut progress, &recipients[i].to, e.reason(), &e.message),
        }
    }
    let mut action = Action::requeue(Duration::from_millis(10));
    match &outcome.stopped {
        Some(error) => {
            let stop = Stopped {
                error,
                message,
                batch,
                handled,
                limits,
            };
            if let Some(delay) = stop.apply(new, &mut progress, &mut next) {
                action = Action::requeue(delay);
            }
        }
        None => progress.retries = 0,
    }
    for (i, why, text) in batch.invalid.iter().filter(|(i, _, _)| *i < next) {
        let to = &recipients[*i].to;
        fail(&mut progress, to, *why, text);
    }
    progress.next = next as u32;
    let finished = next >= total;
    if finished {
        conclude(new, &progress, generation);
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
    (action, finished)
}

/// A batch the service stopped part way (or refused whole).
struct Stopped<'a> {
    error: &'a SendError,
    message: &'a EmailMessage,
    batch: &'a Batch,
    handled: usize,
    limits: &'a Limits,
}

impl Stopped<'_> {
    /// Under AtMostOnce a batch that may have gone out is not repeated: its
    /// unanswered recipients fail as OutcomeUnknown. Otherwise the rest is
    /// tried again after a backoff (returned), or given up on.
    fn apply(
        &self,
        new: &mut EmailMessageStatus,
        progress: &mut BulkStatus,
        next: &mut usize,
    ) -> Option<Duration> {
        let (error, recipients) = (self.error, &self.message.spec.recipients);
        new.last_error = Some(attempt::last_error(error));
        let policy = self.message.spec.delivery_policy;
        if error.maybe_delivered && policy == DeliveryPolicy::AtMostOnce {
            let text = format!("may or may not have been sent: {}", error.message);
            for &i in &self.batch.indices[self.handled..] {
                fail(progress, &recipients[i].to, Reason::OutcomeUnknown, &text);
            }
            *next = self.batch.end;
            progress.retries = 0;
            return None;
        }
        progress.retries += 1;
        let now = jiff::Timestamp::now();
        match attempt::retry(progress.retries, error.retry_after, self.limits, now) {
            Retry::At { due, delay } => {
                new.phase = Some(Phase::Pending);
                new.next_attempt_time = Some(Time(due));
                let text = format!(
                    "recipients {}-{}: the batch stopped, retrying in {}s: {}",
                    *next + 1,
                    self.batch.end,
                    delay.as_secs(),
                    error.message
                );
                let generation = self.message.metadata.generation;
                condition::set(
                    &mut new.conditions,
                    SENT,
                    false,
                    error.reason(),
                    text,
                    generation,
                );
                Some(delay)
            }
            Retry::Exhausted | Retry::PastDeadline => {
                let text = format!(
                    "gave up after {} tries: {}",
                    progress.retries, error.message
                );
                for recipient in &recipients[*next..] {
                    fail(progress, &recipient.to, error.reason(), &text);
                }
                *next = recipients.len();
                None
            }
        }
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
    use crate::transport::{Accepted, FailureKind};
    use serde_json::json;

    /// A bulk message to `n` recipients, sending the batch that starts at
    /// `from` (the first `from` handled: all sent).
    fn message(n: usize, policy: &str) -> EmailMessage {
        let recipients: Vec<_> = (0..n)
            .map(|i| json!({"to": format!("r{i}@example.org")}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "team", "generation": 1},
            "spec": {"providerRef": {"name": "p"}, "recipients": recipients,
                     "subject": "s", "text": "t", "deliveryPolicy": policy}
        }))
        .expect("a message")
    }

    fn batch(start: usize, end: usize) -> Batch {
        Batch {
            start,
            end,
            emails: Vec::new(),
            indices: (start..end).collect(),
            invalid: Vec::new(),
        }
    }

    fn progress(next: u32, total: u32) -> BulkStatus {
        BulkStatus {
            next,
            total,
            sent: next,
            ..Default::default()
        }
    }

    fn ok() -> Result<Accepted, SendError> {
        Ok(Accepted::new(Some("id".into()), 200, "OK"))
    }

    fn limits() -> Limits {
        Limits {
            max_attempts: 3,
            deadline: None,
        }
    }

    fn after(
        message: &EmailMessage,
        done: BulkStatus,
        batch: &Batch,
        outcome: &BatchOutcome,
    ) -> (EmailMessageStatus, BulkStatus, bool) {
        let mut new = EmailMessageStatus::default();
        let (_, finished) = progress_after(&mut new, done, message, batch, outcome, &limits());
        let bulk = new.bulk.clone().expect("progress");
        (new, bulk, finished)
    }

    #[test]
    fn a_whole_batch_moves_on_and_the_last_one_ends_the_message() {
        let message = message(4, "AtLeastOnce");
        let first = BatchOutcome {
            results: vec![ok(), ok()],
            stopped: None,
        };
        let (status, bulk, finished) = after(&message, progress(0, 4), &batch(0, 2), &first);
        assert!(!finished);
        assert_eq!((bulk.next, bulk.sent, bulk.failed), (2, 2, 0));
        assert_eq!(status.phase, Some(Phase::Pending));
        let refused = SendError::new(FailureKind::Rejected, "no such mailbox");
        let last = BatchOutcome {
            results: vec![ok(), Err(refused)],
            stopped: None,
        };
        let (status, bulk, finished) = after(&message, progress(2, 4), &batch(2, 4), &last);
        assert!(finished);
        assert_eq!((bulk.next, bulk.sent, bulk.failed), (4, 3, 1));
        assert_eq!(status.phase, Some(Phase::Sent));
        let sent = condition::find(&status.conditions, SENT).expect("condition");
        assert_eq!(sent.reason, Reason::PartiallyAccepted);
        assert_eq!(bulk.failures[0].to, "r3@example.org");
    }

    #[test]
    fn a_stopped_batch_retries_the_rest_and_never_repeats_what_was_answered() {
        let message = message(4, "AtLeastOnce");
        let outcome = BatchOutcome {
            results: vec![ok()],
            stopped: Some(SendError::new(FailureKind::Transient, "503")),
        };
        let (status, bulk, finished) = after(&message, progress(0, 4), &batch(0, 4), &outcome);
        assert!(!finished);
        assert_eq!((bulk.next, bulk.sent, bulk.retries), (1, 1, 1));
        assert_eq!(status.phase, Some(Phase::Pending));
        assert!(status.next_attempt_time.is_some());
        // Its tries used up, the rest fail and the message ends.
        let mut tired = progress(1, 4);
        tired.retries = 2;
        let (status, bulk, finished) = after(&message, tired, &batch(1, 4), &outcome);
        assert!(finished);
        assert_eq!((bulk.sent, bulk.failed), (2, 2), "{bulk:?}");
        assert_eq!(status.phase, Some(Phase::Sent));
    }

    #[test]
    fn under_at_most_once_a_batch_that_may_have_gone_out_is_not_repeated() {
        let message = message(3, "AtMostOnce");
        let mut timeout = SendError::new(FailureKind::Transient, "timed out");
        timeout.maybe_delivered = true;
        let outcome = BatchOutcome {
            results: vec![],
            stopped: Some(timeout),
        };
        let (status, bulk, finished) = after(&message, progress(0, 3), &batch(0, 3), &outcome);
        assert!(finished);
        assert_eq!((bulk.next, bulk.sent, bulk.failed), (3, 0, 3));
        assert_eq!(bulk.failures[0].reason, Reason::OutcomeUnknown);
        assert_eq!(status.phase, Some(Phase::Failed));
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
