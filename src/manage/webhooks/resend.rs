//! Resend: `GET /webhooks`, `POST /webhooks` (`endpoint`, `events`; the
//! answer holds the `signing_secret`), `GET /webhooks/{id}` (the secret
//! again), `PATCH /webhooks/{id}`, `DELETE /webhooks/{id}`.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Found, KeyFields, Wanted, delete, field, found_in, text};
use crate::manage::client::{Body, Client, ManageError};

/// The events `webhook::payload` reads.
const EVENTS: &[&str] = &[
    "email.delivered",
    "email.delivery_delayed",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.failed",
    "email.suppressed",
];

fn current(hook: &Value) -> bool {
    let events: Vec<&str> = hook["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    hook["status"] == "enabled" && EVENTS.iter().all(|e| events.contains(e))
}

pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    let list = client
        .call(Method::GET, "/webhooks", Body::None, "listing webhooks")
        .await?;
    found_in(&list["data"], ("endpoint", "id"), wanted.url, current)
}

pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    let body = json!({"endpoint": wanted.url, "events": EVENTS});
    let made = client
        .call(
            Method::POST,
            "/webhooks",
            Body::Json(body),
            "creating a webhook",
        )
        .await?;
    let id = text(&made, "id", "creating a webhook")?;
    let secret = text(&made, "signing_secret", "creating a webhook")?;
    Ok((id, Some(field("signingSecret", &secret))))
}

pub async fn repair(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let body = json!({"endpoint": wanted.url, "events": EVENTS, "status": "enabled"});
    let path = format!("/webhooks/{id}");
    client
        .call(Method::PATCH, &path, Body::Json(body), "updating a webhook")
        .await
        .map(|_| ())
}

pub async fn key(client: &Client, id: &str) -> Result<Option<KeyFields>, ManageError> {
    let path = format!("/webhooks/{id}");
    let hook = client
        .call(Method::GET, &path, Body::None, "reading a webhook")
        .await?;
    let secret = text(&hook, "signing_secret", "reading a webhook")?;
    Ok(Some(field("signingSecret", &secret)))
}

pub async fn remove(client: &Client, id: &str) -> Result<(), ManageError> {
    delete(client, &format!("/webhooks/{id}")).await
}
