//! Mailtrap's account API: `GET /api/webhooks`, `POST /api/webhooks`
//! (`webhook: {url, webhook_type: email_sending, sending_stream,
//! event_types, payload_format}`; the answer holds the `signing_secret`,
//! shown only then), `PATCH /api/webhooks/{id}`, `DELETE /api/webhooks/{id}`.
//! A sandbox provider has no sending webhooks.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Found, KeyFields, Wanted, delete, field, found_in, text};
use crate::api::provider::MailtrapStream;
use crate::manage::client::{Body, Client, ManageError};

/// The event types to subscribe (the management API's spelling).
const EVENTS: &[&str] = &[
    "delivery",
    "soft_bounce",
    "bounce",
    "suspension",
    "unsubscribe",
    "open",
    "spam_complaint",
    "click",
    "reject",
];

fn stream(wanted: &Wanted<'_>) -> Result<&'static str, ManageError> {
    let options = wanted.spec.mailtrap.clone().unwrap_or_default();
    if options.sandbox_inbox_id.is_some() {
        return Err(ManageError::Unsupported(
            "Mailtrap sandbox inboxes send no delivery events: webhook.register needs a sending stream (no sandboxInboxId)".into(),
        ));
    }
    Ok(match options.stream {
        MailtrapStream::Transactional => "transactional",
        MailtrapStream::Bulk => "bulk",
    })
}

fn current(hook: &Value) -> bool {
    let events: Vec<&str> = hook["event_types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    hook["active"] == true && EVENTS.iter().all(|e| events.contains(e))
}

pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    let list = client
        .call(Method::GET, "/api/webhooks", Body::None, "listing webhooks")
        .await?;
    found_in(&list["data"], ("url", "id"), wanted.url, current)
}

pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    let body = json!({"webhook": {"url": wanted.url, "webhook_type": "email_sending",
        "sending_stream": stream(wanted)?, "event_types": EVENTS, "payload_format": "json",
        "active": true}});
    let made = client
        .call(
            Method::POST,
            "/api/webhooks",
            Body::Json(body),
            "creating a webhook",
        )
        .await?;
    let data = &made["data"];
    let id = text(data, "id", "creating a webhook")?;
    let secret = text(data, "signing_secret", "creating a webhook")?;
    Ok((id, Some(field("signingSecret", &secret))))
}

pub async fn repair(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let body = json!({"webhook": {"url": wanted.url, "event_types": EVENTS, "active": true}});
    let path = format!("/api/webhooks/{id}");
    client
        .call(Method::PATCH, &path, Body::Json(body), "updating a webhook")
        .await
        .map(|_| ())
}

pub async fn remove(client: &Client, id: &str) -> Result<(), ManageError> {
    delete(client, &format!("/api/webhooks/{id}")).await
}
