//! Lays delivery events over a message's status: keeps the latest events
//! (deduplicated by id), moves the phase forward only (Sent, Delivered,
//! Bounced, Complained), and sets the `Delivered` condition. Pure: the
//! caller writes the result.

use crate::api::condition::{self, DELIVERED, Reason};
use crate::api::{BounceKind, DeliveryEvent, DeliveryEventType, EmailMessageStatus, Phase};

/// How many events status keeps.
pub const MAX_EVENTS: usize = 20;

/// The phase an event proves, if any.
fn proves(event: &DeliveryEvent) -> Option<Phase> {
    match (event.type_, event.bounce) {
        (
            DeliveryEventType::Delivered | DeliveryEventType::Opened | DeliveryEventType::Clicked,
            _,
        ) => Some(Phase::Delivered),
        (DeliveryEventType::Bounced, Some(BounceKind::Hard)) | (DeliveryEventType::Failed, _) => {
            Some(Phase::Bounced)
        }
        (DeliveryEventType::Complained, _) => Some(Phase::Complained),
        _ => None,
    }
}

fn order(a: &DeliveryEvent, b: &DeliveryEvent) -> std::cmp::Ordering {
    (a.time.0, &a.id).cmp(&(b.time.0, &b.id))
}

fn to_whom(event: &DeliveryEvent) -> String {
    event
        .recipient
        .as_deref()
        .map(|r| format!(" to {r}"))
        .unwrap_or_default()
}

fn because(event: &DeliveryEvent) -> String {
    event
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// Sets `Delivered` for the event that moved the phase.
fn set_condition(status: &mut EmailMessageStatus, event: &DeliveryEvent, generation: Option<i64>) {
    let when = event.time.0;
    let (value, why, text) = match (event.type_, proves(event)) {
        (DeliveryEventType::Failed, _) => (
            "False",
            Reason::Dropped,
            format!("the service dropped it{}{}", to_whom(event), because(event)),
        ),
        (_, Some(Phase::Bounced)) => (
            "False",
            Reason::Bounced,
            format!("hard bounce{}{}", to_whom(event), because(event)),
        ),
        (_, Some(Phase::Complained)) => (
            "True",
            Reason::Complained,
            format!(
                "delivered; marked as spam{} at {when}",
                to_whom(event).replace(" to ", " by ")
            ),
        ),
        (DeliveryEventType::Delivered, _) => (
            "True",
            Reason::Delivered,
            format!("delivered{} at {when}{}", to_whom(event), because(event)),
        ),
        (_, Some(_)) => (
            "True",
            Reason::Delivered,
            format!(
                "{:?}{} at {when}, so it was delivered",
                event.type_,
                to_whom(event).replace(" to ", " by ")
            ),
        ),
        (_, None) => (
            "Unknown",
            Reason::Deferred,
            format!(
                "{}{}{}; the service keeps trying",
                match event.type_ {
                    DeliveryEventType::Bounced => "soft bounce",
                    _ => "delivery delayed",
                },
                to_whom(event),
                because(event)
            ),
        ),
    };
    condition::set_status(
        &mut status.conditions,
        DELIVERED,
        value,
        why,
        text,
        generation,
    );
}

/// Whether an event says delivery is delayed or soft-bounced.
fn defers(event: &DeliveryEvent) -> bool {
    matches!(
        (event.type_, event.bounce),
        (DeliveryEventType::Deferred, _) | (DeliveryEventType::Bounced, Some(BounceKind::Soft))
    )
}

/// Keeps `event` among the latest ones (deduplicated by id, in time
/// order); whether it was new. An event older than every kept one when the
/// list is full is not kept (so a repeat cannot come back either).
fn keep(status: &mut EmailMessageStatus, event: &DeliveryEvent) -> (bool, bool) {
    if status.delivery_events.iter().any(|e| e.id == event.id) {
        return (false, false);
    }
    let full = status.delivery_events.len() >= MAX_EVENTS;
    let older_than_all = status
        .delivery_events
        .first()
        .is_some_and(|oldest| order(event, oldest).is_lt());
    if full && older_than_all {
        return (true, false);
    }
    let at = status
        .delivery_events
        .partition_point(|e| order(e, event).is_le());
    status.delivery_events.insert(at, event.clone());
    if status.delivery_events.len() > MAX_EVENTS {
        status.delivery_events.remove(0);
    }
    (true, true)
}

/// Applies `events` to `status`; returns whether anything changed.
pub fn apply(
    status: &mut EmailMessageStatus,
    events: &[DeliveryEvent],
    generation: Option<i64>,
) -> bool {
    let mut changed = false;
    for event in events {
        let (new, kept) = keep(status, event);
        changed |= kept;
        if !new {
            continue;
        }
        let Some(rank) = status.phase.and_then(Phase::delivery_rank) else {
            continue;
        };
        match proves(event) {
            Some(next) if next.delivery_rank().is_some_and(|r| r > rank) => {
                status.phase = Some(next);
                set_condition(status, event, generation);
                changed = true;
            }
            None if defers(event) && status.phase == Some(Phase::Sent) => {
                set_condition(status, event, generation);
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

/// The recipients of a bulk message whose outcomes status lists.
const MAX_UNDELIVERED: usize = 20;

/// A recipient's outcome as one character of `status.bulk.outcomes`.
fn outcome_char(phase: Phase) -> char {
    match phase {
        Phase::Delivered => 'D',
        Phase::Bounced => 'B',
        Phase::Complained => 'C',
        _ => '-',
    }
}

fn outcome_rank(c: char) -> u8 {
    match c {
        'D' => 1,
        'B' => 2,
        'C' => 3,
        _ => 0,
    }
}

/// The address inside `Name <address>`, lower-cased.
fn bare(address: &str) -> String {
    let address = address.trim();
    let inner = match (address.rfind('<'), address.rfind('>')) {
        (Some(open), Some(close)) if open < close => &address[open + 1..close],
        _ => address,
    };
    inner.to_ascii_lowercase()
}

/// Which recipient an event is about: the index the service echoed, else
/// the first recipient with the event's address.
fn recipient_index(
    recipients: &[String],
    event: &DeliveryEvent,
    echoed: Option<u32>,
) -> Option<usize> {
    if let Some(index) = echoed.and_then(|i| usize::try_from(i).ok()) {
        return (index < recipients.len()).then_some(index);
    }
    let address = bare(event.recipient.as_deref()?);
    recipients.iter().position(|r| bare(r) == address)
}

/// Lays the events of a bulk message's emails over `status.bulk`: each
/// recipient's outcome (forward only), the counts, and the first that
/// bounced or complained. The message's own phase does not move: it says
/// how the sending went. Events are kept among the latest as for any
/// message. Returns whether anything changed.
pub fn apply_bulk(
    status: &mut EmailMessageStatus,
    recipients: &[String],
    events: &[(DeliveryEvent, Option<u32>)],
) -> bool {
    let mut changed = false;
    let mut bulk = status.bulk.clone().unwrap_or_default();
    let mut outcomes: Vec<char> = bulk
        .outcomes
        .as_deref()
        .unwrap_or_default()
        .chars()
        .collect();
    outcomes.resize(recipients.len(), '-');
    for (event, echoed) in events {
        changed |= keep(status, event).1;
        let (Some(index), Some(phase)) =
            (recipient_index(recipients, event, *echoed), proves(event))
        else {
            continue;
        };
        let next = outcome_char(phase);
        if outcome_rank(next) <= outcome_rank(outcomes[index]) {
            continue;
        }
        outcomes[index] = next;
        changed = true;
        if next != 'D' && bulk.undelivered.len() < MAX_UNDELIVERED {
            let reason = match event.type_ {
                DeliveryEventType::Failed => Reason::Dropped,
                _ if next == 'C' => Reason::Complained,
                _ => Reason::Bounced,
            };
            bulk.undelivered
                .push(crate::api::message::RecipientFailure {
                    to: recipients[index].clone(),
                    reason: reason.as_str().to_string(),
                    message: event.detail.clone().unwrap_or_default(),
                });
        }
    }
    if !changed {
        return false;
    }
    let count = |c: char| outcomes.iter().filter(|o| **o == c).count() as u32;
    bulk.delivered = count('D');
    bulk.bounced = count('B');
    bulk.complained = count('C');
    bulk.outcomes = Some(outcomes.into_iter().collect());
    status.bulk = Some(bulk);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn event(id: &str, type_: DeliveryEventType, second: i64) -> DeliveryEvent {
        DeliveryEvent {
            id: id.into(),
            type_,
            time: Time(jiff::Timestamp::from_second(second).unwrap()),
            recipient: Some("a@example.org".into()),
            bounce: (type_ == DeliveryEventType::Bounced).then_some(BounceKind::Hard),
            detail: None,
        }
    }

    fn sent() -> EmailMessageStatus {
        EmailMessageStatus {
            phase: Some(Phase::Sent),
            ..Default::default()
        }
    }

    fn delivered_reason(status: &EmailMessageStatus) -> (String, String) {
        let c = condition::find(&status.conditions, DELIVERED).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn delivered_then_complained_moves_forward() {
        let mut status = sent();
        assert!(apply(
            &mut status,
            &[event("1", DeliveryEventType::Delivered, 10)],
            None
        ));
        assert_eq!(status.phase, Some(Phase::Delivered));
        assert_eq!(
            delivered_reason(&status),
            ("True".into(), "Delivered".into())
        );
        assert!(apply(
            &mut status,
            &[event("2", DeliveryEventType::Complained, 20)],
            None
        ));
        assert_eq!(status.phase, Some(Phase::Complained));
    }

    #[test]
    fn an_open_after_a_bounce_does_not_make_it_delivered() {
        let mut status = sent();
        apply(
            &mut status,
            &[event("b", DeliveryEventType::Bounced, 10)],
            None,
        );
        assert!(apply(
            &mut status,
            &[event("o", DeliveryEventType::Opened, 5)],
            None
        ));
        assert_eq!(status.phase, Some(Phase::Bounced));
        assert_eq!(
            delivered_reason(&status),
            ("False".into(), "Bounced".into())
        );
        let ids: Vec<_> = status
            .delivery_events
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["o", "b"], "kept in time order");
    }

    #[test]
    fn a_repeated_event_changes_nothing() {
        let mut status = sent();
        let e = event("1", DeliveryEventType::Delivered, 10);
        assert!(apply(&mut status, std::slice::from_ref(&e), None));
        let before = status.clone();
        assert!(!apply(&mut status, &[e.clone(), e], None));
        assert_eq!(status, before);
    }

    #[test]
    fn keeps_the_latest_twenty_and_never_readmits_an_evicted_one() {
        let mut status = sent();
        let events: Vec<_> = (0..25)
            .map(|i| event(&format!("e{i:02}"), DeliveryEventType::Opened, i))
            .collect();
        apply(&mut status, &events, None);
        assert_eq!(status.delivery_events.len(), MAX_EVENTS);
        assert_eq!(status.delivery_events[0].id, "e05");
        assert!(!apply(&mut status, &events[..5], None));
        assert_eq!(status.delivery_events[0].id, "e05");
    }

    #[test]
    fn deferred_says_unknown_until_an_outcome() {
        let mut status = sent();
        let mut soft = event("s", DeliveryEventType::Bounced, 1);
        soft.bounce = Some(BounceKind::Soft);
        apply(&mut status, &[soft], None);
        assert_eq!(status.phase, Some(Phase::Sent));
        assert_eq!(
            delivered_reason(&status),
            ("Unknown".into(), "Deferred".into())
        );
        apply(
            &mut status,
            &[event("d", DeliveryEventType::Delivered, 2)],
            None,
        );
        assert_eq!(
            delivered_reason(&status),
            ("True".into(), "Delivered".into())
        );
        let mut late = event("late", DeliveryEventType::Deferred, 3);
        late.bounce = None;
        apply(&mut status, &[late], None);
        assert_eq!(
            delivered_reason(&status),
            ("True".into(), "Delivered".into())
        );
    }

    #[test]
    fn a_dropped_message_is_bounced_with_reason_dropped() {
        let mut status = sent();
        apply(
            &mut status,
            &[event("f", DeliveryEventType::Failed, 1)],
            None,
        );
        assert_eq!(status.phase, Some(Phase::Bounced));
        assert_eq!(
            delivered_reason(&status),
            ("False".into(), "Dropped".into())
        );
    }

    #[test]
    fn events_for_an_unsent_message_are_kept_without_a_phase() {
        let mut status = EmailMessageStatus {
            phase: Some(Phase::Sending),
            ..Default::default()
        };
        assert!(apply(
            &mut status,
            &[event("1", DeliveryEventType::Delivered, 1)],
            None
        ));
        assert_eq!(status.phase, Some(Phase::Sending));
        assert!(status.conditions.is_empty());
    }
}
