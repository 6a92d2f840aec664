//! What every reconcile shares: the kube client, the registry of verified
//! transports, the event recorder and the controller's settings.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::Client;
use kube::runtime::reflector::Store;

use super::shared::Ready;
use crate::api::{EmailMessageStatus, EmailProvider, ProviderId};
use crate::transport::Transport;

/// A transport that passed verification, and what it was built from.
#[derive(Clone)]
pub struct Verified {
    /// The transport, shared by every message of the provider.
    pub transport: Arc<dyn Transport>,
    /// The provider generation and Secret/ConfigMap versions it was built from.
    pub fingerprint: String,
    /// When the server last accepted it.
    pub verified_at: std::time::Instant,
    /// The Ready reason and message that verification earned.
    pub verdict: (crate::api::condition::Reason, String),
}

/// Verified transports by provider. A provider is in here exactly while its
/// Ready condition is True, so messages send only through verified transports.
#[derive(Default)]
pub struct Transports {
    inner: RwLock<HashMap<ProviderId, Verified>>,
    rejected: RwLock<HashMap<ProviderId, (String, String)>>,
}

impl Transports {
    /// The verified transport of a provider.
    pub fn get(&self, key: &ProviderId) -> Option<Verified> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Records a verified transport, replacing the previous one (whose pooled
    /// connections close when the last in-flight send drops it).
    pub fn insert(&self, key: ProviderId, verified: Verified) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, verified);
    }

    /// Forgets the transport built from `fingerprint`, unless it was replaced
    /// meanwhile. Returns whether it was removed.
    pub fn withdraw(&self, key: &ProviderId, fingerprint: &str) -> bool {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if map.get(key).is_some_and(|v| v.fingerprint == fingerprint) {
            map.remove(key);
            true
        } else {
            false
        }
    }

    /// Remembers that a send was refused for the credentials built into
    /// `fingerprint`. For services that cannot check credentials without
    /// sending, this keeps the provider AuthFailed until its spec or Secret
    /// changes, instead of trying the same key again and again.
    pub fn reject(&self, key: ProviderId, fingerprint: String, message: String) {
        let mut map = self.rejected.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key, (fingerprint, message));
    }

    /// Why the credentials of `fingerprint` were refused, if they were.
    pub fn rejection(&self, key: &ProviderId, fingerprint: &str) -> Option<String> {
        let map = self.rejected.read().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, m)| m.clone())
    }

    /// Forgets a provider's transport (it failed verification or is gone).
    pub fn remove(&self, key: &ProviderId) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Outcomes of sends whose status write failed, by message UID. The next
/// reconcile of the message writes the outcome instead of sending again.
#[derive(Default)]
pub struct Unrecorded {
    inner: std::sync::Mutex<HashMap<String, EmailMessageStatus>>,
}

impl Unrecorded {
    /// Keeps an outcome to write later.
    pub fn keep(&self, uid: String, status: EmailMessageStatus) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, status);
    }

    /// Takes the outcome kept for `uid`, if any.
    pub fn take(&self, uid: &str) -> Option<EmailMessageStatus> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid)
    }
}

/// The resourceVersion of the last outcome this controller wrote, by message
/// UID, kept until the cache shows that version. The watch that feeds the
/// cache can lag behind a write; a reconcile of the older version would find
/// the message still `Sending` and try to claim it again (a claim the
/// apiserver refuses with a conflict: a wasted write). Such a reconcile waits
/// for the cache instead.
#[derive(Default)]
pub struct Written {
    inner: std::sync::Mutex<HashMap<String, u64>>,
}

impl Written {
    /// Remembers that this controller wrote version `resource_version`.
    pub fn note(&self, uid: &str, resource_version: Option<&str>) {
        if let Some(version) = resource_version.and_then(|v| v.parse().ok()) {
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid.to_string(), version);
        }
    }

    /// Forgets `uid`: its message finished or was deleted, and the cache
    /// no longer holds it.
    pub fn forget(&self, uid: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// How many versions are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `resource_version` is older than what this controller wrote.
    /// Once the cache has caught up the entry is dropped. Versions are etcd
    /// revisions; one that is not a number is never called stale.
    pub fn is_stale(&self, uid: &str, resource_version: Option<&str>) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&written) = map.get(uid) else {
            return false;
        };
        match resource_version.and_then(|v| v.parse::<u64>().ok()) {
            Some(seen) if seen < written => true,
            _ => {
                map.remove(uid);
                false
            }
        }
    }
}

/// The defaults of the controller's flags; clap and `Settings::default()`
/// both read them, so they cannot drift apart.
pub mod defaults {
    /// `--concurrency`.
    pub const CONCURRENCY: u16 = 256;
    /// `--max-attempts`.
    pub const MAX_ATTEMPTS: u32 = 10;
    /// `--deadline-seconds`: a day.
    pub const DEADLINE_SECONDS: u32 = 86_400;
    /// `--max-concurrent-sends`.
    pub const MAX_CONCURRENT_SENDS: usize = 512;
    /// `--sent-events`.
    pub const SENT_EVENTS: bool = false;
    /// `--ledger-max-entries`.
    pub const LEDGER_MAX_ENTRIES: usize = crate::ledger::DEFAULT_MAX_ENTRIES;
    /// `--bounce-mailbox-keep-hours`: a week.
    pub const BOUNCE_MAILBOX_KEEP_HOURS: u32 = 168;
    /// `--breaker-failures`.
    pub const BREAKER_FAILURES: u32 = 5;
    /// `--breaker-cooldown-seconds`.
    pub const BREAKER_COOLDOWN_SECONDS: u32 = 30;
    /// `--max-attachment-memory-mib`.
    pub const MAX_ATTACHMENT_MEMORY_MIB: u32 = 32;
}

/// Settings of a running controller: its command-line flags (each also an
/// environment variable), flattened into `mailroom run`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "controller")]
pub struct Settings {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MAILROOM_NAMESPACE")]
    pub namespace: Option<String>,
    /// The most messages reconciled at once.
    #[arg(long, env = "MAILROOM_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    pub concurrency: u16,
    /// Attempts before a retryable failure becomes final (providers and
    /// messages may set their own).
    #[arg(long, env = "MAILROOM_MAX_ATTEMPTS", default_value_t = defaults::MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Seconds after its creation after which a message is no longer tried
    /// (providers and messages may set their own).
    #[arg(long, env = "MAILROOM_DEADLINE_SECONDS", default_value_t = defaults::DEADLINE_SECONDS)]
    pub deadline_seconds: u32,
    /// The most sends in flight at once, over all providers (a provider may
    /// hold a quarter of them, a namespace half of what can be in flight:
    /// each send runs inside one of the `--concurrency` reconciles).
    #[arg(
        long,
        env = "MAILROOM_MAX_CONCURRENT_SENDS",
        default_value_t = defaults::MAX_CONCURRENT_SENDS
    )]
    pub max_concurrent_sends: usize,
    /// Record a Normal Event for every Sent message (one more apiserver write
    /// per message; off by default: the status says it). Failed and Unknown
    /// messages always get a Warning Event.
    #[arg(
        long,
        env = "MAILROOM_SENT_EVENTS",
        default_value_t = defaults::SENT_EVENTS,
        action = clap::ArgAction::Set
    )]
    pub sent_events: bool,
    /// The namespace holding ClusterEmailProviders' Secrets and ConfigMaps:
    /// the controller's own. Unset, ClusterEmailProviders are not served.
    #[arg(long, env = "MAILROOM_CLUSTER_PROVIDER_NAMESPACE")]
    pub cluster_provider_namespace: Option<String>,
    /// The public https URL of the webhook receiver (the Ingress in front of
    /// its port), e.g. `https://mail.example.com`: providers with
    /// `webhook.register` subscribe `{this}/webhooks/{namespace}/{name}` at
    /// their service. Unset, they cannot register (`WebhookReady` says so).
    #[arg(long, env = "MAILROOM_WEBHOOK_PUBLIC_URL")]
    pub webhook_public_url: Option<String>,
    /// The Secret holding the hosted unsubscribe keys (`current`, and
    /// during a rotation `previous`): `namespace/name`, or a name in the
    /// controller's namespace (`--cluster-provider-namespace`); default
    /// `mailroom-unsubscribe` there. The controller makes it with a random
    /// key the first time a message needs one.
    #[arg(long, env = "MAILROOM_UNSUBSCRIBE_KEY_SECRET")]
    pub unsubscribe_key_secret: Option<String>,
    /// Hosts an EmailProvider's `spec.api.endpoint` may name, comma-separated
    /// (e.g. a company proxy). Unset, endpoint overrides are refused: a
    /// tenant could otherwise point the controller at hosts inside the
    /// cluster.
    #[arg(long, value_delimiter = ',', env = "MAILROOM_ALLOWED_ENDPOINT_HOSTS")]
    pub allowed_endpoint_hosts: Vec<String>,
    /// Ledger entries kept per namespace at most (16 bytes of memory each):
    /// beyond it the oldest page of the namespace's record is dropped
    /// before its window ends.
    #[arg(long, env = "MAILROOM_LEDGER_MAX_ENTRIES", default_value_t = defaults::LEDGER_MAX_ENTRIES)]
    pub ledger_max_entries: usize,
    /// Hours a message that the bounce mailbox reader leaves in a mailbox
    /// (not a report of its provider, an auto-reply, malformed, for no
    /// known message) stays there before the reader deletes it, counted
    /// from the poll that first left it (again from a new leader's first
    /// poll). Keeps every mailbox bounded.
    #[arg(
        long,
        env = "MAILROOM_BOUNCE_MAILBOX_KEEP_HOURS",
        default_value_t = defaults::BOUNCE_MAILBOX_KEEP_HOURS
    )]
    pub bounce_mailbox_keep_hours: u32,
    /// Sends in a row that fail for a provider's own reason (see
    /// docs/delivery.md) before its circuit breaker opens: EmailRoutes then
    /// pass the provider over for the cool-down, and one message probes it
    /// after.
    #[arg(long, env = "MAILROOM_BREAKER_FAILURES", default_value_t = defaults::BREAKER_FAILURES, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_failures: u32,
    /// Seconds an open circuit breaker passes its provider over before one
    /// message probes it (doubled after each failed probe, at most 16
    /// times this).
    #[arg(long, env = "MAILROOM_BREAKER_COOLDOWN_SECONDS", default_value_t = defaults::BREAKER_COOLDOWN_SECONDS, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub breaker_cooldown_seconds: u32,
    /// MiB of attachments held in memory at once, over every message being
    /// sent (a namespace's messages at most half): a message finding no
    /// room waits, one whose files could never fit in half fails. Encoding
    /// a file for sending holds about three times its size while it goes.
    #[arg(long, env = "MAILROOM_MAX_ATTACHMENT_MEMORY_MIB", default_value_t = defaults::MAX_ATTACHMENT_MEMORY_MIB, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub max_attachment_memory_mib: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: defaults::CONCURRENCY,
            max_attempts: defaults::MAX_ATTEMPTS,
            deadline_seconds: defaults::DEADLINE_SECONDS,
            max_concurrent_sends: defaults::MAX_CONCURRENT_SENDS,
            sent_events: defaults::SENT_EVENTS,
            cluster_provider_namespace: None,
            unsubscribe_key_secret: None,
            webhook_public_url: None,
            allowed_endpoint_hosts: Vec::new(),
            ledger_max_entries: defaults::LEDGER_MAX_ENTRIES,
            bounce_mailbox_keep_hours: defaults::BOUNCE_MAILBOX_KEEP_HOURS,
            breaker_failures: defaults::BREAKER_FAILURES,
            breaker_cooldown_seconds: defaults::BREAKER_COOLDOWN_SECONDS,
            max_attachment_memory_mib: defaults::MAX_ATTACHMENT_MEMORY_MIB,
        }
    }
}

/// State shared by the provider and message reconcilers.
pub struct Context {
    /// The kube client.
    pub client: Client,
    /// Verified transports by provider.
    pub transports: Transports,
    /// The watches' caches messages are judged against.
    pub caches: Caches,
    /// What only the send attempts share: slots, and outcomes in flight.
    pub attempts: Attempts,
    /// Finished messages to delete when their time to live has passed.
    pub expiry: Arc<super::expiry::Expiry>,
    /// What each provider did over the last hour, for its status.
    pub activity: Arc<super::activity::Activity>,
    /// The record of what was sent, so the same message is sent once.
    pub ledger: Arc<crate::ledger::Ledger>,
    /// The attempts under way, claimed before their sends.
    pub journal: Arc<crate::journal::Journal>,
    /// The bounce mailboxes' state and the soft bounce counts.
    pub bounces: Arc<crate::bounces::Bounces>,
    /// Token buckets of rate-limited providers.
    pub rate_limits: super::pacing::RateLimits,
    /// Each provider's circuit breaker.
    pub breakers: super::breaker::Breakers,
    /// Each namespace's use of each provider (quotas, holds, totals).
    pub usage: Arc<super::usage::Usage>,
    /// Metrics and probe state.
    pub telemetry: Arc<crate::admin::Telemetry>,
    /// The hosted unsubscribe keys.
    pub unsubscribe_keys: Arc<crate::delivery::unsubscribe::keys::Keys>,
    /// Publishes Kubernetes Events.
    pub events: crate::events::Events,
    /// The controller's settings.
    pub settings: Settings,
}

/// The watches' caches: every provider, cluster provider, template and
/// suppression list the controller serves, and whether each has listed
/// everything.
#[derive(Clone)]
pub struct Caches {
    /// Every EmailProvider the controller watches.
    pub providers: Store<EmailProvider>,
    /// Every ClusterEmailProvider (empty unless the controller serves them).
    pub cluster_providers: Store<crate::api::ClusterEmailProvider>,
    /// Every EmailTemplate the controller watches.
    pub templates: Store<crate::api::EmailTemplate>,
    /// Every EmailRoute the controller watches.
    pub routes: Store<crate::api::EmailRoute>,
    /// Every EmailUsage (each namespace's use of each provider).
    pub usages: Store<crate::api::EmailUsage>,
    /// The suppression lists (EmailSuppressions).
    pub suppressions: super::suppressions::Lists,
    /// Whether those caches have listed everything.
    pub ready: CachesReady,
}

/// What only the send attempts use: the send slots, outcomes of sends not
/// written yet, and outcomes written that the cache may not show yet.
pub struct Attempts {
    /// The send slots (`max_concurrent_sends`, shared fairly).
    pub sends: Arc<super::slots::SendSlots>,
    /// Sent messages whose outcome is not written yet.
    pub unrecorded: Unrecorded,
    /// Outcomes written that the cache may not show yet.
    pub written: Written,
    /// The attachments held in memory (`max_attachment_memory_mib`).
    pub attachment_memory: Arc<super::attachment_memory::AttachmentMemory>,
}

impl Context {
    /// Waits until the provider and template caches (and the cluster
    /// providers', when served) have listed everything: messages are judged
    /// against them, so none is marked ProviderNotFound for a provider that
    /// exists but is not listed yet, and until the ledger is read, so none
    /// is sent that was sent before, and until the claim journal is read, so
    /// none whose last attempt was interrupted is judged as if it had not
    /// been made. `false` when a cache stopped first.
    pub async fn caches_ready(&self) -> bool {
        self.caches.listed().await && self.ledger.loaded().await && self.journal.loaded().await
    }
}

impl Caches {
    /// Waits until every cache has listed everything; `false` when one
    /// stopped first.
    pub async fn listed(&self) -> bool {
        let ready = &self.ready;
        ready.providers.wait().await
            && ready.templates.wait().await
            && ready.routes.wait().await
            && ready.usages.wait().await
            && ready.cluster_providers.wait().await
            && ready.suppressions.wait().await
    }
}

/// Whether the caches messages are judged against have listed everything.
#[derive(Clone)]
pub struct CachesReady {
    /// The EmailProvider cache.
    pub providers: Ready,
    /// The EmailTemplate cache.
    pub templates: Ready,
    /// The EmailRoute cache.
    pub routes: Ready,
    /// The EmailUsage cache.
    pub usages: Ready,
    /// The ClusterEmailProvider cache (given at once when not served).
    pub cluster_providers: Ready,
    /// The EmailSuppression cache.
    pub suppressions: Ready,
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn an_older_cached_version_is_stale_until_the_cache_catches_up() {
        let written = Written::default();
        assert!(!written.is_stale("u", Some("5")), "nothing written yet");
        written.note("u", Some("10"));
        assert!(written.is_stale("u", Some("9")));
        assert!(!written.is_stale("u", Some("10")), "caught up");
        assert!(
            !written.is_stale("u", Some("9")),
            "forgotten once caught up"
        );
        written.note("v", Some("10"));
        assert!(!written.is_stale("v", Some("not-a-number")));
    }
}
