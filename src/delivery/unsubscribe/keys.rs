//! The unsubscribe keys, read from one Secret in the controller's namespace
//! (`current`, and during a rotation `previous`) and kept for a short while.
//! The controller makes the Secret with a random key the first time a
//! message needs one; every replica's receiver reads it to open tokens, and
//! reads it again early when a token names a key it does not hold yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use super::token::{KeyRing, SealKey, generate};

/// How long keys read from the Secret are used before it is read again.
const KEEP: Duration = Duration::from_secs(30);
/// The soonest the Secret is read again for a token of an unknown key (a
/// request for one waits until then).
const RETRY_UNKNOWN: Duration = Duration::from_secs(1);

/// Why no keys are at hand.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeysError {
    /// The controller was started without a place for the Secret.
    #[error(
        "hosted unsubscribe needs the controller's unsubscribe key Secret (--unsubscribe-key-secret, or --cluster-provider-namespace)"
    )]
    Unset,
    /// The Secret does not exist (and this side does not make it).
    #[error("the unsubscribe key Secret {0} does not exist yet")]
    Missing(String),
    /// The Secret is there but unusable.
    #[error("the unsubscribe key Secret {secret}: {why}")]
    Invalid {
        /// namespace/name.
        secret: String,
        /// What is wrong with it.
        why: String,
    },
    /// Reading or making it failed.
    #[error("reading the unsubscribe key Secret {secret}: {why}")]
    Api {
        /// namespace/name.
        secret: String,
        /// The API error.
        why: String,
    },
}

/// The Secret's name when the flag gives none.
pub const DEFAULT_SECRET: &str = "mailroom-unsubscribe";

/// Where the Secret is: the flag's `namespace/name` (a bare name is in
/// `home`), else `DEFAULT_SECRET` in `home` (the controller's namespace);
/// nowhere without either.
pub fn place(flag: Option<&str>, home: Option<&str>) -> Option<(String, String)> {
    match flag.map(|f| f.split_once('/')) {
        Some(Some((namespace, name))) => Some((namespace.to_string(), name.to_string())),
        Some(None) => Some((home?.to_string(), flag?.to_string())),
        None => Some((home?.to_string(), DEFAULT_SECRET.to_string())),
    }
}

/// The Secret's place and what was last read from it.
pub struct Keys {
    client: Client,
    secret: Option<(String, String)>,
    cached: Mutex<Option<(Instant, Arc<KeyRing>)>>,
}

impl Keys {
    /// Keys read from `secret` (`namespace/name`, or none: hosted
    /// unsubscribe is off).
    pub fn new(client: Client, secret: Option<(String, String)>) -> Self {
        Self {
            client,
            secret,
            cached: Mutex::new(None),
        }
    }

    /// Where the Secret is, as `namespace/name`.
    pub fn describe(&self) -> String {
        self.secret
            .as_ref()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .unwrap_or_default()
    }

    /// The keys, to seal with: the Secret is made with a random key when
    /// it does not exist.
    pub async fn for_sealing(&self) -> Result<Arc<KeyRing>, KeysError> {
        self.get(true, None).await
    }

    /// The keys, to open `token` with: read again (at most once a second)
    /// when the token names a key the ones at hand lack.
    pub async fn for_opening(&self, token: &str) -> Result<Arc<KeyRing>, KeysError> {
        self.get(false, Some(token)).await
    }

    async fn get(&self, create: bool, token: Option<&str>) -> Result<Arc<KeyRing>, KeysError> {
        let (namespace, name) = self.secret.as_ref().ok_or(KeysError::Unset)?;
        let mut waited = false;
        loop {
            let mut cached = self.cached.lock().await;
            if let Some((read, ring)) = cached.as_ref() {
                let unknown = token.is_some_and(|t| !ring.knows(t));
                if read.elapsed() < KEEP && !unknown {
                    return Ok(ring.clone());
                }
                // A key this side has not read yet: read again, at most
                // once a second (a forged key id costs a wait, not a read).
                if unknown && read.elapsed() < RETRY_UNKNOWN {
                    if waited {
                        return Ok(ring.clone());
                    }
                    let wait = RETRY_UNKNOWN.saturating_sub(read.elapsed());
                    drop(cached);
                    tokio::time::sleep(wait).await;
                    waited = true;
                    continue;
                }
            }
            let ring = Arc::new(self.read(namespace, name, create).await?);
            *cached = Some((Instant::now(), ring.clone()));
            return Ok(ring);
        }
    }

    async fn read(&self, namespace: &str, name: &str, create: bool) -> Result<KeyRing, KeysError> {
        let secret = format!("{namespace}/{name}");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let api_error = |e: kube::Error| KeysError::Api {
            secret: secret.clone(),
            why: e.to_string(),
        };
        let found = match api.get_opt(name).await.map_err(api_error)? {
            Some(found) => found,
            None if !create => return Err(KeysError::Missing(secret)),
            None => match make(&api, name).await {
                Ok(made) => made,
                // Another replica made it first.
                Err(kube::Error::Api(e)) if e.code == 409 => api
                    .get_opt(name)
                    .await
                    .map_err(api_error)?
                    .ok_or_else(|| KeysError::Missing(secret.clone()))?,
                Err(e) => return Err(api_error(e)),
            },
        };
        ring_of(&found).map_err(|why| KeysError::Invalid { secret, why })
    }
}

/// Makes the Secret with one random key.
async fn make(api: &Api<Secret>, name: &str) -> Result<Secret, kube::Error> {
    let material = generate()
        .ok_or_else(|| kube::Error::Service("the system's random generator failed".into()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "mailroom".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([("current".to_string(), ByteString(material))].into()),
        ..Default::default()
    };
    tracing::info!(secret = name, "made the unsubscribe key Secret");
    api.create(&PostParams::default(), &secret).await
}

/// The keys a Secret holds.
fn ring_of(secret: &Secret) -> Result<KeyRing, String> {
    let data = secret.data.as_ref();
    let key = |field: &str| data.and_then(|d| d.get(field)).map(|b| b.0.as_slice());
    let current = key("current").ok_or("it has no `current` key")?;
    let current = SealKey::new(current).map_err(|e| format!("`current`: {e}"))?;
    let previous = match key("previous") {
        Some(material) => Some(SealKey::new(material).map_err(|e| format!("`previous`: {e}"))?),
        None => None,
    };
    Ok(KeyRing { current, previous })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(current: Option<&[u8]>, previous: Option<&[u8]>) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        if let Some(c) = current {
            data.insert("current".to_string(), ByteString(c.to_vec()));
        }
        if let Some(p) = previous {
            data.insert("previous".to_string(), ByteString(p.to_vec()));
        }
        Secret {
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn the_secret_is_where_the_flag_says_else_in_the_controllers_namespace() {
        let at = |ns: &str, name: &str| Some((ns.to_string(), name.to_string()));
        assert_eq!(place(Some("ops/keys"), Some("mailroom")), at("ops", "keys"));
        assert_eq!(
            place(Some("keys"), Some("mailroom")),
            at("mailroom", "keys")
        );
        assert_eq!(
            place(None, Some("mailroom")),
            at("mailroom", DEFAULT_SECRET)
        );
        assert_eq!(place(None, None), None);
    }

    #[test]
    fn a_secret_gives_its_current_and_previous_keys_or_says_what_is_wrong() {
        let ring = ring_of(&secret(Some(&[1; 32]), Some(&[2; 32]))).expect("ring");
        assert!(ring.previous.is_some());
        let error = ring_of(&secret(None, None)).expect_err("no current");
        assert!(error.contains("no `current`"), "{error}");
        let error = ring_of(&secret(Some(&[1; 8]), None)).expect_err("short");
        assert!(error.contains("at least 32 bytes"), "{error}");
    }
}
