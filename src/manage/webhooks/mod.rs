//! A provider's webhook subscription at its service: find it (by the URL
//! mailroom registers, so a subscription made before a crash is found, not
//! made twice), create it, repair it (events, enabled, URL, credentials),
//! read its key again, remove it. One module per service, each calling the
//! endpoints its reference documents; the events asked for are the ones
//! `webhook::payload` reads.

mod mailgun;
mod mailtrap;
mod postmark;
mod resend;
mod sendgrid;

use std::collections::BTreeMap;

use super::client::{Client, ManageError};
use crate::api::provider::{ApiProvider, ApiSpec};

/// The fields of the webhook key Secret, as `webhook::keys` reads them.
pub type KeyFields = BTreeMap<String, String>;

/// What mailroom wants at the service.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// Where events go.
    pub url: &'a str,
    /// The provider's API settings (stream, domain, region).
    pub spec: &'a ApiSpec,
    /// Postmark: the basic auth credentials the subscription sends.
    pub basic_auth: Option<(&'a str, &'a str)>,
}

/// A subscription found at the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its id.
    pub id: String,
    /// Whether it is enabled with the events mailroom reads.
    pub current: bool,
}

/// The subscription to `wanted.url`, if the service has one.
pub async fn find(client: &Client, wanted: &Wanted<'_>) -> Result<Option<Found>, ManageError> {
    match client.service() {
        ApiProvider::Resend => resend::find(client, wanted).await,
        ApiProvider::Mailtrap => mailtrap::find(client, wanted).await,
        ApiProvider::Postmark => postmark::find(client, wanted).await,
        ApiProvider::Mailgun => mailgun::find(client, wanted).await,
        ApiProvider::SendGrid => sendgrid::find(client, wanted).await,
    }
}

/// Creates the subscription: its id, and the key when the service gives
/// one (Resend, Mailtrap, SendGrid, Mailgun's account key).
pub async fn create(
    client: &Client,
    wanted: &Wanted<'_>,
) -> Result<(String, Option<KeyFields>), ManageError> {
    match client.service() {
        ApiProvider::Resend => resend::create(client, wanted).await,
        ApiProvider::Mailtrap => mailtrap::create(client, wanted).await,
        ApiProvider::Postmark => postmark::create(client, wanted).await,
        ApiProvider::Mailgun => mailgun::create(client, wanted).await,
        ApiProvider::SendGrid => sendgrid::create(client, wanted).await,
    }
}

/// Puts subscription `id` back as wanted (events, enabled, credentials).
pub async fn repair(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    match client.service() {
        ApiProvider::Resend => resend::repair(client, wanted, id).await,
        ApiProvider::Mailtrap => mailtrap::repair(client, wanted, id).await,
        ApiProvider::Postmark => postmark::repair(client, wanted, id).await,
        ApiProvider::Mailgun => mailgun::repair(client, wanted, id).await,
        ApiProvider::SendGrid => sendgrid::repair(client, wanted, id).await,
    }
}

/// The key of subscription `id`, read again: `None` when the service
/// shows it only once (Mailtrap) or mailroom makes it (Postmark).
pub async fn key(
    client: &Client,
    wanted: &Wanted<'_>,
    id: &str,
) -> Result<Option<KeyFields>, ManageError> {
    match client.service() {
        ApiProvider::Resend => resend::key(client, id).await,
        ApiProvider::SendGrid => sendgrid::key(client, id).await,
        ApiProvider::Mailgun => mailgun::key(client).await,
        ApiProvider::Mailtrap | ApiProvider::Postmark => {
            let _ = wanted;
            Ok(None)
        }
    }
}

/// Removes subscription `id`; one already gone is fine.
pub async fn remove(client: &Client, wanted: &Wanted<'_>, id: &str) -> Result<(), ManageError> {
    let removed = match client.service() {
        ApiProvider::Resend => resend::remove(client, id).await,
        ApiProvider::Mailtrap => mailtrap::remove(client, id).await,
        ApiProvider::Postmark => postmark::remove(client, id).await,
        ApiProvider::Mailgun => mailgun::remove(client, wanted, id).await,
        ApiProvider::SendGrid => sendgrid::remove(client, id).await,
    };
    match removed {
        Err(ManageError::Refused { status: 404, .. }) => Ok(()),
        // Postmark answers an unknown webhook with 422, code 1600.
        Err(ManageError::Refused {
            status: 422,
            message,
            ..
        }) if client.service() == ApiProvider::Postmark && message.contains("not found") => Ok(()),
        other => other,
    }
}

/// The subscription in `list` (an array) whose `url_field` is `url`: its
/// `id_field`, and whether `current` holds for it.
fn found_in(
    list: &serde_json::Value,
    (url_field, id_field): (&str, &str),
    url: &str,
    current: impl Fn(&serde_json::Value) -> bool,
) -> Result<Option<Found>, ManageError> {
    let found = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|hook| hook[url_field] == url);
    found
        .map(|hook| {
            Ok(Found {
                id: text(hook, id_field, "listing webhooks")?,
                current: current(hook),
            })
        })
        .transpose()
}

/// `DELETE path`.
async fn delete(client: &Client, path: &str) -> Result<(), ManageError> {
    client
        .call(
            reqwest::Method::DELETE,
            path,
            super::client::Body::None,
            "deleting a webhook",
        )
        .await
        .map(|_| ())
}

/// One key field.
fn field(name: &str, value: &str) -> KeyFields {
    [(name.to_string(), value.to_string())].into()
}

/// `value`'s string `key`, or the service refused to say it.
fn text(value: &serde_json::Value, key: &str, what: &str) -> Result<String, ManageError> {
    match &value[key] {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(ManageError::Unavailable {
            service: "the service",
            what: what.to_string(),
            message: format!("its answer has no {key}"),
        }),
    }
}
