//! The services' own webhook payloads, as django-anymail's test suite
//! captured them (`../shared/anymail-events/corpus.json`, named sample by
//! sample in its SOURCES.md). Each JSON sample is pointed at a message
//! mailroom really sent through the service's fake (its message id, its
//! recipient where the sample names one, and the origin the service
//! echoes; nothing else changed), signed as the service signs, and posted
//! to the receiver. What the message's status then says is checked against
//! what docs/providers.md promises for the event anymail reads the sample
//! as. Mailgun's legacy form-encoded samples are refused with 406, as the
//! docs say.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::delivery_events::{Hooked, events};
use crate::support::fixtures::events_for;
use crate::support::webhooks::post;
use kube::api::Api;
use mailroom::api::condition::{self, DELIVERED};
use mailroom::api::suppression::{name_for, name_for_list};
use mailroom::api::{BounceKind, DeliveryEventType, EmailSuppression, Phase};
use mailroom_fakes::Service;
use mailroom_fakes::webhook::{Event, Happened, Request};
use serde_json::{Value, json};

/// One sample of the corpus.
struct Sample {
    name: String,
    format: String,
    payload: Value,
    /// anymail's normalised event type (`delivered`, `bounced`, ...).
    anymail: String,
}

fn corpus(service: &str) -> Vec<Sample> {
    let path = support::root().join("../shared/anymail-events/corpus.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let corpus: Value = serde_json::from_str(&text).expect("the corpus is JSON");
    let samples: Vec<Sample> = corpus["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["service"] == service)
        .map(|s| Sample {
            name: s["name"].as_str().expect("a name").to_string(),
            format: s["format"].as_str().expect("a format").to_string(),
            payload: s["payload"].clone(),
            // "delivered (not asserted; ...)": the type is the first word.
            anymail: s["anymail"]["event_type"]
                .as_str()
                .expect("an event type")
                .split_whitespace()
                .next()
                .expect("a word")
                .to_string(),
        })
        .collect();
    assert!(samples.len() >= 8, "{service}: {} samples", samples.len());
    samples
}

/// What the docs promise for an event anymail reads as `anymail`.
#[derive(Debug, Clone, Copy)]
enum Promise {
    /// Acknowledged, nothing recorded (accepted, sent, processed, a
    /// resubscribe).
    Ignored,
    /// An event of one of `types` recorded; the phase becomes `phase`; the
    /// Delivered condition says `condition` (status, reason), if anything.
    Recorded {
        types: &'static [(DeliveryEventType, Option<BounceKind>)],
        phase: Phase,
        condition: Option<(&'static str, &'static str)>,
        /// The recipient is suppressed, with this reason.
        suppressed: Option<&'static str>,
    },
}

fn promise(anymail: &str) -> Promise {
    use DeliveryEventType as T;
    let recorded = |types, phase, condition, suppressed| Promise::Recorded {
        types,
        phase,
        condition,
        suppressed,
    };
    match anymail {
        "queued" | "sent" | "subscribed" => Promise::Ignored,
        "delivered" => recorded(
            &[(T::Delivered, None)],
            Phase::Delivered,
            Some(("True", "Delivered")),
            None,
        ),
        "opened" => recorded(
            &[(T::Opened, None)],
            Phase::Delivered,
            Some(("True", "Delivered")),
            None,
        ),
        "clicked" => recorded(
            &[(T::Clicked, None)],
            Phase::Delivered,
            Some(("True", "Delivered")),
            None,
        ),
        "deferred" => recorded(
            &[(T::Deferred, None), (T::Bounced, Some(BounceKind::Soft))],
            Phase::Sent,
            Some(("Unknown", "Deferred")),
            None,
        ),
        "bounced" => recorded(
            &[(T::Bounced, Some(BounceKind::Hard))],
            Phase::Bounced,
            Some(("False", "Bounced")),
            Some("HardBounce"),
        ),
        "rejected" => recorded(
            &[(T::Failed, None)],
            Phase::Bounced,
            Some(("False", "Dropped")),
            None,
        ),
        "complained" => recorded(
            &[(T::Complained, None)],
            Phase::Complained,
            Some(("True", "Complained")),
            Some("Complaint"),
        ),
        // Unsubscribed from the message's list: the default list, for a
        // message that names none.
        "unsubscribed" => recorded(
            &[(T::Unsubscribed, None)],
            Phase::Sent,
            None,
            Some("Unsubscribed"),
        ),
        other => panic!("no promise for anymail's {other:?}"),
    }
}

/// Sets the members of `echo` on the object at `target` (made an object).
fn echo_into(target: &mut Value, echo: &BTreeMap<String, String>) {
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in echo {
        target[key] = json!(value);
    }
}

/// Sets `key` of `object` to `value` where the sample has it.
fn replace(object: &mut Value, key: &str, value: Value) -> bool {
    match object.get_mut(key) {
        Some(slot) => {
            *slot = value;
            true
        }
        None => false,
    }
}

/// `payload` pointed at the email the service gave `id`, sent to
/// `recipient`, with the origin the service echoes for it. Answers whether
/// the sample names a recipient.
fn point_at(
    service: Service,
    payload: &mut Value,
    id: &str,
    recipient: &str,
    echo: &BTreeMap<String, String>,
) -> bool {
    let mut named = false;
    match service {
        Service::Mailtrap => {
            for event in payload["events"].as_array_mut().expect("events") {
                event["message_id"] = json!(id);
                named |= replace(event, "email", json!(recipient));
                echo_into(&mut event["custom_variables"], echo);
            }
        }
        Service::Resend => {
            let data = &mut payload["data"];
            data["email_id"] = json!(id);
            named |= replace(data, "to", json!([recipient]));
            echo_into(&mut data["tags"], echo);
        }
        Service::Postmark => {
            payload["MessageID"] = json!(id);
            named |= replace(payload, "Recipient", json!(recipient));
            named |= replace(payload, "Email", json!(recipient));
            echo_into(&mut payload["Metadata"], echo);
        }
        Service::Mailgun => {
            let data = &mut payload["event-data"];
            data["message"]["headers"]["message-id"] = json!(id);
            named |= replace(data, "recipient", json!(recipient));
            echo_into(&mut data["user-variables"], echo);
        }
        Service::SendGrid => {
            for event in payload.as_array_mut().expect("an array of events") {
                // Older integrations' events name the message by smtp-id only.
                if !replace(event, "smtp-id", json!(format!("<{id}>")))
                    || event.get("sg_message_id").is_some()
                {
                    event["sg_message_id"] = json!(id);
                }
                named |= replace(event, "email", json!(recipient));
                for (key, value) in echo {
                    event[key] = json!(value);
                }
            }
        }
    }
    named
}

/// A legacy Mailgun form post of `fields` (lists as repeated fields).
fn form_request(fields: &Value) -> Request {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let mut pairs = Vec::new();
    for (key, value) in fields.as_object().expect("form fields") {
        let values = match value {
            Value::Array(list) => list.clone(),
            one => vec![one.clone()],
        };
        for value in values {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            pairs.push(format!(
                "{}={}",
                utf8_percent_encode(key, NON_ALPHANUMERIC),
                utf8_percent_encode(&value, NON_ALPHANUMERIC)
            ));
        }
    }
    Request {
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: pairs.join("&").into_bytes(),
    }
}

fn delivered_condition(m: &mailroom::api::EmailMessage) -> Option<(String, String)> {
    let status = m.status.as_ref()?;
    let c = condition::find(&status.conditions, DELIVERED)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Sends one message per sample, posts each sample pointed at its
/// message, and checks each message against the promise.
async fn samples_keep_the_docs_promises(service: Service, label: &str) {
    let samples = corpus(label);
    let h = Hooked::new(service, "corpus").await;
    let http = reqwest::Client::new();
    let json_samples: Vec<(usize, &Sample)> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.format == "json")
        .collect();
    for (i, sample) in &json_samples {
        let spec = json!({"providerRef": {"name": "api"}, "to": [format!("s{i}@example.org")],
                          "subject": sample.name, "text": "a sample's message"});
        h.scene.message(&format!("s{i}"), spec).await;
    }
    let mut ids = BTreeMap::new();
    for (i, _) in &json_samples {
        let sent = h.scene.wait_phase(&format!("s{i}"), Phase::Sent).await;
        let id = sent
            .status
            .and_then(|s| s.provider_message_id)
            .expect("an id");
        ids.insert(*i, id);
    }

    for (i, sample) in &json_samples {
        let (name, recipient, id) = (format!("s{i}"), format!("s{i}@example.org"), &ids[i]);
        let echo = h.fake.echo(id);
        assert!(!echo.is_empty(), "the send of {id} carried its origin");
        let mut payload = sample.payload.clone();
        let named = point_at(service, &mut payload, id, &recipient, &echo);
        let now = jiff::Timestamp::now().as_second();
        let status = post(&http, &h.url(), &h.signer.sign(&payload, now)).await;
        assert_eq!(status, 200, "{}: the receiver's answer", sample.name);
        let m = h.message(&name).await;
        let what = format!("{} (anymail: {})", sample.name, sample.anymail);
        let phase = m.status.as_ref().and_then(|s| s.phase);
        match promise(&sample.anymail) {
            Promise::Ignored => {
                assert_eq!(events(&m), [], "{what}: nothing recorded");
                assert_eq!(phase, Some(Phase::Sent), "{what}");
            }
            Promise::Recorded {
                types,
                phase: promised,
                condition,
                suppressed,
            } => {
                let events = events(&m);
                assert!(
                    !events.is_empty() && events.iter().all(|e| types.contains(e)),
                    "{what}: recorded {events:?}, promised one of {types:?}"
                );
                assert_eq!(phase, Some(promised), "{what}: the phase");
                let condition = condition.map(|(s, r)| (s.to_string(), r.to_string()));
                assert_eq!(delivered_condition(&m), condition, "{what}: Delivered");
                if let Some(reason) = suppressed.filter(|_| named) {
                    // Suppressions are written after the status is.
                    let suppressions: Api<EmailSuppression> =
                        Api::namespaced(h.scene.client.clone(), &h.scene.ns);
                    let name = match reason {
                        "Unsubscribed" => name_for_list("default", &recipient),
                        _ => name_for("EmailProvider", "api", &recipient),
                    };
                    let note = format!("{what}: {recipient} suppressed");
                    let suppression = support::eventually(&note, Duration::from_secs(15), || {
                        let (suppressions, name) = (suppressions.clone(), name.clone());
                        async move { suppressions.get(&name).await.ok() }
                    })
                    .await;
                    assert_eq!(format!("{:?}", suppression.spec.reason), reason, "{what}");
                    if reason == "Unsubscribed" {
                        let list = suppression.spec.list.as_deref();
                        assert_eq!(list, Some("default"), "{what}: the list");
                        assert_eq!(suppression.spec.provider_ref, None, "{what}");
                    }
                }
                if matches!(promised, Phase::Bounced | Phase::Complained) {
                    let reason = format!("{promised:?}");
                    let note = format!("{what}: a {reason} Warning Event");
                    support::eventually(&note, Duration::from_secs(15), || async {
                        let events = events_for(&h.scene.client, &h.scene.ns, &name).await;
                        events
                            .iter()
                            .any(|(t, r, _)| t == "Warning" && *r == reason)
                            .then_some(())
                    })
                    .await;
                }
                if promised == Phase::Sent && condition.is_some() {
                    // A deferral is overtaken by the delivery that ends it.
                    let delivered = Event::new(Happened::Delivered, id, &recipient, now + 1)
                        .echoing(echo.clone());
                    for request in h.signer.requests(&[delivered], now + 1) {
                        assert_eq!(post(&http, &h.url(), &request).await, 200, "{what}");
                    }
                    let m = h.message(&name).await;
                    let phase = m.status.as_ref().and_then(|s| s.phase);
                    assert_eq!(phase, Some(Phase::Delivered), "{what}: then delivered");
                }
            }
        }
    }

    for sample in samples.iter().filter(|s| s.format == "form") {
        let (status, text) = {
            let request = form_request(&sample.payload);
            let mut builder = http.post(h.url()).body(request.body.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let answer = builder.send().await.expect("posting");
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap_or_default())
        };
        assert_eq!(status, 406, "{}: legacy form refused", sample.name);
        assert!(text.contains("legacy"), "{}: {text}", sample.name);
    }
}

#[tokio::test]
async fn mailtrap_samples_are_recorded_as_documented() {
    samples_keep_the_docs_promises(Service::Mailtrap, "mailtrap").await;
}

#[tokio::test]
async fn resend_samples_are_recorded_as_documented() {
    samples_keep_the_docs_promises(Service::Resend, "resend").await;
}

#[tokio::test]
async fn postmark_samples_are_recorded_as_documented() {
    samples_keep_the_docs_promises(Service::Postmark, "postmark").await;
}

#[tokio::test]
async fn mailgun_samples_are_recorded_as_documented() {
    samples_keep_the_docs_promises(Service::Mailgun, "mailgun").await;
}

#[tokio::test]
async fn sendgrid_samples_are_recorded_as_documented() {
    samples_keep_the_docs_promises(Service::SendGrid, "sendgrid").await;
}
