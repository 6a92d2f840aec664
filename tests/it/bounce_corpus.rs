//! Real bounce mails answering messages mailroom really sent: for each mail
//! of the shared Sisimai corpus, a message is sent through mailpit to the
//! recipients Sisimai names; the mail is pointed at it (the original's
//! sender becomes the message's envelope sender, its Message-ID the
//! message's; nothing else changes) and dropped into the bounce mailbox.
//! Once the reader has read them all, each message's status is compared
//! with Sisimai's verdict: a hard bounce Bounced for that recipient, a soft
//! one or a delay recorded and not suppressed at once, a feedback report a
//! complaint, an auto-reply or a mail that is no bounce left alone.

use std::collections::BTreeMap;

use crate::bounces::{Mailbox, READ_WITHIN, bounces_ready, received, setup};
use crate::support::fixtures::{self, Scene};
use crate::support::{self, sisimai};
use kube::api::Api;
use mailroom::api::{BounceKind, DeliveryEventType, EmailMessage, Phase};
use serde_json::json;

/// `raw` with every `from` replaced by `to`.
fn replaced(raw: &[u8], from: &str, to: &str) -> Vec<u8> {
    if from.is_empty() {
        return raw.to_vec();
    }
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// What the message's status records for `recipient`, in Sisimai's words.
fn recorded(message: &EmailMessage, recipient: &str) -> &'static str {
    let Some(status) = message.status.as_ref() else {
        return "nothing";
    };
    let mine = status.delivery_events.iter().filter(|e| {
        e.recipient
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
    });
    let mut class = "nothing";
    for event in mine {
        class = match (event.type_, event.bounce) {
            (DeliveryEventType::Bounced, Some(BounceKind::Hard)) => return "hard",
            (DeliveryEventType::Complained, _) => "complaint",
            (DeliveryEventType::Bounced, _) | (DeliveryEventType::Deferred, _) => "soft",
            _ => class,
        };
    }
    class
}

#[tokio::test]
async fn real_bounces_answering_sent_messages_are_recorded_as_sisimai_judges_them() {
    let samples = sisimai::samples(support::root());
    let scene = Scene::new("bounce-corpus").await;
    let mailbox: Mailbox = setup(&scene, "bounce-corpus", "pop3-secret-5").await;
    // Mail the reader leaves is deleted on its next poll, so an empty
    // mailbox means every mail was judged for good.
    let mut settings = fixtures::settings(&scene.ns);
    settings.bounce_mailbox_keep_hours = 0;
    let controller =
        fixtures::RunningController::start_with_settings(scene.client.clone(), settings);

    // One message per mail, to the recipients Sisimai names (to somebody
    // for a mail that names none).
    let mut subjects = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let mut to: Vec<String> = sample.recipients.iter().map(|(a, _)| a.clone()).collect();
        to.dedup();
        if to.is_empty() {
            to.push(format!("nobody-{i}@example.org"));
        }
        let subject = support::unique(&format!("c{i}"));
        let spec = json!({"providerRef": {"name": "relay"}, "to": to, "subject": subject,
                          "text": "Your order has shipped."});
        scene.message(&format!("c{i}"), spec).await;
        subjects.push(subject);
    }
    for (i, sample) in samples.iter().enumerate() {
        let (envelope, message_id) =
            received(&scene, &mailbox, &format!("c{i}"), &subjects[i]).await;
        let raw = replaced(&sample.raw, &sample.addresser, &envelope);
        let id = message_id.trim_matches(['<', '>']);
        let raw = replaced(&raw, &sample.message_id, id);
        mailbox.deliver_bytes(&envelope, &raw).await;
    }
    support::eventually(
        "every mail judged and the mailbox empty",
        READ_WITHIN,
        || async { (mailbox.mailpit.count().await == 0).then_some(()) },
    )
    .await;
    let condition = bounces_ready(&scene, "relay", |reason, _| reason == "MailboxRead").await;
    println!("BouncesReady: {condition}");

    let messages: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let mut by_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut agree, mut total) = (0, 0);
    let mut wrong = Vec::new();
    let mut false_hard = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let message = messages.get(&format!("c{i}")).await.expect("the message");
        if sample.broken() {
            let events = message
                .status
                .as_ref()
                .map_or(0, |s| s.delivery_events.len());
            assert_eq!(events, 0, "{}: broken MIME is left alone", sample.file);
            continue;
        }
        let wanted: Vec<(String, &str)> = if sample.recipients.is_empty() {
            vec![(format!("nobody-{i}@example.org"), "nothing")]
        } else {
            sample
                .recipients
                .iter()
                .map(|(a, c)| {
                    let c = if c == "autoreply" {
                        "nothing"
                    } else {
                        c.as_str()
                    };
                    (a.clone(), c)
                })
                .collect()
        };
        let row = by_family.entry(sample.family.clone()).or_default();
        for (recipient, want) in wanted {
            let have = recorded(&message, &recipient);
            total += 1;
            row.1 += 1;
            if have == want {
                agree += 1;
                row.0 += 1;
            } else {
                wrong.push(format!(
                    "{}: {recipient}: Sisimai {want}, recorded {have}",
                    sample.file
                ));
                if have == "hard" {
                    false_hard.push(format!("{}: {recipient}", sample.file));
                }
            }
            if want == "hard" && have == "hard" {
                let phase = message.status.as_ref().and_then(|s| s.phase);
                assert_eq!(phase, Some(Phase::Bounced), "{}", sample.file);
            }
        }
    }
    println!("family | agree | of");
    for (family, (a, n)) in &by_family {
        println!("{family} | {a} | {n}");
    }
    println!("all (MIME intact) | {agree} | {total}");
    for w in &wrong {
        println!("  {w}");
    }
    assert!(false_hard.is_empty(), "false hard bounces: {false_hard:#?}");
    assert!(agree * 10 >= total * 9, "{agree} of {total}: {wrong:#?}");
    controller.stop().await;
}
