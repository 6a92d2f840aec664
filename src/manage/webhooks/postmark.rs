//! Postmark, per message stream with the server token: `GET
//! /webhooks?MessageStream=`, `POST /webhooks` (`Url`, `MessageStream`,
//! `HttpAuth`, `Triggers`), `PUT /webhooks/{id}`, `DELETE /webhooks/{id}`.
//! Postmark signs nothing: the subscription sends basic auth credentials
//! mailroom makes, and they are the key.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Found, KeyFields, Wanted, delete, found_in, text};
use crate::manage::client::{Body, Client, ManageError};

fn message_stream(wanted: &Wanted<'_>) -> String {
    wanted
        .spec
        .postmark
        .as_ref()
        .map(|p| p.message_stream.clone())
        .unwrap_or_else(|| "outbound".into())
}

fn triggers() -> Value {
    json!({"Open": {"Enabled": true, "PostFirstOpenOnly": false}, "Click": {"Enabled": true},
           "Delivery": {"Enabled": true}, "Bounce": {"Enabled": true, "IncludeContent": false},
           "SpamComplaint": {"Enabled": true, "IncludeContent": false},
           "SubscriptionChange": {"Enabled": true}})
}

fn auth(wanted: &Wanted<'_>) -> Value {
    let (username, password) = wanted.basic_auth.unwrap_or_default();
    json!({"Username": username, "Password": password})
}

fn current(hook: &Value, wanted: &Wanted<'_>) -> bool {
    let on = [
        "Open",
        "Click",
        "Delivery",
        "Bounce",
        "SpamComplaint",
        "SubscriptionChange",
    ]
    .iter()
    .all(|t| hook["Triggers"][t]["Enabled"] == true);
    on && hook["HttpAuth"] == auth(wanted)
}

pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    let stream = message_stream(wanted);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("MessageStream", &stream)
        .finish();
    let list = client
        .call(
            Method::GET,
            &format!("/webhooks?{query}"),
            Body::None,
            "listing webhooks",
        )
        .await?;
    found_in(&list["Webhooks"], ("Url", "ID"), wanted.url, |hook| {
        current(hook, wanted)
    })
}

pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    let body = json!({"Url": wanted.url, "MessageStream": message_stream(wanted),
                      "HttpAuth": auth(wanted), "Triggers": triggers()});
    let made = client
        .call(
            Method::POST,
            "/webhooks",
            Body::Json(body),
            "creating a webhook",
        )
        .await?;
    Ok((text(&made, "ID", "creating a webhook")?, None))
}

pub async fn repair(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let body = json!({"Url": wanted.url, "HttpAuth": auth(wanted), "Triggers": triggers()});
    let path = format!("/webhooks/{id}");
    client
        .call(Method::PUT, &path, Body::Json(body), "updating a webhook")
        .await
        .map(|_| ())
}

pub async fn remove(client: &Client, id: &str) -> Result<(), ManageError> {
    delete(client, &format!("/webhooks/{id}")).await
}
