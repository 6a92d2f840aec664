//! Reads what a provider references (credentials from a Secret, CA
//! certificates from a Secret or ConfigMap) and builds its transport. Secret
//! values are only handed to the transport: never logged, never in status.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::api::EmailProvider;
use crate::api::bounces::BounceMailbox;
use crate::api::condition::Reason;
use crate::api::provider::{ApiSpec, CaBundleSource, KeyRef, SmtpSpec};
use crate::transport::Transport;
use crate::transport::api::ApiTransport;
use crate::transport::smtp::{SmtpCredentials, SmtpTransport};

/// Why a provider's transport could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    /// The condition reason: SecretNotFound, ConfigMapNotFound, InvalidSpec, TLSFailed.
    pub reason: Reason,
    /// What is missing or wrong, naming the object and key.
    pub message: String,
}

impl ResolveError {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A transport built from a provider, and the versions it was built from.
pub struct Built {
    /// The transport (not verified yet).
    pub transport: Arc<dyn Transport>,
    /// Identifies the provider generation and referenced object versions.
    pub fingerprint: String,
    /// The DNS record of its DKIM key, with `smtp.dkim`.
    pub dkim: Option<crate::api::dkim::DkimRecord>,
}

/// Builds the transport a provider names, reading its Secrets and ConfigMaps
/// in `namespace` (the provider's own, or the controller's for a
/// ClusterEmailProvider).
pub async fn build(
    client: &Client,
    provider: &EmailProvider,
    namespace: &str,
    allowed_endpoint_hosts: &[String],
) -> Result<Built, ResolveError> {
    let mut fingerprint = format!("gen={}", provider.metadata.generation.unwrap_or_default());
    let mut dkim = None;
    let transport = match (&provider.spec.smtp, &provider.spec.api) {
        (Some(smtp), _) => {
            let id = crate::api::ProviderId::from_provider(provider);
            let signer = match &smtp.dkim {
                Some(spec) => Some(dkim_signer(client, namespace, spec, &mut fingerprint).await?),
                None => None,
            };
            dkim = signer.as_ref().map(|s| s.record.clone());
            build_smtp(client, namespace, smtp, &id, signer, &mut fingerprint).await?
        }
        (None, Some(api)) => {
            if let Some(endpoint) = &api.endpoint {
                check_endpoint(endpoint, allowed_endpoint_hosts)?;
            }
            build_api(client, namespace, api, &mut fingerprint).await?
        }
        (None, None) => {
            let text = "spec: no transport is set (smtp or api)";
            return Err(ResolveError::new(Reason::InvalidSpec, text));
        }
    };
    Ok(Built {
        transport,
        fingerprint,
        dkim,
    })
}

/// An endpoint override is used only when the cluster operator allows its
/// host (`--allowed-endpoint-hosts`): otherwise a tenant could point the
/// controller, with the tenant's key, at anything it can reach inside the
/// cluster.
pub fn check_endpoint(endpoint: &str, allowed: &[String]) -> Result<(), ResolveError> {
    let field = "spec.api.endpoint";
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| ResolveError::new(Reason::InvalidSpec, format!("{field}: not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        let text = format!("{field}: the scheme must be https (or http)");
        return Err(ResolveError::new(Reason::InvalidSpec, text));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
        return Ok(());
    }
    let text = if allowed.is_empty() {
        format!(
            "{field}: endpoint overrides are off in this cluster; the cluster operator allows hosts with --allowed-endpoint-hosts"
        )
    } else {
        format!(
            "{field}: host {host:?} is not among the hosts the cluster operator allows (--allowed-endpoint-hosts)"
        )
    };
    Err(ResolveError::new(Reason::InvalidSpec, text))
}

async fn build_smtp(
    client: &Client,
    namespace: &str,
    smtp: &SmtpSpec,
    provider: &crate::api::ProviderId,
    dkim: Option<crate::transport::dkim::Signer>,
    fingerprint: &mut String,
) -> Result<Arc<dyn Transport>, ResolveError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let credentials = match &smtp.auth {
        None => None,
        Some(auth) => {
            let secret =
                get_secret(&secrets, &auth.secret_ref.name, "spec.smtp.auth.secretRef").await?;
            fingerprint.push_str(&format!(
                ",secret={}",
                secret.resource_version().unwrap_or_default()
            ));
            let username = secret_value(&secret, &auth.username_key, "spec.smtp.auth.usernameKey")?;
            let secret_value =
                secret_value(&secret, &auth.password_key, "spec.smtp.auth.passwordKey")?;
            Some(SmtpCredentials {
                mechanism: auth.mechanism,
                username,
                secret: secret_value,
            })
        }
    };
    let ca_pem = match &smtp.ca_bundle {
        None => None,
        Some(source) => {
            Some(ca_bundle(client, namespace, source, "spec.smtp.caBundle", fingerprint).await?)
        }
    };
    let mut transport = SmtpTransport::new(smtp, ca_pem.as_deref(), credentials)
        .map_err(|e| ResolveError::new(Reason::TlsFailed, format!("spec.smtp.caBundle: {e}")))?;
    if let Some(signer) = dkim {
        transport = transport.with_dkim(signer);
    }
    if let Some(mailbox) = &smtp.bounces {
        transport =
            transport.with_verp(verp(client, namespace, mailbox, provider, fingerprint).await?);
    }
    Ok(Arc::new(transport))
}

/// The DKIM signer `spec` names, its key read from its Secret.
async fn dkim_signer(
    client: &Client,
    namespace: &str,
    spec: &crate::api::dkim::DkimSpec,
    fingerprint: &mut String,
) -> Result<crate::transport::dkim::Signer, ResolveError> {
    let field = "spec.smtp.dkim.privateKeySecretRef";
    let KeyRef { name, key } = &spec.private_key_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = get_secret(&secrets, name, field).await?;
    fingerprint.push_str(&format!(
        ",dkim-secret={}",
        secret.resource_version().unwrap_or_default()
    ));
    let pem = secret_value(&secret, key, field)?;
    crate::transport::dkim::signer(spec, &pem).map_err(|e| {
        ResolveError::new(
            Reason::InvalidSpec,
            format!("{field}: Secret {name:?} key {key:?}: {e}"),
        )
    })
}

/// The envelope senders of a provider with a bounce mailbox. A Secret that
/// cannot be read does not stop sending (the mailbox's `BouncesReady` says
/// why): the plain bounce address is used, and bounces match by Message-ID.
async fn verp(
    client: &Client,
    namespace: &str,
    mailbox: &BounceMailbox,
    provider: &crate::api::ProviderId,
    fingerprint: &mut String,
) -> Result<crate::transport::smtp::Verp, ResolveError> {
    use crate::delivery::token::{BounceAddress, TokenKey};
    let address = BounceAddress::parse(&mailbox.address).ok_or_else(|| {
        ResolveError::new(
            Reason::InvalidSpec,
            "spec.smtp.bounces.address: not local@domain",
        )
    })?;
    let key = match mailbox_secret(client, namespace, mailbox).await {
        Ok(secret) => {
            fingerprint.push_str(&format!(",bounces-secret={}", secret.version));
            Some(TokenKey::derive(
                secret.token_key.as_deref(),
                secret.password.as_bytes(),
                provider,
            ))
        }
        Err(_) => {
            fingerprint.push_str(",bounces-secret=none");
            None
        }
    };
    Ok(crate::transport::smtp::Verp { address, key })
}

async fn build_api(
    client: &Client,
    namespace: &str,
    api: &ApiSpec,
    fingerprint: &mut String,
) -> Result<Arc<dyn Transport>, ResolveError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let field = "spec.api.secretRef";
    let secret = get_secret(&secrets, &api.secret_ref.name, field).await?;
    let version = secret.resource_version().unwrap_or_default();
    fingerprint.push_str(&format!(",secret={version}"));
    let key = secret_value(&secret, &api.secret_ref.key, field)?;
    let key = key.trim().to_string();
    if key.is_empty() {
        let (name, k) = (&api.secret_ref.name, &api.secret_ref.key);
        let text = format!("{field}: Secret {name:?} key {k:?} is empty");
        return Err(ResolveError::new(Reason::SecretNotFound, text));
    }
    let transport = ApiTransport::new(api, key)
        .map_err(|e| ResolveError::new(Reason::InvalidSpec, e.message))?;
    Ok(Arc::new(transport))
}

/// Reads Secret `name`; `field` names where the spec refers to it.
pub async fn get_secret(
    secrets: &Api<Secret>,
    name: &str,
    field: &str,
) -> Result<Secret, ResolveError> {
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret),
        Ok(None) => Err(ResolveError::new(
            Reason::SecretNotFound,
            format!("{field}: Secret {name:?} not found"),
        )),
        Err(e) => Err(ResolveError::new(
            Reason::SecretNotFound,
            format!("{field}: Secret {name:?} could not be read: {e}"),
        )),
    }
}

/// The UTF-8 value of `key` in `secret`.
pub fn secret_value(secret: &Secret, key: &str, field: &str) -> Result<String, ResolveError> {
    let name = secret.name_any();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })
        .ok_or_else(|| {
            ResolveError::new(
                Reason::SecretNotFound,
                format!("{field}: Secret {name:?} has no key {key:?}"),
            )
        })?;
    String::from_utf8(bytes).map_err(|_| {
        ResolveError::new(
            Reason::InvalidSpec,
            format!("{field}: Secret {name:?} key {key:?} is not UTF-8"),
        )
    })
}

/// Reads the PEM certificates `source` names; `field` is where the spec
/// names them, for errors.
pub async fn ca_bundle(
    client: &Client,
    namespace: &str,
    source: &CaBundleSource,
    field: &str,
    fingerprint: &mut String,
) -> Result<Vec<u8>, ResolveError> {
    match (&source.secret_key_ref, &source.config_map_key_ref) {
        (Some(KeyRef { name, key }), _) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let field = format!("{field}.secretKeyRef");
            let secret = get_secret(&secrets, name, &field).await?;
            fingerprint.push_str(&format!(
                ",ca-secret={}",
                secret.resource_version().unwrap_or_default()
            ));
            Ok(secret_value(&secret, key, &field)?.into_bytes())
        }
        (None, Some(KeyRef { name, key })) => {
            let field = format!("{field}.configMapKeyRef");
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let map = maps.get_opt(name).await.map_err(|e| {
                ResolveError::new(
                    Reason::ConfigMapNotFound,
                    format!("{field}: ConfigMap {name:?}: {e}"),
                )
            })?;
            let map = map.ok_or_else(|| {
                ResolveError::new(
                    Reason::ConfigMapNotFound,
                    format!("{field}: ConfigMap {name:?} not found"),
                )
            })?;
            fingerprint.push_str(&format!(
                ",ca-configmap={}",
                map.resource_version().unwrap_or_default()
            ));
            map.data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.as_bytes().to_vec())
                .ok_or_else(|| {
                    ResolveError::new(
                        Reason::ConfigMapNotFound,
                        format!("{field}: ConfigMap {name:?} has no key {key:?}"),
                    )
                })
        }
        (None, None) => Err(ResolveError::new(
            Reason::InvalidSpec,
            format!("{field}: set secretKeyRef or configMapKeyRef"),
        )),
    }
}

/// Whether a provider references the Secret or ConfigMap `name` (its
/// credentials, CA bundle or webhook key).
pub fn references(provider: &EmailProvider, kind: &str, name: &str) -> bool {
    let webhook = provider
        .spec
        .webhook
        .as_ref()
        .is_some_and(|w| kind == "Secret" && w.secret_ref.name == name);
    if let Some(api) = &provider.spec.api {
        return webhook || (kind == "Secret" && api.secret_ref.name == name);
    }
    let Some(smtp) = &provider.spec.smtp else {
        return false;
    };
    let auth = smtp
        .auth
        .as_ref()
        .is_some_and(|a| kind == "Secret" && a.secret_ref.name == name);
    let names = |c: &CaBundleSource| match kind {
        "Secret" => c.secret_key_ref.as_ref().is_some_and(|r| r.name == name),
        "ConfigMap" => c
            .config_map_key_ref
            .as_ref()
            .is_some_and(|r| r.name == name),
        _ => false,
    };
    let ca = smtp.ca_bundle.as_ref().is_some_and(names);
    let bounces = smtp.bounces.as_ref().is_some_and(|b| {
        (kind == "Secret" && b.secret_ref.name == name)
            || b.pop3.ca_bundle.as_ref().is_some_and(names)
    });
    auth || ca || bounces
}

/// The shortest `tokenKey` taken, in bytes.
pub const MIN_TOKEN_KEY_BYTES: usize = 16;

/// What the Secret holds.
#[derive(Clone)]
pub struct MailboxSecret {
    /// The mailbox user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The token key, when the Secret sets one.
    pub token_key: Option<Vec<u8>>,
    /// The Secret's resourceVersion.
    pub version: String,
}

impl std::fmt::Debug for MailboxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxSecret")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("token_key", &self.token_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Reads the bounce mailbox's Secret (`username`, `password`, optional
/// `tokenKey`), in `namespace`.
pub async fn mailbox_secret(
    client: &Client,
    namespace: &str,
    mailbox: &BounceMailbox,
) -> Result<MailboxSecret, ResolveError> {
    let field = "spec.smtp.bounces.secretRef";
    let secrets = Api::namespaced(client.clone(), namespace);
    let secret = get_secret(&secrets, &mailbox.secret_ref.name, field).await?;
    let username = secret_value(&secret, "username", field)?;
    let password = secret_value(&secret, "password", field)?;
    let token_key = match secret_value(&secret, "tokenKey", field) {
        Ok(key) if key.len() >= MIN_TOKEN_KEY_BYTES => Some(key.into_bytes()),
        Ok(_) => {
            return Err(ResolveError {
                reason: Reason::InvalidSpec,
                message: format!(
                    "{field}: Secret {:?} key \"tokenKey\" is shorter than {MIN_TOKEN_KEY_BYTES} bytes",
                    secret.name_any()
                ),
            });
        }
        Err(e) if e.reason == Reason::SecretNotFound => None,
        Err(e) => return Err(e),
    };
    Ok(MailboxSecret {
        username,
        password,
        token_key,
        version: secret.resource_version().unwrap_or_default(),
    })
}
