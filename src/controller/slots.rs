//! Send slots, shared fairly. At most `--max-concurrent-sends` sends are in
//! flight at once; of those, one provider may hold at most a quarter and the
//! messages of one namespace at most a half. A server that stalls (or a tenant that floods)
//! so delays only its own messages: theirs look again in 1-3 s, without
//! holding a reconcile worker, while every other provider finds slots free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admin::Telemetry;
use crate::api::EmailProviderSpec;
use crate::api::ProviderId;

/// The timeout a provider sets for each network step.
fn timeout_of(spec: &EmailProviderSpec) -> Duration {
    let seconds = match (&spec.smtp, &spec.api) {
        (Some(smtp), _) => smtp.timeout_seconds,
        (None, Some(api)) => api.timeout_seconds,
        (None, None) => 30,
    };
    Duration::from_secs(u64::from(seconds))
}

/// The shares a provider and a namespace may hold of `total` slots.
fn shares(total: usize) -> (usize, usize) {
    let total = total.max(1);
    ((total / 4).max(1), (total / 2).max(1))
}

/// What is held now, by provider and by namespace.
#[derive(Default)]
struct Held {
    providers: HashMap<ProviderId, usize>,
    namespaces: HashMap<String, usize>,
}

/// The send slots of a controller.
pub struct SendSlots {
    global: Arc<Semaphore>,
    per_provider: usize,
    per_namespace: usize,
    held: Mutex<Held>,
    telemetry: Arc<Telemetry>,
}

/// A slot, given back when dropped.
pub struct SendSlot {
    slots: Arc<SendSlots>,
    key: ProviderId,
    namespace: String,
    _global: Option<OwnedSemaphorePermit>,
}

impl SendSlots {
    /// `total` slots (at least 1), reported in the metrics.
    pub fn new(total: usize, telemetry: Arc<Telemetry>) -> Arc<Self> {
        let (per_provider, per_namespace) = shares(total);
        telemetry.metrics.set_slots_per_provider(per_provider);
        Arc::new(Self {
            global: Arc::new(Semaphore::new(total.max(1))),
            per_provider,
            per_namespace,
            held: Mutex::new(Held::default()),
            telemetry,
        })
    }

    /// A slot for a message of `namespace` sent through provider `key`, or
    /// `None` when the provider or the namespace already holds its share:
    /// the message should look again shortly. Waits only for the global
    /// limit, which no single provider or namespace can fill.
    pub async fn take(self: &Arc<Self>, key: &ProviderId, namespace: &str) -> Option<SendSlot> {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let provider = held.providers.get(key).copied().unwrap_or(0);
            let in_namespace = held.namespaces.get(namespace).copied().unwrap_or(0);
            if provider >= self.per_provider || in_namespace >= self.per_namespace {
                return None;
            }
            *held.providers.entry(key.clone()).or_default() += 1;
            *held.namespaces.entry(namespace.to_string()).or_default() += 1;
            self.report(key, provider + 1);
        }
        // Counted before the wait, so a cancelled wait gives the share back.
        let mut slot = SendSlot {
            slots: self.clone(),
            key: key.clone(),
            namespace: namespace.to_string(),
            _global: None,
        };
        slot._global = self.global.clone().acquire_owned().await.ok();
        Some(slot)
    }

    /// Counts an attempt through provider `key` that ran longer than the
    /// provider's own timeout: a slow or stalled server.
    pub fn note_attempt(&self, key: &ProviderId, spec: &EmailProviderSpec, elapsed: Duration) {
        if elapsed > timeout_of(spec) {
            self.telemetry.metrics.count_slow_attempt(key);
        }
    }

    fn give_back(&self, key: &ProviderId, namespace: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let left = match held.providers.get_mut(key) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left == 0 {
            held.providers.remove(key);
        }
        if let Some(n) = held.namespaces.get_mut(namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.namespaces.remove(namespace);
            }
        }
        self.report(key, left);
    }

    fn report(&self, key: &ProviderId, held: usize) {
        self.telemetry.metrics.set_send_slots(key, held);
    }
}

impl Drop for SendSlot {
    fn drop(&mut self) {
        self.slots.give_back(&self.key, &self.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, provider: &str) -> ProviderId {
        ProviderId::Namespaced {
            namespace: namespace.to_string(),
            name: provider.to_string(),
        }
    }

    /// A slot for a message of the provider's own namespace.
    async fn take(slots: &Arc<SendSlots>, key: &ProviderId) -> Option<SendSlot> {
        slots.take(key, key.namespace()).await
    }

    #[tokio::test]
    async fn a_provider_and_a_namespace_hold_at_most_their_share() {
        let slots = SendSlots::new(8, Arc::default());
        let a = key("team-a", "smtp");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(take(&slots, &a).await.expect("within the provider's share"));
        }
        assert!(take(&slots, &a).await.is_none(), "a quarter of 8 is 2");
        let a2 = key("team-a", "api");
        for _ in 0..2 {
            held.push(take(&slots, &a2).await.expect("the namespace has room"));
        }
        assert!(
            take(&slots, &key("team-a", "third")).await.is_none(),
            "half of 8 is 4 for the namespace"
        );
        let b = key("team-b", "smtp");
        held.push(take(&slots, &b).await.expect("another namespace is served"));

        held.remove(0);
        assert!(
            take(&slots, &a).await.is_some(),
            "a slot given back is free"
        );
    }

    #[tokio::test]
    async fn a_cluster_provider_counts_against_each_message_namespace() {
        let slots = SendSlots::new(8, Arc::default());
        let shared = key("", "relay");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.take(&shared, "team-a").await.expect("team-a's share"));
        }
        assert!(
            slots.take(&shared, "team-b").await.is_none(),
            "the provider's own share is full"
        );
        let other = key("team-a", "smtp");
        for _ in 0..2 {
            held.push(slots.take(&other, "team-a").await.expect("team-a has room"));
        }
        assert!(
            slots
                .take(&key("", "other-relay"), "team-a")
                .await
                .is_none(),
            "team-a holds half"
        );
        assert!(
            slots
                .take(&key("", "other-relay"), "team-b")
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn one_slot_is_still_one_slot() {
        let slots = SendSlots::new(1, Arc::default());
        let a = key("team-a", "smtp");
        let first = take(&slots, &a).await.expect("the only slot");
        assert!(take(&slots, &a).await.is_none());
        drop(first);
        assert!(take(&slots, &a).await.is_some());
    }
}
