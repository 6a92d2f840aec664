//! The unsubscribe keys, read from one Secret in the controller's namespace
//! (`current`, and during a rotation `previous`). The controller makes the
//! Secret with a random key the first time a message needs one. Each side
//! keeps the keys by watching that one Secret, so a rotation is seen as soon
//! as it is written, and a token naming a key it does not hold is refused at
//! once: a forged key id costs no wait and no read.

use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use tracing::warn;

use super::token::{KeyRing, SealKey, generate};

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

/// What the watch of the Secret last showed.
#[derive(Clone, Default)]
enum Seen {
    /// Nothing yet: the watch has not listed it.
    #[default]
    NotYet,
    /// It does not exist.
    Missing,
    /// It exists: its keys, or what is wrong with it.
    Found(Result<Arc<KeyRing>, String>),
}

impl Seen {
    /// What one event of the watch shows. `None`: it shows nothing new
    /// (a list beginning, or an event of another object).
    fn after(event: &watcher::Event<Secret>, listed: &mut bool) -> Option<Seen> {
        match event {
            watcher::Event::Init => {
                *listed = false;
                None
            }
            watcher::Event::InitApply(secret) | watcher::Event::Apply(secret) => {
                *listed = true;
                Some(Seen::Found(ring_of(secret).map(Arc::new)))
            }
            watcher::Event::InitDone if !*listed => Some(Seen::Missing),
            watcher::Event::InitDone => None,
            watcher::Event::Delete(_) => Some(Seen::Missing),
        }
    }
}

/// The background watch, stopped when the keys are dropped.
struct Watching(tokio::task::AbortHandle);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Secret's place and what its watch last showed.
pub struct Keys {
    client: Client,
    secret: Option<(String, String)>,
    seen: Arc<Mutex<Seen>>,
    watching: OnceLock<Watching>,
    /// One maker of the Secret at a time.
    making: tokio::sync::Mutex<()>,
}

impl Keys {
    /// Keys read from `secret` (`namespace/name`, or none: hosted
    /// unsubscribe is off).
    pub fn new(client: Client, secret: Option<(String, String)>) -> Self {
        Self {
            client,
            secret,
            seen: Arc::default(),
            watching: OnceLock::new(),
            making: tokio::sync::Mutex::new(()),
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
        self.get(true).await
    }

    /// The keys, to open a token with. A token of a key they lack does not
    /// open: the watch has shown every key the Secret holds.
    pub async fn for_opening(&self) -> Result<Arc<KeyRing>, KeysError> {
        self.get(false).await
    }

    async fn get(&self, create: bool) -> Result<Arc<KeyRing>, KeysError> {
        let (namespace, name) = self.secret.as_ref().ok_or(KeysError::Unset)?;
        self.watch(namespace, name);
        let secret = || format!("{namespace}/{name}");
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match seen {
            Seen::Found(Ok(ring)) => return Ok(ring),
            Seen::Found(Err(why)) => {
                return Err(KeysError::Invalid {
                    secret: secret(),
                    why,
                });
            }
            Seen::Missing if !create => return Err(KeysError::Missing(secret())),
            Seen::Missing | Seen::NotYet => {}
        }
        // Not listed yet, or to be made: read it (and make it) now.
        let _making = self.making.lock().await;
        let ring = Arc::new(self.read(namespace, name, create).await?);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*seen, Seen::Found(_)) {
            *seen = Seen::Found(Ok(ring.clone()));
        }
        Ok(ring)
    }

    /// Starts the watch of the Secret, once.
    fn watch(&self, namespace: &str, name: &str) {
        self.watching.get_or_init(|| {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let seen = self.seen.clone();
            let secret = format!("{namespace}/{name}");
            let task = tokio::spawn(async move {
                let events = watcher(api, config).default_backoff();
                futures::pin_mut!(events);
                let mut listed = false;
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            if let Some(now) = Seen::after(&event, &mut listed) {
                                *seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
                            }
                        }
                        // Retried with backoff; the keys last seen stay.
                        Err(e) => warn!(%secret, error = %e, "watching the unsubscribe key Secret"),
                    }
                }
            });
            Watching(task.abort_handle())
        });
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

    fn shown(events: &[watcher::Event<Secret>]) -> Vec<&'static str> {
        let mut listed = false;
        events
            .iter()
            .filter_map(|e| Seen::after(e, &mut listed))
            .map(|seen| match seen {
                Seen::NotYet => "not yet",
                Seen::Missing => "missing",
                Seen::Found(Ok(_)) => "keys",
                Seen::Found(Err(_)) => "invalid",
            })
            .collect()
    }

    #[test]
    fn the_watch_shows_the_keys_as_the_secret_comes_changes_and_goes() {
        let good = || secret(Some(&[1; 32]), None);
        let bad = || secret(Some(&[1; 8]), None);
        use watcher::Event::*;
        // Listed: absent, then made, broken, mended, deleted.
        assert_eq!(
            shown(&[
                Init,
                InitDone,
                Apply(good()),
                Apply(bad()),
                Apply(good()),
                Delete(good())
            ]),
            ["missing", "keys", "invalid", "keys", "missing"]
        );
        // A relist that finds it shows it once, and its end nothing more.
        assert_eq!(shown(&[Init, InitApply(good()), InitDone]), ["keys"]);
        // A relist after it was deleted unseen: missing.
        assert_eq!(
            shown(&[Init, InitApply(good()), InitDone, Init, InitDone]),
            ["keys", "missing"]
        );
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
