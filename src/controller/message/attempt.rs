//! One attempt, as single and bulk sends share it: the claim (written
//! before any I/O: to the namespace's claim journal for a single message,
//! as status Sending guarded by resourceVersion for a bulk batch; skipped
//! for a service that drops a repeated send by itself), the
//! withdrawal of a provider whose own failure stopped the send, the retry
//! rule, and the record of the outcome, which is kept in memory and written
//! on the next reconcile when the apiserver cannot take it now, and the
//! send slot held from before the claim until the record (see `slots`).

use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, warn};

use super::backoff;
use super::clock::{not_before, now};
use super::failover;
use super::limits::Limits;
use super::route::Plan;
use super::verdict::replace_status;
use crate::api::ProviderId;
use crate::api::condition::{self, Reason, SENT};
use crate::api::message::LastError;
use crate::api::{EmailMessage, EmailMessageStatus, EmailProvider, Phase};
use crate::controller::context::{Context, Verified};
use crate::controller::degraded;
use crate::controller::error::Error;
use crate::controller::provider;
use crate::controller::slots::{Busy, SendSlot};
use crate::journal::{Committed, Full};
use crate::transport::SendError;

/// How many times a result is written before it is kept for a later reconcile.
const RECORD_TRIES: u32 = 6;

/// How soon a message whose provider or namespace holds its share of send
/// slots (or whose files find no attachment memory free) looks again: 1-3 s,
/// spread so a large backlog (a thousand messages for one provider) comes
/// back a few hundred a second, not all at once.
pub(super) fn slots_busy_retry() -> Duration {
    Duration::from_millis(1000 + fastrand::u64(..2000))
}

/// How soon a message waiting in its provider's line looks again if its turn
/// never comes (the turn is normally given the moment a slot is free).
const IN_LINE_RETRY: Duration = Duration::from_secs(30);

/// A send slot for `message` through `provider` (no more than the
/// connections its transport allows now, for an SMTP pool), held from before the claim until the
/// outcome is recorded, so at most `--max-concurrent-sends`
/// messages are ever claimed but unrecorded (the most a crash can leave in
/// doubt). `Err` with when to look again when the provider or the namespace
/// holds its share already: the message waits without a status write, in
/// the provider's line when there is room in it.
pub async fn slot(
    ctx: &Context,
    provider: &EmailProvider,
    verified: &Verified,
    message: &EmailMessage,
) -> Result<SendSlot, Action> {
    let key = ProviderId::from_provider(provider);
    let namespace = message.namespace().unwrap_or_default();
    // An SMTP server takes one message per connection at a time: slots
    // beyond the connections its pool allows now would only claim messages
    // to wait for one.
    let own_limit = verified.transport.connection_limit();
    let slots = &ctx.attempts.sends;
    let taken = slots.take(&key, &namespace, own_limit).await;
    if matches!(taken, Err(Busy::Provider)) {
        // A pool that is full while messages wait may open more.
        verified.transport.connection_wanted();
    }
    match taken {
        Ok(slot) => {
            slots.waiters.leave(&key, &ObjectRef::from_obj(message));
            Ok(slot)
        }
        Err(Busy::Provider) if slots.waiters.wait(&key, ObjectRef::from_obj(message)) => {
            Err(Action::requeue(IN_LINE_RETRY))
        }
        Err(_) => Err(Action::requeue(slots_busy_retry())),
    }
}

/// The claim of the next attempt on top of `status`: Sending, with the
/// attempt counted and the condition saying what is under way.
pub fn claim(
    status: &EmailMessageStatus,
    generation: Option<i64>,
    reason: Reason,
    text: String,
) -> EmailMessageStatus {
    let mut claim = status.clone();
    claim.phase = Some(Phase::Sending);
    claim.attempts = status.attempts + 1;
    claim.last_attempt_time = Some(now());
    claim.next_attempt_time = None;
    claim.observed_generation = generation;
    condition::set(&mut claim.conditions, SENT, false, reason, text, generation);
    claim
}

/// Whether an attempt's claim is written before the send, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimWrite {
    /// Written on the message (status Sending), guarded by resourceVersion:
    /// a stale cache, a second replica or a controller that died before
    /// recording cannot send the attempt again unnoticed.
    Written,
    /// Written to the namespace's claim journal, together with the other
    /// claims of the moment: a controller that died before recording leaves
    /// it listed there, and a second replica's write of the journal
    /// conflicts. The message itself is written once, with the outcome
    /// (guarded as a skipped claim's is). Falls back to `Written` when the
    /// journal is full.
    Journaled,
    /// Not written: the service drops a repeat of the same message by
    /// itself (Resend's Idempotency-Key), which is all the claim guards
    /// against, so the attempt costs one status write fewer.
    Skipped,
}

impl ClaimWrite {
    /// The claim a single message's transport needs: skipped when its
    /// service is idempotent, else journaled.
    pub fn for_transport(idempotent: bool) -> Self {
        if idempotent {
            ClaimWrite::Skipped
        } else {
            ClaimWrite::Journaled
        }
    }

    /// Whether `fresh`, the message as stored now, still leaves the outcome
    /// of `attempt` to this writer: its claim stands (written), or nobody
    /// has recorded anything since it was read (skipped).
    fn still_ours(self, fresh: Option<&EmailMessageStatus>, attempt: u32) -> bool {
        match self {
            ClaimWrite::Written => {
                fresh.is_some_and(|s| s.attempts == attempt && s.phase == Some(Phase::Sending))
            }
            ClaimWrite::Skipped | ClaimWrite::Journaled => {
                let (attempts, phase) = fresh.map_or((0, None), |s| (s.attempts, s.phase));
                attempts + 1 == attempt
                    && matches!(phase, None | Some(Phase::Pending) | Some(Phase::Sending))
            }
        }
    }
}

/// Claims the attempt `claim` describes on top of `base`: written on the
/// message guarded by the resourceVersion read; journaled, then taken as the
/// base of the outcome's write (which the same resourceVersion then
/// guards); or, skipped, only taken as that base. Returns the claimed
/// message and where the claim went (a full journal sends it to the
/// message). `None` when the message or the journal changed meanwhile: the
/// message is looked at again, and nothing is sent.
pub async fn take_claim(
    ctx: &Context,
    api: &Api<EmailMessage>,
    base: &EmailMessage,
    claim: EmailMessageStatus,
    write: ClaimWrite,
) -> Result<Option<(EmailMessage, ClaimWrite)>, Error> {
    let as_base = |claim: EmailMessageStatus| {
        let mut claimed = base.clone();
        claimed.status = Some(claim);
        claimed
    };
    match write {
        ClaimWrite::Written => Ok(write_claim(api, base, claim)
            .await?
            .map(|claimed| (claimed, ClaimWrite::Written))),
        ClaimWrite::Skipped => Ok(Some((as_base(claim), ClaimWrite::Skipped))),
        ClaimWrite::Journaled => match ctx.journal.claim(base, claim.attempts).await {
            Ok(Committed::Claimed) => Ok(Some((as_base(claim), ClaimWrite::Journaled))),
            Ok(Committed::Conflict) => {
                debug!("the claim journal changed since it was read; looking again");
                Ok(None)
            }
            Ok(Committed::Failed(why)) => Err(Error::Journal(why)),
            Err(Full) => Ok(write_claim(api, base, claim)
                .await?
                .map(|claimed| (claimed, ClaimWrite::Written))),
        },
    }
}

/// Writes a claim guarded by the resourceVersion read. `None` when the
/// message changed meanwhile: a newer version is reconciled instead, and
/// nothing is sent.
pub async fn write_claim(
    api: &Api<EmailMessage>,
    base: &EmailMessage,
    claim: EmailMessageStatus,
) -> Result<Option<EmailMessage>, Error> {
    match replace_status(api, base, claim).await {
        Ok(claimed) => Ok(Some(claimed)),
        Err(e) if e.is_conflict() => {
            debug!("the message changed since it was read; reconciling the newer version");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// After a send failed for the provider's own reason (its server, TLS or
/// credentials): the transport is withdrawn and the provider marked not
/// Ready, so no other message tries it until it is verified again.
pub async fn withdraw_on_provider_failure(
    ctx: &Context,
    key: &ProviderId,
    provider: &EmailProvider,
    verified: &Verified,
    error: &SendError,
) {
    if error.is_provider_failure() && ctx.transports.withdraw(key, &verified.fingerprint) {
        provider::mark_unverified(ctx, provider, &verified.fingerprint, error).await;
    }
}

/// Notes in `claim` the provider this attempt goes through (for a routed
/// message, counted among its route's).
pub fn note_provider(claim: &mut EmailMessageStatus, message: &EmailMessage, route: Option<&Plan>) {
    let reference = match route.and_then(Plan::chosen_ref) {
        Some(chosen) => chosen.clone(),
        None => message.spec.provider_ref.clone(),
    };
    super::route::note_claim(claim, &reference, route.is_some());
}

/// Feeds the provider's circuit breaker with an attempt's outcome (`None`:
/// it went through) and publishes a change.
pub async fn judge_provider(ctx: &Context, provider: &EmailProvider, error: Option<&SendError>) {
    let key = ProviderId::from_provider(provider);
    let change = match error {
        Some(e) if failover::counts_against_provider(e) => {
            let at_once = e.is_provider_failure();
            ctx.breakers.failed(&key, jiff::Timestamp::now(), at_once)
        }
        _ => ctx.breakers.succeeded(&key),
    };
    if let Some(change) = change {
        degraded::publish(ctx, provider, &change).await;
    }
}

/// What comes after the `tries`-th failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at `due` (`delay` from now, rounded up to a second).
    At {
        /// When.
        due: jiff::Timestamp,
        /// How long from now.
        delay: Duration,
    },
    /// The attempts allowed are used up.
    Exhausted,
    /// The next try would come after the deadline.
    PastDeadline,
}

/// The retry rule: exponential backoff (never sooner than the server's
/// Retry-After), within the attempts allowed and the deadline.
pub fn retry(
    tries: u32,
    retry_after: Option<Duration>,
    limits: &Limits,
    now: jiff::Timestamp,
) -> Retry {
    let delay = backoff::delay(tries, retry_after);
    let due = not_before(now, delay);
    if tries >= limits.max_attempts {
        Retry::Exhausted
    } else if limits.deadline.is_some_and(|d| due > d) {
        Retry::PastDeadline
    } else {
        Retry::At { due, delay }
    }
}

/// `lastError` from a send error.
pub fn last_error(error: &SendError) -> LastError {
    LastError {
        reason: error.reason().into(),
        message: error.message.clone(),
        retryable: error.retryable(),
        code: error.code,
        provider_code: error.provider_code.clone(),
        may_have_been_delivered: error.maybe_delivered,
    }
}

/// Records `outcome` of `attempt` and remembers the version written (the
/// stale-cache guard). `None` when another writer replaced the claim (or,
/// the claim skipped, recorded an outcome first): its outcome stands. When
/// the write fails the outcome is kept and written on the next reconcile;
/// it is never sent again.
pub async fn finish(
    ctx: &Context,
    api: &Api<EmailMessage>,
    claimed: &EmailMessage,
    outcome: &EmailMessageStatus,
    attempt: u32,
    claim: ClaimWrite,
) -> Result<Option<EmailMessage>, Error> {
    let uid = claimed.uid().unwrap_or_default();
    match record(api, claimed, outcome.clone(), attempt, claim).await {
        Ok(Some(recorded)) => {
            ctx.attempts
                .written
                .note(&uid, recorded.metadata.resource_version.as_deref());
            ctx.journal.close(claimed, attempt);
            Ok(Some(recorded))
        }
        Ok(None) => {
            ctx.journal.close(claimed, attempt);
            Ok(None)
        }
        Err(e) => {
            if e.is_not_found() {
                // The message is gone: no outcome will ever be on it.
                ctx.journal.close(claimed, attempt);
            }
            warn!(error = %e, "the outcome could not be recorded; it is kept and written on the next reconcile");
            ctx.attempts.unrecorded.keep(uid, outcome.clone());
            Err(e)
        }
    }
}

/// Writes an outcome kept from an earlier reconcile (sent, but not yet
/// recorded). Nothing is sent.
pub async fn write_kept(
    ctx: &Context,
    message: &EmailMessage,
    outcome: EmailMessageStatus,
) -> Result<Action, Error> {
    let api = super::verdict::api(ctx, message);
    let attempt = outcome.attempts;
    // The attempt was claimed in the status unless its claim was skipped.
    let claim = if ClaimWrite::Written.still_ours(message.status.as_ref(), attempt) {
        ClaimWrite::Written
    } else {
        ClaimWrite::Skipped
    };
    match record(&api, message, outcome.clone(), attempt, claim).await {
        Ok(_) => {
            ctx.journal.close(message, attempt);
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.attempts
                .unrecorded
                .keep(message.uid().unwrap_or_default(), outcome);
            Err(e)
        }
    }
}

/// Writes the outcome of `attempt`. A conflict means the object changed (a
/// label, say) since the claim: the write is repeated on the fresh object as
/// long as the attempt is still this writer's to record. Other failures
/// (the apiserver restarting) are retried with growing pauses.
async fn record(
    api: &Api<EmailMessage>,
    claimed: &EmailMessage,
    outcome: EmailMessageStatus,
    attempt: u32,
    claim: ClaimWrite,
) -> Result<Option<EmailMessage>, Error> {
    let mut base = claimed.clone();
    let mut pause = Duration::from_millis(250);
    let mut last_error = None;
    for _ in 0..RECORD_TRIES {
        match replace_status(api, &base, outcome.clone()).await {
            Ok(written) => return Ok(Some(written)),
            Err(e) if e.is_conflict() => {
                let fresh = api.get(&claimed.name_any()).await.map_err(Error::Kube)?;
                if !claim.still_ours(fresh.status.as_ref(), attempt) {
                    match claim {
                        ClaimWrite::Written => warn!(
                            "the claim of attempt {attempt} was replaced by another writer; its outcome is not recorded"
                        ),
                        ClaimWrite::Skipped | ClaimWrite::Journaled => warn!(
                            "another writer recorded attempt {attempt} first (no claim: the service drops repeats); this outcome is not recorded"
                        ),
                    }
                    return Ok(None);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_attempts: u32, deadline_in: Option<i64>, now: jiff::Timestamp) -> Limits {
        Limits {
            max_attempts,
            deadline: deadline_in.map(|s| {
                now.checked_add(jiff::SignedDuration::from_secs(s))
                    .expect("time")
            }),
        }
    }

    #[test]
    fn the_retry_rule_backs_off_within_attempts_and_deadline() {
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        // First failure: about BASE (5 s ±20%), rounded up to a second.
        match retry(1, None, &limits(5, None, now), now) {
            Retry::At { due, delay } => {
                assert!((4..=6).contains(&delay.as_secs()), "{delay:?}");
                assert!(due >= now.checked_add(delay).expect("time"));
            }
            other => panic!("{other:?}"),
        }
        // A server's Retry-After is honoured.
        match retry(1, Some(Duration::from_secs(60)), &limits(5, None, now), now) {
            Retry::At { delay, .. } => assert!(delay >= Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        assert_eq!(retry(5, None, &limits(5, None, now), now), Retry::Exhausted);
        assert_eq!(
            retry(1, None, &limits(5, Some(2), now), now),
            Retry::PastDeadline
        );
    }

    #[test]
    fn an_outcome_is_recorded_while_nobody_else_has_moved_the_attempt_on() {
        let status = |attempts, phase| EmailMessageStatus {
            attempts,
            phase,
            ..Default::default()
        };
        let written = ClaimWrite::Written;
        assert!(written.still_ours(Some(&status(2, Some(Phase::Sending))), 2));
        assert!(!written.still_ours(Some(&status(2, Some(Phase::Sent))), 2));
        assert!(!written.still_ours(Some(&status(3, Some(Phase::Sending))), 2));
        assert!(!written.still_ours(None, 1));
        // Skipped: the stored status is still the one the attempt was
        // based on, whatever else (a label) changed.
        let skipped = ClaimWrite::Skipped;
        assert!(skipped.still_ours(None, 1));
        assert!(skipped.still_ours(Some(&status(1, Some(Phase::Pending))), 2));
        assert!(!skipped.still_ours(Some(&status(1, Some(Phase::Sent))), 1));
        assert!(!skipped.still_ours(Some(&status(2, Some(Phase::Pending))), 2));
        assert!(!skipped.still_ours(Some(&status(1, Some(Phase::Failed))), 2));
        // Journaled: the message carries no claim, as when skipped.
        let journaled = ClaimWrite::Journaled;
        assert!(journaled.still_ours(Some(&status(1, Some(Phase::Pending))), 2));
        assert!(!journaled.still_ours(Some(&status(2, Some(Phase::Sent))), 2));
        assert_eq!(ClaimWrite::for_transport(true), ClaimWrite::Skipped);
        assert_eq!(ClaimWrite::for_transport(false), ClaimWrite::Journaled);
    }

    #[test]
    fn a_claim_counts_the_attempt_and_says_sending() {
        let before = EmailMessageStatus {
            attempts: 2,
            ..Default::default()
        };
        let claim = claim(&before, Some(3), Reason::Sending, "attempt 3".into());
        assert_eq!(claim.phase, Some(Phase::Sending));
        assert_eq!(claim.attempts, 3);
        assert_eq!(claim.observed_generation, Some(3));
        assert!(claim.next_attempt_time.is_none());
        let sent = condition::find(&claim.conditions, SENT).expect("condition");
        assert_eq!(
            (sent.status.as_str(), sent.reason.as_str()),
            ("False", "Sending")
        );
    }
}
