//! The webhook settings of the provider a URL names: which service it is,
//! and the key from the Secret in its `spec.webhook`. Providers come from a
//! watch, so a request naming a provider that does not exist costs no
//! apiserver call and leaves nothing behind; the key of an existing one is
//! cached for a few seconds so a burst of requests costs no API calls, and
//! a signature that does not match re-reads it (at most once per
//! `REFRESH_AFTER`), so a rotated key takes effect at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

use super::signature::{KeyError, WebhookKey};
use crate::api::ProviderId;
use crate::api::provider::{ApiProvider, WebhookSpec};
use crate::api::{ClusterEmailProvider, EmailProvider, EmailProviderSpec};
use crate::guarded::{self, Mark};

/// How long settings are used before they are read again.
const TTL: Duration = Duration::from_secs(10);
/// The youngest cached settings a mismatch may re-read.
pub const REFRESH_AFTER: Duration = Duration::from_secs(2);

/// What a provider's webhook requests are checked with.
pub struct Endpoint {
    /// The service.
    pub service: ApiProvider,
    /// Its key.
    pub key: WebhookKey,
    /// The timestamp tolerance in seconds.
    pub tolerance_seconds: u32,
    /// The provider's soft bounce policy.
    pub soft_bounces: crate::api::bounces::SoftBouncePolicy,
    /// The provider's unsubscribe (for the list of a bulk message).
    pub unsubscribe: Option<crate::api::deliverability::Unsubscribe>,
}

/// Why a provider's webhook cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// No such provider (or cluster providers are not served).
    #[error("no provider {0}")]
    NotFound(ProviderId),
    /// The providers have not been listed yet (just started).
    #[error("starting: the providers are not listed yet")]
    Starting,
    /// The provider sets no `spec.webhook`, or is not an API provider.
    #[error("provider {0} does not take webhooks (no spec.webhook on an api provider)")]
    NoWebhook(ProviderId),
    /// The webhook Secret does not exist.
    #[error("provider {scope}: webhook Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// The provider.
        scope: ProviderId,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// The Secret lacks the key the service needs.
    #[error("provider {scope}: webhook Secret {name} has no key {key}")]
    KeyMissing {
        /// The provider.
        scope: ProviderId,
        /// The Secret's name.
        name: String,
        /// The missing key.
        key: &'static str,
    },
    /// The key is not in the service's form.
    #[error("provider {scope}: webhook Secret {name}: {source}")]
    BadKey {
        /// The provider.
        scope: ProviderId,
        /// The Secret's name.
        name: String,
        /// What is wrong.
        source: KeyError,
    },
    /// The Kubernetes API failed.
    #[error("reading {what}: {source}")]
    Kube {
        /// What was being read.
        what: String,
        /// The error.
        source: kube::Error,
    },
}

impl Unavailable {
    /// Whether the provider does not exist or takes no webhooks (404), as
    /// opposed to a state that may pass (503).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Unavailable::NotFound(_) | Unavailable::NoWebhook(_))
    }
}

type Cached = (Instant, Result<Arc<Endpoint>, Arc<Unavailable>>);

/// The cache of providers' webhook settings.
pub struct Keys {
    client: Client,
    cluster_namespace: Option<String>,
    providers: Store<EmailProvider>,
    cluster_providers: Store<ClusterEmailProvider>,
    listed: Arc<AtomicBool>,
    cache: Mutex<HashMap<ProviderId, Cached>>,
}

/// Keys kept at most; past it, entries older than the TTL are dropped.
const CACHE_LIMIT: usize = 1024;

impl Keys {
    /// Watches the providers of `namespace` (all when `None`), and the
    /// ClusterEmailProviders when `cluster_namespace` (where their Secrets
    /// are) is set, with `client`.
    pub fn new(
        client: Client,
        namespace: Option<String>,
        cluster_namespace: Option<String>,
    ) -> Self {
        let api: Api<DeserializeGuard<EmailProvider>> = match &namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        let providers = reflect(&client, api);
        let cluster_providers = match &cluster_namespace {
            Some(_) => reflect(&client, Api::all(client.clone())),
            None => reflector::store().0,
        };
        let listed = Arc::new(AtomicBool::new(false));
        let (flag, first, second) = (listed.clone(), providers.clone(), cluster_providers.clone());
        let serves_cluster = cluster_namespace.is_some();
        tokio::spawn(async move {
            let ready = first.wait_until_ready().await.is_ok()
                && (!serves_cluster || second.wait_until_ready().await.is_ok());
            flag.store(ready, Ordering::SeqCst);
        });
        Self {
            client,
            cluster_namespace,
            providers,
            cluster_providers,
            listed,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The settings of `scope`, and how old they are. `refresh` re-reads
    /// settings older than [`REFRESH_AFTER`].
    pub async fn get(
        &self,
        scope: &ProviderId,
        refresh: bool,
    ) -> (Result<Arc<Endpoint>, Arc<Unavailable>>, Duration) {
        // Nothing is read or kept for a provider that does not exist.
        let spec = match self.spec(scope) {
            Ok(spec) => spec,
            Err(e) => return (Err(Arc::new(e)), Duration::ZERO),
        };
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(scope).cloned());
        if let Some((at, result)) = cached {
            let age = at.elapsed();
            let limit = if refresh { REFRESH_AFTER } else { TTL };
            if age < limit {
                return (result, age);
            }
        }
        let result = self.read(scope, spec).await.map(Arc::new).map_err(Arc::new);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, (at, _)| at.elapsed() < TTL);
            }
            cache.insert(scope.clone(), (Instant::now(), result.clone()));
        }
        (result, Duration::ZERO)
    }

    /// The spec of the provider `scope` names, from the watch, and the
    /// namespace of its Secrets.
    fn spec(&self, scope: &ProviderId) -> Result<(EmailProviderSpec, String), Unavailable> {
        if !self.listed.load(Ordering::SeqCst) {
            return Err(Unavailable::Starting);
        }
        match scope {
            ProviderId::Namespaced { namespace, name } => self
                .providers
                .get(&ObjectRef::new(name).within(namespace))
                .map(|p| (p.spec.clone(), namespace.clone()))
                .ok_or_else(|| Unavailable::NotFound(scope.clone())),
            ProviderId::Cluster { name } => {
                let Some(namespace) = self.cluster_namespace.clone() else {
                    return Err(Unavailable::NotFound(scope.clone()));
                };
                self.cluster_providers
                    .get(&ObjectRef::new(name))
                    .map(|p| (p.spec.provider.clone(), namespace))
                    .ok_or_else(|| Unavailable::NotFound(scope.clone()))
            }
        }
    }

    async fn read(
        &self,
        scope: &ProviderId,
        (spec, secret_namespace): (EmailProviderSpec, String),
    ) -> Result<Endpoint, Unavailable> {
        let soft_bounces = spec.soft_bounces.clone().unwrap_or_default();
        let unsubscribe = spec.unsubscribe.clone();
        let (Some(api), Some(webhook)) = (spec.api, spec.webhook) else {
            return Err(Unavailable::NoWebhook(scope.clone()));
        };
        let key = read_key(
            &self.client,
            scope,
            api.provider,
            &webhook,
            &secret_namespace,
        )
        .await?;
        Ok(Endpoint {
            service: api.provider,
            key,
            tolerance_seconds: webhook.tolerance_seconds,
            soft_bounces,
            unsubscribe,
        })
    }
}

/// A store of `api`'s objects, kept by a watch (decoded one at a time).
fn reflect<K>(client: &Client, api: Api<DeserializeGuard<K>>) -> Store<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = guarded::watch(
        client.clone(),
        api,
        watcher::Config::default(),
        Mark::Nothing,
    )
    .reflect(writer)
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    store
}

/// Reads the webhook key of `service` from the Secret `webhook` names, in
/// `namespace`.
pub async fn read_key(
    client: &Client,
    scope: &ProviderId,
    service: ApiProvider,
    webhook: &WebhookSpec,
    namespace: &str,
) -> Result<WebhookKey, Unavailable> {
    let name = &webhook.secret_ref.name;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| Unavailable::Kube {
            what: format!("Secret {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| Unavailable::SecretNotFound {
            scope: scope.clone(),
            namespace: namespace.to_string(),
            name: name.clone(),
        })?;
    let bad_key = |source| Unavailable::BadKey {
        scope: scope.clone(),
        name: name.clone(),
        source,
    };
    // Strictly UTF-8, as an API key is: a lossy decode would turn a key in
    // the wrong form into a different, working-looking one.
    let value = |key: &'static str| -> Result<String, Unavailable> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| Unavailable::KeyMissing {
                scope: scope.clone(),
                name: name.clone(),
                key,
            })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| {
            bad_key(KeyError::Malformed {
                key,
                expected: "UTF-8 text",
            })
        })
    };
    Ok(match service {
        ApiProvider::Resend => WebhookKey::svix(&value("signingSecret")?).map_err(bad_key)?,
        ApiProvider::Mailtrap => WebhookKey::mailtrap(&value("signingSecret")?),
        ApiProvider::Mailgun => WebhookKey::mailgun(&value("signingKey")?),
        ApiProvider::SendGrid => {
            WebhookKey::sendgrid(&value("verificationKey")?).map_err(bad_key)?
        }
        ApiProvider::Postmark => WebhookKey::Postmark {
            username: value("username")?,
            password: value("password")?,
        },
    })
}
