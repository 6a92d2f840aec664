//! The bounce reader's judgement measured against Sisimai's on real bounce
//! mails (`../shared/sisimai-bounces/`: 99 mails of many MTA families, each
//! with Sisimai's reason, recipient and hard/soft verdict). One row per
//! mail: what `report::read` makes of it, routed by `route::routed` to the
//! recipients of the message it answers (a message sent to the recipients
//! Sisimai names, or to nobody@example.org for a mail that names none). Prints the figures per family; fails on any false hard
//! bounce, below 90% agreement on the mails whose MIME is intact, and when
//! a mail whose MIME is broken is recorded at all.

use std::collections::BTreeMap;

use super::locate::Evidence;
use super::report::{self, Verdict};
use super::route;
use crate::api::{BounceKind, DeliveryEventType, EmailMessage};

#[allow(dead_code)] // the end-to-end test reads the rest
#[path = "../../tests/support/sisimai.rs"]
mod sisimai;

/// What a reader should record for one recipient, in Sisimai's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    Hard,
    Soft,
    Complaint,
    /// Nothing recorded: an auto-reply, not a bounce, or missed.
    Ignore,
    /// Left as malformed.
    Malformed,
}

fn expected_class(word: &str) -> Class {
    match word {
        "hard" => Class::Hard,
        "soft" => Class::Soft,
        "complaint" => Class::Complaint,
        _ => Class::Ignore,
    }
}

/// A message sent to `to`, as the report answers it.
fn sent_to(to: &[String]) -> EmailMessage {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"name": "m", "namespace": "team"},
        "spec": {"providerRef": {"name": "relay"}, "to": to, "subject": "s", "text": "t"}
    }))
    .expect("a message")
}

/// mailroom's class for each of `recipients` of the message `raw` answers,
/// routed by the reader's own code as a report carrying the message's
/// token is.
pub(super) fn judge(raw: &[u8], recipients: &[String]) -> Vec<Class> {
    let report = match report::read(raw) {
        Verdict::Report(report) => report,
        Verdict::AutoReply | Verdict::NotABounce => return vec![Class::Ignore; recipients.len()],
        Verdict::Malformed(_) => return vec![Class::Malformed; recipients.len()],
    };
    let events = route::routed(&report, &sent_to(recipients), None, Evidence::Token);
    recipients
        .iter()
        .map(|recipient| {
            let mine = events.iter().map(|r| &r.event).filter(|e| {
                e.recipient
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
            });
            mine.fold(Class::Ignore, |class, e| match (e.type_, e.bounce) {
                (DeliveryEventType::Bounced, Some(BounceKind::Hard)) => Class::Hard,
                _ if class == Class::Hard => class,
                (DeliveryEventType::Complained, _) => Class::Complaint,
                (DeliveryEventType::Bounced | DeliveryEventType::Deferred, _) => Class::Soft,
                _ => class,
            })
        })
        .collect()
}

#[test]
fn real_bounces_are_judged_as_sisimai_judges_them() {
    let samples = sisimai::samples(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut by_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut agree, mut total) = (0, 0);
    let mut false_hard = Vec::new();
    let mut disagreements = Vec::new();
    for sample in &samples {
        let file = &sample.file;
        let mut addresses: Vec<String> = sample.recipients.iter().map(|(a, _)| a.clone()).collect();
        if addresses.is_empty() {
            addresses.push("nobody@example.org".into());
        }
        let got = judge(&sample.raw, &addresses);
        if sample.broken() {
            assert!(
                got.iter().all(|c| *c == Class::Malformed),
                "{file}: its MIME is broken, so it is left: {got:?}"
            );
            continue;
        }
        let wanted: Vec<Class> = if sample.recipients.is_empty() {
            vec![Class::Ignore]
        } else {
            sample
                .recipients
                .iter()
                .map(|(_, c)| expected_class(c))
                .collect()
        };
        let row = by_family.entry(sample.family.clone()).or_default();
        for (want, have) in wanted.iter().zip(&got) {
            total += 1;
            row.1 += 1;
            if want == have {
                agree += 1;
                row.0 += 1;
            } else {
                disagreements.push(format!("{file}: Sisimai {want:?}, mailroom {have:?}"));
                if *have == Class::Hard {
                    false_hard.push(format!("{file}: Sisimai {want:?}"));
                }
            }
        }
    }
    println!("family | agree | of");
    for (family, (a, n)) in &by_family {
        println!("{family} | {a} | {n}");
    }
    println!("all (MIME intact) | {agree} | {total}");
    println!(
        "left, MIME broken | {n} | {n}",
        n = sisimai::BROKEN_MIME.len()
    );
    for d in &disagreements {
        println!("  {d}");
    }
    assert!(false_hard.is_empty(), "false hard bounces: {false_hard:#?}");
    assert!(
        agree * 10 >= total * 9,
        "{agree} of {total} agree: {disagreements:#?}"
    );
}
