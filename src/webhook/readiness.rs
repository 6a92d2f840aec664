//! Checks a provider's `spec.webhook` when the provider is reconciled: that
//! its Secret exists and holds the service's key in the right form. The
//! result is the provider's `WebhookReady` condition, so a missing or
//! malformed key shows in `kubectl get`/`describe` and not only as refused
//! webhook requests. Sending does not depend on it.

use kube::{Client, ResourceExt};

use crate::api::EmailProvider;
use crate::api::ProviderId;
use crate::api::condition::{self, Reason, WEBHOOK_READY};
use crate::webhook::keys::{Unavailable, read_key};

/// What `WebhookReady` says.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookState {
    /// Whether webhook requests can be checked.
    pub ready: bool,
    /// The condition reason.
    pub reason: Reason,
    /// What to do, or where to register the URL.
    pub message: String,
    /// The subscription the controller registered (`webhook.register`).
    pub registered: Option<crate::api::provider::RegisteredWebhook>,
}

/// The state of `provider`'s webhook, with Secrets read from
/// `secrets_namespace`; `None` when it sets no webhook.
pub async fn check(
    client: &Client,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Result<Option<WebhookState>, kube::Error> {
    let (Some(webhook), Some(api)) = (&provider.spec.webhook, &provider.spec.api) else {
        return Ok(None);
    };
    let name = provider.name_any();
    let (scope, path) = match provider.namespace() {
        Some(namespace) => (
            ProviderId::Namespaced {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            format!("/webhooks/{namespace}/{name}"),
        ),
        None => (
            ProviderId::Cluster { name: name.clone() },
            format!("/webhooks/_cluster/{name}"),
        ),
    };
    let service = api.provider.name();
    let state = match read_key(client, &scope, api.provider, webhook, secrets_namespace).await {
        Ok(_) => WebhookState {
            ready: true,
            reason: Reason::Configured,
            message: format!(
                "the {service} webhook key in Secret {} is loaded; register https://<your host>{path} at {service}",
                webhook.secret_ref.name
            ),
            registered: None,
        },
        Err(Unavailable::Kube { source, .. }) => return Err(source),
        Err(e @ (Unavailable::SecretNotFound { .. } | Unavailable::KeyMissing { .. })) => {
            WebhookState {
                ready: false,
                reason: Reason::SecretNotFound,
                message: format!("spec.webhook.secretRef: {e}"),
                registered: None,
            }
        }
        Err(e) => WebhookState {
            ready: false,
            reason: Reason::InvalidSpec,
            message: format!("spec.webhook.secretRef: {e}"),
            registered: None,
        },
    };
    Ok(Some(state))
}

/// Sets or removes `WebhookReady` in `conditions`.
pub fn report(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    state: Option<&WebhookState>,
    generation: Option<i64>,
) {
    match state {
        Some(s) => condition::set(
            conditions,
            WEBHOOK_READY,
            s.ready,
            s.reason,
            &s.message,
            generation,
        ),
        None => conditions.retain(|c| c.type_ != WEBHOOK_READY),
    }
}
