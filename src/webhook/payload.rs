//! Reads each service's webhook payload (the documented formats) into
//! delivery events keyed by the service's message id. Event types mailroom
//! does not record (sent, processed, accepted, contact and domain events)
//! are listed as ignored, so the request is still acknowledged.

use axum::http::HeaderMap;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::origin::Origin;
use crate::api::provider::ApiProvider;
use crate::api::{BounceKind, DeliveryEvent, DeliveryEventType};

/// One event about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    /// The service's id of the message (what the send returned).
    pub message_id: String,
    /// The message the email came from, as the service echoed it; `None`
    /// for an email sent without it (by another tool, or before mailroom
    /// wrote it).
    pub origin: Option<Origin>,
    /// The event as status records it.
    pub event: DeliveryEvent,
}

/// What one request carried.
#[derive(Debug, Default, PartialEq)]
pub struct Payload {
    /// Events to record.
    pub reported: Vec<Reported>,
    /// The service's names of events that are not recorded.
    pub ignored: Vec<String>,
}

/// The body is not the service's documented format.
#[derive(Debug, thiserror::Error)]
#[error("not a {service} webhook payload: {why}")]
pub struct Unreadable {
    /// The service.
    pub service: &'static str,
    /// What is wrong.
    pub why: String,
}

/// Why a request in a form mailroom does not read is refused before its
/// signature is checked: Mailgun's legacy (pre-2018) webhooks post form
/// fields, where its current ones post JSON with `event-data`. The answer
/// is 406, which Mailgun takes as "do not retry".
pub fn legacy_form(service: ApiProvider, headers: &HeaderMap) -> Option<String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let form = content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.starts_with("multipart/form-data");
    (service == ApiProvider::Mailgun && form).then(|| {
        "Mailgun's legacy form-encoded webhooks are not read: \
         set up Mailgun's current webhooks, which post JSON (event-data)"
            .to_string()
    })
}

/// Reads the body of a verified request from `service`.
pub fn read(service: ApiProvider, headers: &HeaderMap, body: &[u8]) -> Result<Payload, Unreadable> {
    let unreadable = |why: String| Unreadable {
        service: service.name(),
        why,
    };
    let mut payload = Payload::default();
    match service {
        ApiProvider::Mailtrap => {
            for event in mailtrap_events(headers, body).map_err(unreadable)? {
                mailtrap(&event, &mut payload);
            }
        }
        ApiProvider::Resend => {
            let value = json(body).map_err(unreadable)?;
            let id = headers
                .get("svix-id")
                .or_else(|| headers.get("webhook-id"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            resend(&value, id, &mut payload).map_err(unreadable)?;
        }
        ApiProvider::Postmark => {
            let value = json(body).map_err(unreadable)?;
            postmark(&value, &mut payload).map_err(unreadable)?;
        }
        ApiProvider::Mailgun => {
            let value = json(body).map_err(unreadable)?;
            let data = value
                .get("event-data")
                .ok_or_else(|| unreadable("no event-data".into()))?;
            mailgun(data, &mut payload);
        }
        ApiProvider::SendGrid => {
            let value = json(body).map_err(unreadable)?;
            let events = value
                .as_array()
                .ok_or_else(|| unreadable("the body is not a JSON array of events".into()))?;
            for event in events {
                sendgrid(event, &mut payload);
            }
        }
    }
    Ok(payload)
}

fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// At most 1024 characters, as status allows.
fn detail(parts: &[Option<String>]) -> Option<String> {
    let joined = parts
        .iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(": ");
    if joined.is_empty() {
        return None;
    }
    Some(joined.chars().take(1024).collect())
}

fn from_seconds(value: Option<&Value>) -> Option<Time> {
    let seconds = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let whole = seconds.trunc() as i64;
    let nanos = ((seconds - seconds.trunc()) * 1e9) as i32;
    Timestamp::new(whole, nanos).ok().map(Time)
}

fn from_rfc3339(value: Option<&Value>) -> Option<Time> {
    value?.as_str()?.parse::<Timestamp>().ok().map(Time)
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// An id for an event the service sent without one: its type, message id
/// and time, so a repeat of it gets the same.
fn made_up_id(name: &str, ids: &Value, id_key: &str, times: &Value, time_key: &str) -> String {
    format!(
        "{name}:{}:{}",
        text(ids, id_key).unwrap_or_default(),
        text(times, time_key).unwrap_or_default()
    )
}

#[allow(clippy::too_many_arguments)]
fn push(
    payload: &mut Payload,
    message_id: Option<String>,
    id: String,
    type_: DeliveryEventType,
    time: Option<Time>,
    recipient: Option<String>,
    bounce: Option<BounceKind>,
    detail: Option<String>,
    origin: Option<Origin>,
) {
    let Some(message_id) = message_id else {
        payload
            .ignored
            .push(format!("{type_:?} without a message id"));
        return;
    };
    payload.reported.push(Reported {
        message_id,
        origin,
        event: DeliveryEvent {
            id: id.chars().take(512).collect(),
            type_,
            time: time.unwrap_or_else(now),
            recipient,
            bounce,
            detail,
        },
    });
}

/// Mailtrap: `{"events": [...]}` (JSON) or one event per line (JSON Lines).
fn mailtrap_events(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Value>, String> {
    let jsonl = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/jsonl"));
    if jsonl {
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
        return text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| json(line.as_bytes()))
            .collect();
    }
    let value = json(body)?;
    match value.get("events") {
        Some(Value::Array(events)) => Ok(events.clone()),
        _ => Err("no events array".into()),
    }
}

fn mailtrap(event: &Value, payload: &mut Payload) {
    let name = text(event, "event").unwrap_or_default();
    let (type_, bounce) = match name.as_str() {
        "delivery" => (DeliveryEventType::Delivered, None),
        "open" => (DeliveryEventType::Opened, None),
        "click" => (DeliveryEventType::Clicked, None),
        "unsubscribe" => (DeliveryEventType::Unsubscribed, None),
        "spam" => (DeliveryEventType::Complained, None),
        "soft bounce" => (DeliveryEventType::Bounced, Some(BounceKind::Soft)),
        "bounce" => (DeliveryEventType::Bounced, Some(BounceKind::Hard)),
        // Mailtrap: "the message is still queued" and ends in a delivery
        // or a reject, so a later event overtakes it.
        "suspension" => (DeliveryEventType::Deferred, None),
        "reject" => (DeliveryEventType::Failed, None),
        _ => {
            payload.ignored.push(name);
            return;
        }
    };
    let detail = detail(&[
        text(event, "bounce_category"),
        text(event, "reason"),
        text(event, "response_code"),
        text(event, "response"),
        text(event, "url"),
    ]);
    let id = text(event, "event_id")
        .unwrap_or_else(|| made_up_id(&name, event, "message_id", event, "timestamp"));
    push(
        payload,
        text(event, "message_id"),
        id,
        type_,
        from_seconds(event.get("timestamp")),
        text(event, "email"),
        bounce,
        detail,
        Origin::from_json(event.get("custom_variables")),
    );
}

/// Resend: one `{type, created_at, data}` per request; the Svix message id
/// is the event's id.
fn resend(value: &Value, svix_id: &str, payload: &mut Payload) -> Result<(), String> {
    let name = text(value, "type").ok_or("no type")?;
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    let nested = |object: &str, key: &str| data.get(object).and_then(|o| text(o, key));
    let (type_, bounce, why) = match name.as_str() {
        "email.delivered" => (DeliveryEventType::Delivered, None, None),
        "email.delivery_delayed" => (DeliveryEventType::Deferred, None, None),
        "email.bounced" => {
            // Resend documents email.bounced as a permanent rejection; its
            // own samples carry no type. Only an explicit Transient is soft.
            let kind = match nested("bounce", "type").as_deref() {
                Some("Transient") => BounceKind::Soft,
                _ => BounceKind::Hard,
            };
            let why = detail(&[
                nested("bounce", "type"),
                nested("bounce", "subType"),
                nested("bounce", "message"),
            ]);
            (DeliveryEventType::Bounced, Some(kind), why)
        }
        "email.complained" => (DeliveryEventType::Complained, None, None),
        "email.opened" => (DeliveryEventType::Opened, None, None),
        "email.clicked" => (
            DeliveryEventType::Clicked,
            None,
            detail(&[nested("click", "link")]),
        ),
        "email.failed" => (
            DeliveryEventType::Failed,
            None,
            detail(&[nested("failed", "reason")]),
        ),
        "email.suppressed" => (
            DeliveryEventType::Failed,
            None,
            detail(&[
                Some("suppressed".to_string()),
                nested("suppressed", "reason"),
                nested("suppressed", "message"),
            ]),
        ),
        _ => {
            payload.ignored.push(name);
            return Ok(());
        }
    };
    let recipient = data.get("to").and_then(|to| match to {
        Value::Array(list) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Value::String(s) => Some(s.clone()),
        _ => None,
    });
    let id = if svix_id.is_empty() {
        made_up_id(&name, &data, "email_id", value, "created_at")
    } else {
        svix_id.to_string()
    };
    push(
        payload,
        text(&data, "email_id"),
        id,
        type_,
        from_rfc3339(value.get("created_at")),
        recipient,
        bounce,
        why,
        Origin::from_json(data.get("tags")),
    );
    Ok(())
}

/// Postmark bounce types that are permanent (postmark.js `BounceType`).
const POSTMARK_HARD_BOUNCES: &[&str] = &[
    "HardBounce",
    "BadEmailAddress",
    "ManuallyDeactivated",
    "AddressChange",
    "DMARCPolicy",
];

/// Postmark bounce types that report no delivery problem (a reply, a
/// subscription request, a relay or challenge test): not recorded.
const POSTMARK_NOT_BOUNCES: &[&str] = &[
    "AutoResponder",
    "Subscribe",
    "ChallengeVerification",
    "OpenRelayTest",
];

/// What a Postmark record says: the event type, the bounce kind, and the
/// keys of its time and recipient; `None` for a record not recorded.
type PostmarkEvent = (
    DeliveryEventType,
    Option<BounceKind>,
    &'static str,
    &'static str,
    Option<String>,
);

/// A `Bounce` record: Postmark reports unsubscribe requests and spam
/// complaints that arrive as mail under bounce types of their own.
fn postmark_bounce(value: &Value) -> Option<PostmarkEvent> {
    let kind = text(value, "Type").unwrap_or_default();
    let why = detail(&[
        Some(kind.clone()),
        text(value, "Description"),
        text(value, "Details"),
    ]);
    let (type_, bounce) = match kind.as_str() {
        "Unsubscribe" => (DeliveryEventType::Unsubscribed, None),
        "SpamComplaint" => (DeliveryEventType::Complained, None),
        k if POSTMARK_NOT_BOUNCES.contains(&k) => return None,
        k => {
            let inactive = value.get("Inactive").and_then(Value::as_bool) == Some(true);
            let hard = inactive || POSTMARK_HARD_BOUNCES.contains(&k);
            let bounce = if hard {
                BounceKind::Hard
            } else {
                BounceKind::Soft
            };
            (DeliveryEventType::Bounced, Some(bounce))
        }
    };
    Some((type_, bounce, "BouncedAt", "Email", why))
}

/// A `SubscriptionChange` record that stops sending: Postmark suppressed the
/// address after a hard bounce, a spam complaint, or by hand (an
/// unsubscribe). One that reactivates the address is not recorded.
fn postmark_subscription_change(value: &Value) -> Option<PostmarkEvent> {
    if value.get("SuppressSending").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let reason = text(value, "SuppressionReason");
    let (type_, bounce) = match reason.as_deref() {
        Some("HardBounce") => (DeliveryEventType::Bounced, Some(BounceKind::Hard)),
        Some("SpamComplaint") => (DeliveryEventType::Complained, None),
        _ => (DeliveryEventType::Unsubscribed, None),
    };
    Some((type_, bounce, "ChangedAt", "Recipient", detail(&[reason])))
}

/// Postmark: one record per request, told apart by `RecordType`. Only
/// bounces carry an id of their own; the others get one from their fields.
fn postmark(value: &Value, payload: &mut Payload) -> Result<(), String> {
    let record = text(value, "RecordType").ok_or("no RecordType")?;
    let message_id = text(value, "MessageID");
    let kind = match record.as_str() {
        "Delivery" => Some((
            DeliveryEventType::Delivered,
            None,
            "DeliveredAt",
            "Recipient",
            detail(&[text(value, "Details")]),
        )),
        "Bounce" => postmark_bounce(value),
        "SpamComplaint" => Some((
            DeliveryEventType::Complained,
            None,
            "BouncedAt",
            "Email",
            None,
        )),
        "Open" => Some((
            DeliveryEventType::Opened,
            None,
            "ReceivedAt",
            "Recipient",
            None,
        )),
        "Click" => Some((
            DeliveryEventType::Clicked,
            None,
            "ReceivedAt",
            "Recipient",
            detail(&[text(value, "OriginalLink")]),
        )),
        "SubscriptionChange" => postmark_subscription_change(value),
        _ => None,
    };
    let Some((type_, bounce, time_key, recipient_key, why)) = kind else {
        payload.ignored.push(record);
        return Ok(());
    };
    let recipient = text(value, recipient_key);
    // Bounce records (spam complaints among them) have an id of their own.
    let id = match text(value, "ID") {
        Some(id) if record == "Bounce" || record == "SpamComplaint" => format!("{record}:{id}"),
        _ => format!(
            "{record}:{}:{}:{}",
            message_id.as_deref().unwrap_or_default(),
            recipient.as_deref().unwrap_or_default(),
            text(value, time_key).unwrap_or_default()
        ),
    };
    push(
        payload,
        message_id,
        id,
        type_,
        from_rfc3339(value.get(time_key)),
        recipient,
        bounce,
        why,
        Origin::from_json(value.get("Metadata")),
    );
    Ok(())
}

/// Mailgun: the `event-data` of `{signature, event-data}`.
fn mailgun(data: &Value, payload: &mut Payload) {
    let name = text(data, "event").unwrap_or_default();
    let status = data.get("delivery-status").cloned().unwrap_or(Value::Null);
    let reason = text(data, "reason");
    let server = detail(&[
        text(&status, "code"),
        text(&status, "message").or_else(|| text(&status, "description")),
    ]);
    let (type_, bounce, why) = match name.as_str() {
        "delivered" => (DeliveryEventType::Delivered, None, server),
        "failed" => {
            let permanent = text(data, "severity").as_deref() == Some("permanent");
            let suppressed = reason.as_deref().is_some_and(|r| r.starts_with("suppress"));
            let why = detail(&[reason.clone(), server]);
            match (permanent, suppressed) {
                (true, true) => (DeliveryEventType::Failed, None, why),
                (true, false) => (DeliveryEventType::Bounced, Some(BounceKind::Hard), why),
                (false, _) => (DeliveryEventType::Deferred, None, why),
            }
        }
        "rejected" => (
            DeliveryEventType::Failed,
            None,
            detail(&[data.get("reject").and_then(|r| text(r, "reason")), reason]),
        ),
        "opened" => (DeliveryEventType::Opened, None, None),
        "clicked" => (
            DeliveryEventType::Clicked,
            None,
            detail(&[text(data, "url")]),
        ),
        "unsubscribed" => (DeliveryEventType::Unsubscribed, None, None),
        "complained" => (DeliveryEventType::Complained, None, None),
        _ => {
            payload.ignored.push(name);
            return;
        }
    };
    let message_id = data
        .get("message")
        .and_then(|m| m.get("headers"))
        .and_then(|h| text(h, "message-id"))
        .map(|id| id.trim_start_matches('<').trim_end_matches('>').to_string());
    // Mailgun's event ids are unique within a day only: the timestamp
    // makes them unique for good.
    let id = format!(
        "{}:{}",
        text(data, "id").unwrap_or_default(),
        text(data, "timestamp").unwrap_or_default()
    );
    push(
        payload,
        message_id,
        id,
        type_,
        from_seconds(data.get("timestamp")),
        text(data, "recipient"),
        bounce,
        why,
        Origin::from_json(data.get("user-variables")),
    );
}

/// SendGrid: one object of the posted array.
fn sendgrid(event: &Value, payload: &mut Payload) {
    let name = text(event, "event").unwrap_or_default();
    let why = detail(&[text(event, "reason"), text(event, "response")]);
    let (type_, bounce, why) = match name.as_str() {
        "delivered" => (DeliveryEventType::Delivered, None, why),
        "deferred" => (DeliveryEventType::Deferred, None, why),
        "bounce" => {
            // "blocked" is a refusal the receiving server may lift.
            let kind = match text(event, "type").as_deref() {
                Some("blocked") => BounceKind::Soft,
                _ => BounceKind::Hard,
            };
            let why = detail(&[text(event, "status"), text(event, "reason")]);
            (DeliveryEventType::Bounced, Some(kind), why)
        }
        "dropped" => (DeliveryEventType::Failed, None, why),
        "open" => (DeliveryEventType::Opened, None, None),
        "click" => (
            DeliveryEventType::Clicked,
            None,
            detail(&[text(event, "url")]),
        ),
        "spamreport" => (DeliveryEventType::Complained, None, None),
        "unsubscribe" | "group_unsubscribe" => (DeliveryEventType::Unsubscribed, None, None),
        _ => {
            payload.ignored.push(name);
            return;
        }
    };
    let id = text(event, "sg_event_id")
        .unwrap_or_else(|| made_up_id(&name, event, "sg_message_id", event, "timestamp"));
    // Events of older integrations name the message by its SMTP id only.
    let message_id = text(event, "sg_message_id")
        .or_else(|| text(event, "smtp-id").map(|id| id.trim_matches(['<', '>']).to_string()));
    push(
        payload,
        message_id,
        id,
        type_,
        from_seconds(event.get("timestamp")),
        text(event, "email"),
        bounce,
        why,
        // custom_args arrive as top-level keys of the event.
        Origin::from_json(Some(event)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(service: ApiProvider, headers: &HeaderMap, body: &str) -> Reported {
        let payload = read(service, headers, body.as_bytes()).unwrap();
        assert_eq!(payload.reported.len(), 1, "{payload:?}");
        payload.reported.into_iter().next().unwrap()
    }

    #[test]
    fn mailtrap_documented_bounce() {
        let body = r#"{"events":[{"event":"bounce","timestamp":1728669700,"sending_stream":"transactional",
 "message_id":"1df37d17-0286-4d8b-8edf-bc4ec5be86e6","email":"receiver@example.com",
 "event_id":"bede7236-2284-43d6-a953-1fdcafd0fdbc","response":"[CS01] Message rejected due to local policy",
 "response_code":555,"bounce_category":"spam","sending_domain_name":"examplesender.com"}]}"#;
        let r = one(ApiProvider::Mailtrap, &HeaderMap::new(), body);
        assert_eq!(r.message_id, "1df37d17-0286-4d8b-8edf-bc4ec5be86e6");
        assert_eq!(r.event.id, "bede7236-2284-43d6-a953-1fdcafd0fdbc");
        assert_eq!(r.event.type_, DeliveryEventType::Bounced);
        assert_eq!(r.event.bounce, Some(BounceKind::Hard));
        assert_eq!(r.event.time.0.as_second(), 1728669700);
        assert_eq!(
            r.event.detail.as_deref(),
            Some("spam: 555: [CS01] Message rejected due to local policy")
        );
    }

    #[test]
    fn mailtrap_json_lines_and_soft_bounce() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/jsonl".parse().unwrap());
        let body = "{\"event\":\"soft bounce\",\"message_id\":\"m1\",\"event_id\":\"e1\",\"timestamp\":1,\"email\":\"a@b.c\"}\n{\"event\":\"delivery\",\"message_id\":\"m1\",\"event_id\":\"e2\",\"timestamp\":2,\"email\":\"a@b.c\"}\n";
        let payload = read(ApiProvider::Mailtrap, &headers, body.as_bytes()).unwrap();
        let types: Vec<_> = payload
            .reported
            .iter()
            .map(|r| (r.event.type_, r.event.bounce))
            .collect();
        assert_eq!(
            types,
            [
                (DeliveryEventType::Bounced, Some(BounceKind::Soft)),
                (DeliveryEventType::Delivered, None)
            ]
        );
    }

    #[test]
    fn resend_bounce_uses_the_svix_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "svix-id",
            "msg_2Lh9KRb6pzN2UmoNLxRvFE3b3ut".parse().unwrap(),
        );
        let body = r#"{"type":"email.bounced","created_at":"2024-11-22T23:41:12.126Z","data":{"email_id":"56761188-7520-42d8-8898-ff6fc54ce618","created_at":"2024-11-22T23:41:11.894719+00:00","from":"Acme <onboarding@resend.dev>","to":["delivered@resend.dev"],"subject":"Sending this example","bounce":{"message":"The recipient's email address is on the suppression list.","subType":"Suppressed","type":"Permanent"}}}"#;
        let r = one(ApiProvider::Resend, &headers, body);
        assert_eq!(r.message_id, "56761188-7520-42d8-8898-ff6fc54ce618");
        assert_eq!(r.event.id, "msg_2Lh9KRb6pzN2UmoNLxRvFE3b3ut");
        assert_eq!(r.event.bounce, Some(BounceKind::Hard));
        assert_eq!(r.event.recipient.as_deref(), Some("delivered@resend.dev"));
        let sent = r#"{"type":"email.sent","created_at":"2024-11-22T23:41:12.126Z","data":{"email_id":"x"}}"#;
        let payload = read(ApiProvider::Resend, &headers, sent.as_bytes()).unwrap();
        assert_eq!(payload.ignored, ["email.sent"]);
    }

    #[test]
    fn postmark_records_and_their_ids() {
        let bounce = r#"{"RecordType":"Bounce","ID":4323372036854775807,"Type":"HardBounce","TypeCode":1,"Name":"Hard bounce","MessageID":"883953f4-6105-42a2-a16a-77a8eac79483","Description":"The server was unable to deliver your message","Details":"smtp;550 5.1.1 unknown user","Email":"john@example.com","BouncedAt":"2019-11-05T16:33:54.9070259Z","Inactive":true,"MessageStream":"outbound"}"#;
        let r = one(ApiProvider::Postmark, &HeaderMap::new(), bounce);
        assert_eq!(r.event.id, "Bounce:4323372036854775807");
        assert_eq!(r.event.bounce, Some(BounceKind::Hard));
        let delivery = r#"{"RecordType":"Delivery","ServerID":23,"MessageStream":"outbound","MessageID":"00000000-0000-0000-0000-000000000000","Recipient":"john@example.com","Tag":"welcome","DeliveredAt":"2019-11-05T16:33:54.9070259Z","Details":"Test delivery webhook details","Metadata":{}}"#;
        let r = one(ApiProvider::Postmark, &HeaderMap::new(), delivery);
        assert_eq!(r.event.type_, DeliveryEventType::Delivered);
        assert_eq!(
            r.event.id,
            "Delivery:00000000-0000-0000-0000-000000000000:john@example.com:2019-11-05T16:33:54.9070259Z"
        );
    }

    #[test]
    fn mailgun_failures_by_severity() {
        let body = |severity: &str, reason: &str| {
            format!(
                r#"{{"signature":{{}},"event-data":{{"event":"failed","id":"G9Bn5sl1TC6nu79C8C0bwg","timestamp":1521233195.375624,"severity":"{severity}","reason":"{reason}","recipient":"alice@example.com","message":{{"headers":{{"message-id":"20130503182626.18666.16540@example.com"}}}},"delivery-status":{{"code":550,"message":"No such user"}}}}}}"#
            )
        };
        let hard = one(
            ApiProvider::Mailgun,
            &HeaderMap::new(),
            &body("permanent", "bounce"),
        );
        assert_eq!(hard.message_id, "20130503182626.18666.16540@example.com");
        assert_eq!(hard.event.bounce, Some(BounceKind::Hard));
        assert_eq!(
            hard.event.detail.as_deref(),
            Some("bounce: 550: No such user")
        );
        let soft = one(
            ApiProvider::Mailgun,
            &HeaderMap::new(),
            &body("temporary", "generic"),
        );
        assert_eq!(soft.event.type_, DeliveryEventType::Deferred);
        let dropped = one(
            ApiProvider::Mailgun,
            &HeaderMap::new(),
            &body("permanent", "suppress-bounce"),
        );
        assert_eq!(dropped.event.type_, DeliveryEventType::Failed);
    }

    #[test]
    fn sendgrid_array_and_custom_args_at_the_top_level() {
        let body = r#"[{"email":"a@example.org","timestamp":1513299569,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>","event":"delivered","category":"cat facts","sg_event_id":"sg_event_id","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0","response":"250 OK","mailroom-ns":"team","mailroom-name":"welcome_1","mailroom-uid":"u-1","mailroom-rcpt":"3"},{"email":"a@example.org","timestamp":1513299569,"event":"processed","sg_event_id":"p","sg_message_id":"x"}]"#;
        let payload = read(ApiProvider::SendGrid, &HeaderMap::new(), body.as_bytes()).unwrap();
        assert_eq!(payload.reported.len(), 1);
        assert_eq!(payload.ignored, ["processed"]);
        let origin = payload.reported[0].origin.clone().expect("an origin");
        assert_eq!(
            (
                origin.namespace.as_str(),
                origin.name.as_str(),
                origin.uid.as_str()
            ),
            ("team", "welcome.1", "u-1")
        );
        assert_eq!(origin.recipient, Some(3));
    }

    #[test]
    fn each_service_echo_field_gives_the_origin() {
        let echo = r#"{"mailroom-ns":"team","mailroom-name":"m","mailroom-uid":"u-9"}"#;
        let cases = [
            (
                ApiProvider::Mailtrap,
                format!(
                    r#"{{"events":[{{"event":"delivery","message_id":"m1","event_id":"e1","timestamp":1,"email":"a@b.c","custom_variables":{echo}}}]}}"#
                ),
            ),
            (
                ApiProvider::Resend,
                format!(
                    r#"{{"type":"email.delivered","created_at":"2024-11-22T23:41:12.126Z","data":{{"email_id":"x","to":["a@b.c"],"tags":{echo}}}}}"#
                ),
            ),
            (
                ApiProvider::Postmark,
                format!(
                    r#"{{"RecordType":"Delivery","MessageID":"x","Recipient":"a@b.c","DeliveredAt":"2019-11-05T16:33:54Z","Metadata":{echo}}}"#
                ),
            ),
            (
                ApiProvider::Mailgun,
                format!(
                    r#"{{"signature":{{}},"event-data":{{"event":"delivered","id":"i","timestamp":1.5,"recipient":"a@b.c","message":{{"headers":{{"message-id":"x"}}}},"user-variables":{echo}}}}}"#
                ),
            ),
        ];
        for (service, body) in cases {
            let r = one(service, &HeaderMap::new(), &body);
            let origin = r.origin.unwrap_or_else(|| panic!("{service:?}: no origin"));
            assert_eq!((origin.name.as_str(), origin.uid.as_str()), ("m", "u-9"));
            assert_eq!(origin.recipient, None);
        }
    }

    #[test]
    fn resend_bounces_without_a_type_are_hard_and_transient_ones_soft() {
        let body = |bounce: &str| {
            format!(
                r#"{{"type":"email.bounced","created_at":"2023-10-02T18:11:26.101Z","data":{{"email_id":"e","to":["a@b.c"],"bounce":{bounce}}}}}"#
            )
        };
        let kind = |bounce: &str| {
            one(ApiProvider::Resend, &HeaderMap::new(), &body(bounce))
                .event
                .bounce
        };
        assert_eq!(kind(r#"{"message":"hard"}"#), Some(BounceKind::Hard));
        assert_eq!(kind(r#"{"type":"Permanent"}"#), Some(BounceKind::Hard));
        assert_eq!(kind(r#"{"type":"Undetermined"}"#), Some(BounceKind::Hard));
        assert_eq!(kind(r#"{"type":"Transient"}"#), Some(BounceKind::Soft));
    }

    #[test]
    fn mailtrap_suspension_is_a_deferral() {
        let body = r#"{"events":[{"event":"suspension","timestamp":1,"message_id":"m","email":"a@b.c","event_id":"e","reason":"other"}]}"#;
        let r = one(ApiProvider::Mailtrap, &HeaderMap::new(), body);
        assert_eq!(r.event.type_, DeliveryEventType::Deferred);
        assert_eq!(r.event.detail.as_deref(), Some("other"));
    }

    #[test]
    fn postmark_subscription_changes_and_bounce_types_that_are_not_bounces() {
        let change = |reason: &str, suppress: bool| {
            format!(
                r#"{{"RecordType":"SubscriptionChange","MessageID":"m","ChangedAt":"2022-06-05T17:17:32Z","Recipient":"a@b.c","SuppressSending":{suppress},"SuppressionReason":"{reason}"}}"#
            )
        };
        let typed = |body: &str| {
            let r = one(ApiProvider::Postmark, &HeaderMap::new(), body);
            (r.event.type_, r.event.bounce)
        };
        assert_eq!(
            typed(&change("HardBounce", true)),
            (DeliveryEventType::Bounced, Some(BounceKind::Hard))
        );
        assert_eq!(
            typed(&change("SpamComplaint", true)),
            (DeliveryEventType::Complained, None)
        );
        assert_eq!(
            typed(&change("ManualSuppression", true)),
            (DeliveryEventType::Unsubscribed, None)
        );
        let reactivated = read(
            ApiProvider::Postmark,
            &HeaderMap::new(),
            change("", false).as_bytes(),
        )
        .unwrap();
        assert!(reactivated.reported.is_empty());
        let bounce = |kind: &str| {
            format!(
                r#"{{"RecordType":"Bounce","ID":5,"Type":"{kind}","MessageID":"m","Email":"a@b.c","BouncedAt":"2019-11-05T16:33:54Z"}}"#
            )
        };
        assert_eq!(
            typed(&bounce("Unsubscribe")),
            (DeliveryEventType::Unsubscribed, None)
        );
        assert_eq!(
            typed(&bounce("SoftBounce")),
            (DeliveryEventType::Bounced, Some(BounceKind::Soft))
        );
        let reply = read(
            ApiProvider::Postmark,
            &HeaderMap::new(),
            bounce("AutoResponder").as_bytes(),
        )
        .unwrap();
        assert_eq!(reply.ignored, ["Bounce"]);
    }

    #[test]
    fn mailgun_legacy_forms_are_told_apart_from_json() {
        let with = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", content_type.parse().unwrap());
            headers
        };
        let form = with("application/x-www-form-urlencoded");
        assert!(legacy_form(ApiProvider::Mailgun, &form).is_some());
        assert!(
            legacy_form(
                ApiProvider::Mailgun,
                &with("multipart/form-data; boundary=x")
            )
            .is_some()
        );
        assert!(legacy_form(ApiProvider::Mailgun, &with("application/json")).is_none());
        assert!(legacy_form(ApiProvider::SendGrid, &form).is_none());
    }

    #[test]
    fn malformed_bodies_are_unreadable() {
        assert!(read(ApiProvider::SendGrid, &HeaderMap::new(), b"{}").is_err());
        assert!(read(ApiProvider::Mailtrap, &HeaderMap::new(), b"[]").is_err());
        assert!(read(ApiProvider::Postmark, &HeaderMap::new(), b"not json").is_err());
    }
}
