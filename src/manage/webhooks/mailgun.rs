//! Mailgun, per sending domain: `GET /v3/domains/{domain}/webhooks` (event
//! type to URLs), `POST` and `PUT /v4/domains/{domain}/webhooks` (`url`,
//! `event_types` repeated), `DELETE /v4/domains/{domain}/webhooks?url=`. A
//! subscription's id is its URL. The key is the account's HTTP webhook
//! signing key, `GET /v5/accounts/http_signing_key`.

use reqwest::Method;
use serde_json::Value;

use super::{Found, KeyFields, Wanted, field, text};
use crate::manage::client::{Body, Client, ManageError};

/// The event types `webhook::payload` reads.
const EVENTS: &[&str] = &[
    "delivered",
    "permanent_fail",
    "temporary_fail",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
];

fn domain(wanted: &Wanted<'_>) -> String {
    let domain = wanted
        .spec
        .mailgun
        .as_ref()
        .map(|m| m.domain.clone())
        .unwrap_or_default();
    form_urlencoded::byte_serialize(domain.as_bytes()).collect()
}

fn form(wanted: &Wanted<'_>) -> Vec<(String, String)> {
    let mut fields = vec![("url".to_string(), wanted.url.to_string())];
    fields.extend(
        EVENTS
            .iter()
            .map(|e| ("event_types".to_string(), e.to_string())),
    );
    fields
}

pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    let path = format!("/v3/domains/{}/webhooks", domain(wanted));
    let all = client
        .call(Method::GET, &path, Body::None, "listing webhooks")
        .await?;
    let has = |event: &str| {
        all["webhooks"][event]["urls"]
            .as_array()
            .is_some_and(|urls| urls.iter().any(|u| u == wanted.url))
    };
    let any = all["webhooks"]
        .as_object()
        .is_some_and(|types| types.keys().any(|t| has(t)));
    Ok(any.then(|| Found {
        id: wanted.url.to_string(),
        current: EVENTS.iter().all(|e| has(e)),
    }))
}

pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    let path = format!("/v4/domains/{}/webhooks", domain(wanted));
    client
        .call(
            Method::POST,
            &path,
            Body::Form(form(wanted)),
            "creating a webhook",
        )
        .await?;
    Ok((wanted.url.to_string(), key(client).await?))
}

pub async fn repair(client: &Client, wanted: &Wanted<'_>, _id: &str) -> Result<(), ManageError> {
    let path = format!("/v4/domains/{}/webhooks", domain(wanted));
    client
        .call(
            Method::PUT,
            &path,
            Body::Form(form(wanted)),
            "updating a webhook",
        )
        .await
        .map(|_| ())
}

pub async fn key(client: &Client) -> Result<Option<KeyFields>, ManageError> {
    let answer: Value = client
        .call(
            Method::GET,
            "/v5/accounts/http_signing_key",
            Body::None,
            "reading the HTTP webhook signing key",
        )
        .await?;
    let key = text(&answer, "http_signing_key", "reading the signing key")?;
    Ok(Some(field("signingKey", &key)))
}

pub async fn remove(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", id)
        .finish();
    let path = format!("/v4/domains/{}/webhooks?{query}", domain(wanted));
    client
        .call(Method::DELETE, &path, Body::None, "deleting a webhook")
        .await
        .map(|_| ())
}
