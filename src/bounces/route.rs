//! Whose a report's outcomes are: each outcome becomes a delivery event for
//! one recipient of the message the report is tied to. A token vouches for
//! the message, so a single recipient takes the report's outcome whatever
//! address it names; a quoted Message-ID alone does not, so only the
//! message's own recipients count; an address read from prose counts only
//! where it is a recipient. Pure, with a table test.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::locate::Evidence;
use super::report::{Action, Format, Outcome, Report};
use crate::api::{BounceKind, DeliveryEvent, DeliveryEventType, EmailMessage};
use crate::delivery::writer::Routed;

/// The report's events for `message`, each for one of its recipients: a
/// token vouches for the message (its one recipient is the one); a
/// Message-ID alone does not, so only the message's own recipients count.
pub fn routed(
    report: &Report,
    message: &EmailMessage,
    recipient: Option<u32>,
    evidence: Evidence,
) -> Vec<Routed> {
    let recipients = recipients_of(message, recipient);
    let mut events = Vec::new();
    for (i, outcome) in report.recipients.iter().enumerate() {
        let matched = outcome.address.as_deref().and_then(|a| {
            recipients
                .iter()
                .find(|r| r.eq_ignore_ascii_case(a))
                .cloned()
        });
        let address = match (matched, evidence) {
            (Some(a), _) => Some(a),
            // An address in prose names a recipient only where it is one.
            (None, _) if report.format == Format::Prose => continue,
            (None, Evidence::Token) if recipients.len() == 1 => recipients.first().cloned(),
            (None, Evidence::Token) => outcome.address.clone(),
            (None, Evidence::MessageId) => continue,
        };
        events.push(Routed {
            event: event_of(report, outcome, address, i),
            recipient,
        });
    }
    events
}

/// Every address the message was sent to; one for a bulk recipient.
pub fn recipients_of(message: &EmailMessage, recipient: Option<u32>) -> Vec<String> {
    let spec = &message.spec;
    if let Some(i) = recipient {
        return spec
            .recipients
            .get(i as usize)
            .map(|r| vec![bare(&r.to)])
            .unwrap_or_default();
    }
    if !spec.recipients.is_empty() {
        return spec.recipients.iter().map(|r| bare(&r.to)).collect();
    }
    spec.to
        .iter()
        .chain(&spec.cc)
        .chain(&spec.bcc)
        .map(|m| bare(m))
        .collect()
}

/// The address of `Name <address>` or `address`, as the send parsed it.
pub fn bare(mailbox: &str) -> String {
    mailbox
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| mailbox.trim().to_string())
}

/// The delivery event one outcome is.
pub fn event_of(
    report: &Report,
    outcome: &Outcome,
    recipient: Option<String>,
    index: usize,
) -> DeliveryEvent {
    let (type_, bounce) = match outcome.action {
        Action::Failed if outcome.is_hard() => (DeliveryEventType::Bounced, Some(BounceKind::Hard)),
        Action::Failed => (DeliveryEventType::Bounced, Some(BounceKind::Soft)),
        Action::Delayed => (DeliveryEventType::Deferred, None),
        Action::Delivered => (DeliveryEventType::Delivered, None),
        Action::Complained => (DeliveryEventType::Complained, None),
    };
    let seed = format!(
        "{}\0{}\0{index}",
        report.id.as_deref().unwrap_or(""),
        outcome.address.as_deref().unwrap_or("")
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let detail = match (&outcome.status, &outcome.diagnostic) {
        (Some(s), Some(d)) if !s.is_empty() => Some(format!("{s}: {d}")),
        (_, Some(d)) => Some(d.clone()),
        (Some(s), None) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    DeliveryEvent {
        id: format!("mailbox-{}", hex::encode(&digest.as_ref()[..12])),
        type_,
        time: Time(report.time.unwrap_or_else(Timestamp::now)),
        recipient,
        bounce,
        detail: detail.map(|d| d.chars().take(1024).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(to: &[&str], bulk: &[&str]) -> EmailMessage {
        let recipients: Vec<_> = bulk
            .iter()
            .map(|to| serde_json::json!({"to": to}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "team"},
            "spec": {"providerRef": {"name": "relay"}, "to": to, "recipients": recipients,
                     "subject": "s", "text": "t"}
        }))
        .expect("a message")
    }

    fn report(format: Format, outcomes: &[(&str, Action, &str)]) -> Report {
        Report {
            format,
            recipients: outcomes
                .iter()
                .map(|(address, action, status)| Outcome {
                    address: (!address.is_empty()).then(|| address.to_string()),
                    action: *action,
                    status: Some(status.to_string()),
                    diagnostic: None,
                    context: None,
                })
                .collect(),
            original_message_id: None,
            time: None,
            id: Some("<r@x>".into()),
        }
    }

    #[test]
    fn each_outcome_goes_to_the_recipient_the_evidence_allows() {
        use Action::{Complained, Delayed, Failed};
        use DeliveryEventType::{Bounced, Complained as Complaint, Deferred};
        type Case<'a> = (
            &'a str,
            Format,
            Evidence,
            &'a [&'a str],
            Option<u32>,
            &'a [(&'a str, Action, &'a str)],
            &'a [(&'a str, DeliveryEventType, Option<BounceKind>)],
        );
        let cases: &[Case] = &[
            (
                "a named recipient",
                Format::Dsn,
                Evidence::Token,
                &["Bo <bo@x.org>", "al@x.org"],
                None,
                &[("BO@x.org", Failed, "5.1.1")],
                &[("bo@x.org", Bounced, Some(BounceKind::Hard))],
            ),
            (
                "a token's one recipient, whatever the report names",
                Format::Dsn,
                Evidence::Token,
                &["bo@x.org"],
                None,
                &[("forwarded@y.org", Failed, "5.2.2")],
                &[("bo@x.org", Bounced, Some(BounceKind::Soft))],
            ),
            (
                "a complaint naming nobody",
                Format::Arf,
                Evidence::Token,
                &["bo@x.org"],
                None,
                &[("", Complained, "")],
                &[("bo@x.org", Complaint, None)],
            ),
            (
                "a Message-ID alone: only the message's recipients",
                Format::Dsn,
                Evidence::MessageId,
                &["bo@x.org"],
                None,
                &[
                    ("eve@y.org", Failed, "5.1.1"),
                    ("bo@x.org", Delayed, "4.4.1"),
                ],
                &[("bo@x.org", Deferred, None)],
            ),
            (
                "prose: only recipients, even with a token",
                Format::Prose,
                Evidence::Token,
                &["bo@x.org"],
                None,
                &[
                    ("postmaster@y.org", Failed, "5.0.0"),
                    ("bo@x.org", Failed, "5.0.0"),
                ],
                &[("bo@x.org", Bounced, Some(BounceKind::Soft))],
            ),
        ];
        for (what, format, evidence, to, bulk_index, outcomes, expected) in cases {
            let m = message(to, &[]);
            let events = routed(&report(*format, outcomes), &m, *bulk_index, *evidence);
            let got: Vec<_> = events
                .iter()
                .map(|r| {
                    (
                        r.event.recipient.clone().unwrap_or_default(),
                        r.event.type_,
                        r.event.bounce,
                    )
                })
                .collect();
            let want: Vec<_> = expected
                .iter()
                .map(|(a, t, b)| (a.to_string(), *t, *b))
                .collect();
            assert_eq!(got, want, "{what}");
        }
        // A bulk recipient's token names that recipient alone.
        let m = message(&[], &["a@x.org", "b@x.org"]);
        let r = report(Format::Dsn, &[("b@x.org", Failed, "5.1.1")]);
        let events = routed(&r, &m, Some(1), Evidence::Token);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.recipient.as_deref(), Some("b@x.org"));
        assert_eq!(events[0].recipient, Some(1));
    }

    #[test]
    fn the_same_report_gives_the_same_event_ids() {
        let r = report(Format::Dsn, &[("bo@x.org", Action::Failed, "5.1.1")]);
        let a = event_of(&r, &r.recipients[0], Some("bo@x.org".into()), 0);
        let b = event_of(&r, &r.recipients[0], Some("bo@x.org".into()), 0);
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("mailbox-"));
        assert_eq!(a.detail.as_deref(), Some("5.1.1"));
    }

    #[test]
    fn bare_addresses_come_out_of_mailboxes() {
        assert_eq!(bare("Bo <bo@x.org>"), "bo@x.org");
        assert_eq!(bare(" bo@x.org "), "bo@x.org");
    }
}
