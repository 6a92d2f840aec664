//! `webhook.register`: the provider's webhook subscription at its service,
//! kept by the controller. Each provider reconcile finds the subscription
//! by the URL mailroom registers (so a leader that died after creating one
//! finds it, and never makes two), creates it or puts it back (deleted or
//! changed at the service: drift), and writes the key the service gave
//! into the provider's webhook Secret, which the controller creates and
//! owns. A finalizer holds the provider until the subscription is removed
//! at the service; turning `register` off removes it too.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::credentials;
use super::error::Error;
use crate::api::condition::Reason;
use crate::api::provider::RegisteredWebhook;
use crate::api::{ClusterEmailProvider, EmailProvider, ProviderId};
use crate::manage::client::{Client, ManageError};
use crate::manage::webhooks::{self, KeyFields, Wanted};

/// The finalizer that holds a provider until its subscription is removed.
pub const FINALIZER: &str = "mailroom.dev/webhook-registration";
/// The annotation naming the provider a webhook Secret belongs to.
pub const SECRET_OF: &str = "mailroom.dev/webhook-of";
/// How long a deleted provider waits for its subscription's removal before
/// it is let go (with a Warning Event naming the subscription to remove).
const REMOVAL_PATIENCE: Duration = Duration::from_secs(600);
/// How soon a removal that failed for a moment is tried again.
const REMOVAL_RETRY: Duration = Duration::from_secs(15);

/// What registration did.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// The subscription is at the service, as wanted, and its key in the
    /// Secret; `repaired` says what was put back, if anything.
    Registered {
        /// The subscription.
        webhook: RegisteredWebhook,
        /// What drift was repaired, for the message and an Event.
        repaired: Option<String>,
    },
    /// It could not be done: why, and the status to keep.
    Failed {
        /// The condition message.
        message: String,
        /// The subscription last registered, if any.
        webhook: Option<RegisteredWebhook>,
    },
}

/// Where the provider's webhook is posted, from the public URL.
fn url_of(public: &str, id: &ProviderId) -> String {
    let public = public.trim_end_matches('/');
    match id {
        ProviderId::Namespaced { namespace, name } => {
            format!("{public}/webhooks/{namespace}/{name}")
        }
        ProviderId::Cluster { name } => format!("{public}/webhooks/_cluster/{name}"),
    }
}

/// Registers `provider`'s webhook when it asks for it: `None` when it does
/// not (and, if it did before, the subscription is removed).
pub async fn ensure(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Result<Option<Registration>, Error> {
    let registering = provider.spec.webhook.as_ref().is_some_and(|w| w.register);
    let (Some(api), true) = (provider.spec.api.as_ref(), registering) else {
        if has_finalizer(provider) {
            unregister(ctx, provider, secrets_namespace).await?;
        }
        return Ok(None);
    };
    let last = provider.status.as_ref().and_then(|s| s.webhook.clone());
    let failed = |message: String| {
        Ok(Some(Registration::Failed {
            message,
            webhook: last.clone(),
        }))
    };
    let Some(public) = ctx.settings.webhook_public_url.as_deref() else {
        return failed("webhook.register needs the receiver's public URL: start the controller with --webhook-public-url https://<your host>".into());
    };
    if !public.starts_with("https://") {
        return failed(format!(
            "--webhook-public-url {public:?} is not an https URL; the services post webhooks over https only"
        ));
    }
    let id = ProviderId::from_provider(provider);
    let url = url_of(public, &id);
    if !has_finalizer(provider) {
        add_finalizer(ctx, provider).await?;
    }
    let client = match client_of(ctx, provider, secrets_namespace).await {
        Ok(client) => client,
        Err(message) => return failed(message),
    };
    let secret = match own_secret(ctx, provider, secrets_namespace).await? {
        Ok(secret) => secret,
        Err(message) => return failed(message),
    };
    let held = secret.as_ref().map(fields_of).unwrap_or_default();
    let service = client.service();
    // Postmark signs nothing: the subscription carries credentials mailroom
    // makes, kept in the Secret.
    let postmark = service == crate::api::provider::ApiProvider::Postmark;
    let credentials = match (held.get("username"), held.get("password")) {
        (Some(u), Some(p)) if postmark => Some((u.clone(), p.clone())),
        _ if postmark => Some(("mailroom".to_string(), random_password())),
        _ => None,
    };
    let wanted = Wanted {
        url: &url,
        spec: api,
        basic_auth: credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
    };
    let made = match register(&client, &wanted, &held, last.is_some()).await {
        Ok(made) => made,
        Err(e) => return failed(describe(&e)),
    };
    let mut key = made.key.unwrap_or_default();
    if let Some((username, password)) = credentials {
        key.insert("username".into(), username);
        key.insert("password".into(), password);
    }
    if !key.is_empty() && key != held {
        write_secret(ctx, provider, secrets_namespace, secret.is_some(), &key).await?;
    }
    let webhook = RegisteredWebhook {
        id: made.id,
        url,
        registered_at: match (&last, &made.repaired) {
            (Some(last), None) if last.id == made.id_before => last.registered_at.clone(),
            _ => Time(jiff::Timestamp::now()),
        },
    };
    if let Some(what) = &made.repaired {
        info!(provider = provider.name_any(), repaired = %what, "webhook subscription repaired");
        publish(ctx, provider, EventType::Warning, "WebhookDrifted", what).await;
    }
    Ok(Some(Registration::Registered {
        webhook,
        repaired: made.repaired,
    }))
}

/// What one registration pass did at the service.
struct Made {
    id: String,
    /// The id found before any change (to keep `registeredAt`).
    id_before: String,
    key: Option<KeyFields>,
    repaired: Option<String>,
}

/// Finds, creates or repairs the subscription; reads its key again when
/// the Secret lacks it.
async fn register(
    client: &Client,
    wanted: &Wanted<'_>,
    held: &KeyFields,
    registered_before: bool,
) -> Result<Made, ManageError> {
    let found = webhooks::find(client, wanted).await?;
    let Some(found) = found else {
        let (id, key) = webhooks::create(client, wanted).await?;
        let repaired = registered_before.then(|| {
            format!(
                "the subscription to {} was gone at the service; created again",
                wanted.url
            )
        });
        return Ok(Made {
            id_before: id.clone(),
            id,
            key,
            repaired,
        });
    };
    let mut repaired = None;
    if !found.current {
        webhooks::repair(client, wanted, &found.id).await?;
        repaired = Some(format!(
            "the subscription to {} was changed or disabled at the service; its events and credentials were put back",
            wanted.url
        ));
    }
    let needs_key = !has_key(client.service(), held);
    if !needs_key {
        return Ok(Made {
            id_before: found.id.clone(),
            id: found.id,
            key: None,
            repaired,
        });
    }
    match webhooks::key(client, wanted, &found.id).await? {
        Some(key) => Ok(Made {
            id_before: found.id.clone(),
            id: found.id,
            key: Some(key),
            repaired,
        }),
        // Postmark: the credentials are mailroom's, put back by a repair.
        None if client.service() == crate::api::provider::ApiProvider::Postmark => {
            webhooks::repair(client, wanted, &found.id).await?;
            Ok(Made {
                id_before: found.id.clone(),
                id: found.id,
                key: None,
                repaired,
            })
        }
        // Mailtrap shows the key only once: a subscription whose key is
        // lost is replaced.
        None => {
            webhooks::remove(client, wanted, &found.id).await?;
            let (id, key) = webhooks::create(client, wanted).await?;
            Ok(Made {
                id_before: found.id,
                id,
                key,
                repaired: Some(format!(
                    "the key of the subscription to {} was lost; the subscription was replaced",
                    wanted.url
                )),
            })
        }
    }
}

/// Whether `held` has the key fields `webhook::keys` reads for `service`.
fn has_key(service: crate::api::provider::ApiProvider, held: &KeyFields) -> bool {
    use crate::api::provider::ApiProvider;
    let fields: &[&str] = match service {
        ApiProvider::Resend | ApiProvider::Mailtrap => &["signingSecret"],
        ApiProvider::Mailgun => &["signingKey"],
        ApiProvider::SendGrid => &["verificationKey"],
        ApiProvider::Postmark => &["username", "password"],
    };
    fields
        .iter()
        .all(|f| held.get(*f).is_some_and(|v| !v.is_empty()))
}

/// The condition message for a failed call.
fn describe(e: &ManageError) -> String {
    match e {
        ManageError::Denied { .. } => format!(
            "{e}: give the provider an API key allowed to manage webhooks (see docs/providers.md), or register the webhook by hand and turn webhook.register off; sending is not affected"
        ),
        _ => e.to_string(),
    }
}

/// The management client, with the provider's API key.
pub(super) async fn client_of(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Result<Client, String> {
    let api = provider
        .spec
        .api
        .as_ref()
        .ok_or("webhook.register needs spec.api")?;
    if let Some(endpoint) = &api.endpoint {
        credentials::check_endpoint(endpoint, &ctx.settings.allowed_endpoint_hosts)
            .map_err(|e| e.message)?;
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), secrets_namespace);
    let field = "spec.api.secretRef";
    let secret = credentials::get_secret(&secrets, &api.secret_ref.name, field)
        .await
        .map_err(|e| e.message)?;
    let key =
        credentials::secret_value(&secret, &api.secret_ref.key, field).map_err(|e| e.message)?;
    Client::new(api, key.trim().to_string()).map_err(|e| e.to_string())
}

/// The webhook Secret, if it exists and is this provider's; an error
/// message when it exists and is someone else's (never written then).
async fn own_secret(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Result<Result<Option<Secret>, String>, Error> {
    let Some(webhook) = &provider.spec.webhook else {
        return Ok(Ok(None));
    };
    let name = &webhook.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), secrets_namespace);
    let found = secrets.get_opt(name).await.map_err(Error::Kube)?;
    Ok(match found {
        None => Ok(None),
        Some(secret) if secret.annotations().get(SECRET_OF) == Some(&owner_of(provider)) => {
            Ok(Some(secret))
        }
        Some(_) => Err(format!(
            "spec.webhook.secretRef: Secret {name:?} exists and is not this provider's webhook Secret; with webhook.register the controller makes and owns it, so name one that does not exist"
        )),
    })
}

/// How a webhook Secret names its provider.
fn owner_of(provider: &EmailProvider) -> String {
    match provider.namespace() {
        Some(namespace) => format!("EmailProvider/{namespace}/{}", provider.name_any()),
        None => format!("ClusterEmailProvider/{}", provider.name_any()),
    }
}

fn fields_of(secret: &Secret) -> KeyFields {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// Creates the webhook Secret, or replaces its data, with `key`.
async fn write_secret(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
    exists: bool,
    key: &KeyFields,
) -> Result<(), Error> {
    let Some(webhook) = &provider.spec.webhook else {
        return Ok(());
    };
    let name = &webhook.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), secrets_namespace);
    let data: std::collections::BTreeMap<String, ByteString> = key
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    if exists {
        let patch = json!({"data": data});
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        return Ok(());
    }
    let kind = if provider.namespace().is_some() {
        "EmailProvider"
    } else {
        "ClusterEmailProvider"
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "mailroom".to_string(),
                )]
                .into(),
            ),
            annotations: Some([(SECRET_OF.to_string(), owner_of(provider))].into()),
            owner_references: provider.uid().map(|uid| {
                vec![OwnerReference {
                    api_version: "mailroom.dev/v1alpha1".into(),
                    kind: kind.into(),
                    name: provider.name_any(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

fn has_finalizer(provider: &EmailProvider) -> bool {
    provider.finalizers().iter().any(|f| f == FINALIZER)
}

/// The finalizers as a JSON Patch guarded by the list it replaces.
fn finalizer_patch(provider: &EmailProvider, add: bool) -> json_patch::Patch {
    let current: Vec<String> = provider.finalizers().to_vec();
    let mut next = current.clone();
    next.retain(|f| f != FINALIZER);
    if add {
        next.push(FINALIZER.to_string());
    }
    let test = if provider.meta().finalizers.is_some() {
        json!({"op": "test", "path": "/metadata/finalizers", "value": current})
    } else {
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": provider.resource_version()})
    };
    serde_json::from_value(
        json!([test, {"op": "add", "path": "/metadata/finalizers", "value": next}]),
    )
    .unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

async fn patch_finalizers(ctx: &Context, provider: &EmailProvider, add: bool) -> Result<(), Error> {
    let patch = Patch::<()>::Json(finalizer_patch(provider, add));
    let params = PatchParams::default();
    let name = provider.name_any();
    let done = match provider.namespace() {
        Some(namespace) => Api::<EmailProvider>::namespaced(ctx.client.clone(), &namespace)
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
        None => Api::<ClusterEmailProvider>::all(ctx.client.clone())
            .patch(&name, &params, &patch)
            .await
            .map(|_| ()),
    };
    match done {
        // Gone, or changed since read: the next reconcile sees it again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 || e.code == 409 => Ok(()),
        other => other.map_err(Error::Kube),
    }
}

async fn add_finalizer(ctx: &Context, provider: &EmailProvider) -> Result<(), Error> {
    patch_finalizers(ctx, provider, true).await
}

/// Removes the subscription at the service and then the finalizer; a
/// provider being deleted is let go after `REMOVAL_PATIENCE` even when the
/// service cannot be told (a Warning Event names what to remove by hand).
/// `Some(delay)` when it should be tried again.
pub async fn unregister(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Result<Option<Duration>, Error> {
    if !has_finalizer(provider) {
        return Ok(None);
    }
    let last = provider.status.as_ref().and_then(|s| s.webhook.clone());
    let removed = match (&last, provider.spec.api.as_ref()) {
        (Some(webhook), Some(api)) => match client_of(ctx, provider, secrets_namespace).await {
            Ok(client) => {
                let wanted = Wanted {
                    url: &webhook.url,
                    spec: api,
                    basic_auth: None,
                };
                webhooks::remove(&client, &wanted, &webhook.id)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(message) => Err(message),
        },
        _ => Ok(()),
    };
    if let Err(why) = removed {
        let deleting_since = provider
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| jiff::Timestamp::now().duration_since(t.0));
        let patience = jiff::SignedDuration::try_from(REMOVAL_PATIENCE).unwrap_or_default();
        if deleting_since.is_none_or(|waited| waited < patience) {
            warn!(provider = provider.name_any(), error = %why, "removing the webhook subscription failed; trying again");
            return Ok(Some(REMOVAL_RETRY));
        }
        let webhook = last
            .as_ref()
            .map(|w| format!("{} ({})", w.url, w.id))
            .unwrap_or_default();
        let note = format!(
            "the webhook subscription {webhook} could not be removed at the service ({why}); remove it there by hand"
        );
        publish(
            ctx,
            provider,
            EventType::Warning,
            "WebhookNotRemoved",
            &note,
        )
        .await;
    }
    patch_finalizers(ctx, provider, false).await?;
    Ok(None)
}

async fn publish(
    ctx: &Context,
    provider: &EmailProvider,
    kind: EventType,
    reason: &str,
    note: &str,
) {
    let reference = provider.object_ref(&());
    ctx.events
        .publish(&reference, kind, reason, "Register", note)
        .await;
}

/// 32 random hex characters, for Postmark's basic auth password.
fn random_password() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        bytes = fastrand::u128(..).to_be_bytes();
    }
    hex::encode(bytes)
}

/// The WebhookReady state a registration gives, beside the key check.
pub fn state(
    registration: &Registration,
    service: &str,
    keyed: Option<crate::webhook::readiness::WebhookState>,
) -> crate::webhook::readiness::WebhookState {
    use crate::webhook::readiness::WebhookState;
    match registration {
        Registration::Failed { message, webhook } => WebhookState {
            ready: false,
            reason: Reason::RegistrationFailed,
            message: message.clone(),
            registered: webhook.clone(),
        },
        Registration::Registered { webhook, repaired } => match keyed {
            Some(keyed) if !keyed.ready => WebhookState {
                registered: Some(webhook.clone()),
                ..keyed
            },
            _ => WebhookState {
                ready: true,
                reason: Reason::Registered,
                message: format!(
                    "registered at {service} ({}), events posted to {}{}",
                    webhook.id,
                    webhook.url,
                    repaired
                        .as_ref()
                        .map(|r| format!("; {r}"))
                        .unwrap_or_default()
                ),
                registered: Some(webhook.clone()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_url_is_the_receivers_path_under_the_public_url() {
        let id = ProviderId::Namespaced {
            namespace: "shop".into(),
            name: "api".into(),
        };
        assert_eq!(
            url_of("https://mail.example.com/", &id),
            "https://mail.example.com/webhooks/shop/api"
        );
        let cluster = ProviderId::Cluster {
            name: "shared".into(),
        };
        assert_eq!(
            url_of("https://mail.example.com/mr", &cluster),
            "https://mail.example.com/mr/webhooks/_cluster/shared"
        );
    }

    #[test]
    fn a_secret_has_the_key_when_every_field_of_the_service_is_there() {
        use crate::api::provider::ApiProvider;
        let held: KeyFields = [("username".to_string(), "u".to_string())].into();
        assert!(!has_key(ApiProvider::Postmark, &held));
        let held: KeyFields = [("signingSecret".to_string(), "whsec_x".to_string())].into();
        assert!(has_key(ApiProvider::Resend, &held));
        assert!(!has_key(ApiProvider::SendGrid, &held));
        assert_eq!(random_password().len(), 32);
    }

    #[test]
    fn the_finalizer_patch_is_guarded_by_the_list_it_replaces() {
        let provider: EmailProvider = serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
            "metadata": {"name": "p", "namespace": "n", "resourceVersion": "7", "finalizers": ["other"]},
            "spec": {"api": {"provider": "Resend", "secretRef": {"name": "k"}}}}))
        .expect("provider");
        let patch = serde_json::to_value(finalizer_patch(&provider, true)).expect("json");
        assert_eq!(
            patch,
            json!([{"op": "test", "path": "/metadata/finalizers", "value": ["other"]},
                   {"op": "add", "path": "/metadata/finalizers", "value": ["other", FINALIZER]}])
        );
    }
}
