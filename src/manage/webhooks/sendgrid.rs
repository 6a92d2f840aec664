//! SendGrid's event webhooks: `GET /v3/user/webhooks/event/settings/all`,
//! `POST /v3/user/webhooks/event/settings` (url and one boolean per event),
//! `PATCH .../settings/signed/{id}` (`enabled: true` turns signing on and
//! answers the public key), `GET .../settings/signed/{id}` (the key again),
//! `PATCH .../settings/{id}`, `DELETE .../settings/{id}`.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Found, KeyFields, Wanted, delete, field, found_in, text};
use crate::manage::client::{Body, Client, ManageError};

const SETTINGS: &str = "/v3/user/webhooks/event/settings";

/// The events `webhook::payload` reads, as settings name them.
const EVENTS: &[&str] = &[
    "delivered",
    "deferred",
    "bounce",
    "dropped",
    "spam_report",
    "open",
    "click",
    "unsubscribe",
    "group_unsubscribe",
];

fn settings(wanted: &Wanted<'_>) -> Value {
    let mut body = json!({"enabled": true, "url": wanted.url, "processed": false,
                          "group_resubscribe": false, "friendly_name": "mailroom"});
    for event in EVENTS {
        body[*event] = json!(true);
    }
    body
}

fn current(hook: &Value) -> bool {
    hook["enabled"] == true && EVENTS.iter().all(|e| hook[*e] == true)
}

pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    let all = client
        .call(
            Method::GET,
            &format!("{SETTINGS}/all"),
            Body::None,
            "listing webhooks",
        )
        .await?;
    found_in(&all["webhooks"], ("url", "id"), wanted.url, |hook| {
        current(hook) && hook["public_key"].as_str().is_some_and(|k| !k.is_empty())
    })
}

/// Turns signing on for `id`: the public key.
async fn sign(client: &Client, id: &str) -> Result<KeyFields, ManageError> {
    let path = format!("{SETTINGS}/signed/{id}");
    let signed = client
        .call(
            Method::PATCH,
            &path,
            Body::Json(json!({"enabled": true})),
            "signing a webhook",
        )
        .await?;
    Ok(field(
        "verificationKey",
        &text(&signed, "public_key", "signing a webhook")?,
    ))
}

pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    let made = client
        .call(
            Method::POST,
            SETTINGS,
            Body::Json(settings(wanted)),
            "creating a webhook",
        )
        .await?;
    let id = text(&made, "id", "creating a webhook")?;
    let key = sign(client, &id).await?;
    Ok((id, Some(key)))
}

pub async fn repair(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let path = format!("{SETTINGS}/{id}");
    client
        .call(
            Method::PATCH,
            &path,
            Body::Json(settings(wanted)),
            "updating a webhook",
        )
        .await?;
    sign(client, id).await.map(|_| ())
}

pub async fn key(client: &Client, id: &str) -> Result<Option<KeyFields>, ManageError> {
    let path = format!("{SETTINGS}/signed/{id}");
    let signed = client
        .call(Method::GET, &path, Body::None, "reading a webhook's key")
        .await?;
    match signed["public_key"].as_str().filter(|k| !k.is_empty()) {
        Some(key) => Ok(Some(field("verificationKey", key))),
        None => Ok(Some(sign(client, id).await?)),
    }
}

pub async fn remove(client: &Client, id: &str) -> Result<(), ManageError> {
    delete(client, &format!("{SETTINGS}/{id}")).await
}
