//! Send slots, shared fairly. At most `--max-concurrent-sends` sends are in
//! flight at once; of those, one provider may hold at most a quarter and the
//! messages of one namespace at most a half of what can be in flight (each
//! send runs inside a reconcile, so no more than `--concurrency`). A server that stalls (or a tenant that floods)
//! so delays only its own messages, without holding a reconcile worker,
//! while every other provider finds slots free: a message whose provider
//! holds its share waits in the provider's line and is woken when a slot
//! comes back (see `slot_waiters`); one whose namespace holds its share
//! looks again in 1-3 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::slot_waiters::SlotWaiters;
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

/// The shares a provider and a namespace may hold of `total` slots, when at
/// most `reconciles` sends can run at once: a namespace never holds more
/// than half of the reconciles, whatever the slots allow, so the rest keep
/// serving every other namespace.
fn shares(total: usize, reconciles: usize) -> (usize, usize) {
    let total = total.max(1);
    let in_flight = total.min(reconciles.max(1));
    ((total / 4).max(1), (in_flight / 2).max(1))
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The provider holds its share.
    Provider,
    /// The message's namespace holds its share.
    Namespace,
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
    /// The messages waiting for a slot of their provider.
    pub waiters: SlotWaiters,
}

/// A slot, given back when dropped.
pub struct SendSlot {
    slots: Arc<SendSlots>,
    key: ProviderId,
    namespace: String,
    _global: Option<OwnedSemaphorePermit>,
}

impl SendSlots {
    /// `total` slots (at least 1) for sends made inside at most
    /// `reconciles` reconciles at once, reported in the metrics.
    pub fn new(total: usize, reconciles: usize, telemetry: Arc<Telemetry>) -> Arc<Self> {
        let (per_provider, per_namespace) = shares(total, reconciles);
        telemetry.metrics.set_slots_per_provider(per_provider);
        Arc::new(Self {
            global: Arc::new(Semaphore::new(total.max(1))),
            per_provider,
            per_namespace,
            held: Mutex::new(Held::default()),
            telemetry,
            waiters: SlotWaiters::default(),
        })
    }

    /// A slot for a message of `namespace` sent through provider `key` (which
    /// holds at most `own_limit` when it sets one, never more than its
    /// share), or which share is full: the message should wait for its turn or look
    /// again shortly. Waits only for the global limit, which no single
    /// provider or namespace can fill.
    pub async fn take(
        self: &Arc<Self>,
        key: &ProviderId,
        namespace: &str,
        own_limit: Option<usize>,
    ) -> Result<SendSlot, Busy> {
        let share = own_limit.map_or(self.per_provider, |limit| limit.clamp(1, self.per_provider));
        self.telemetry.metrics.set_send_slots_limit(key, share);
        let spare = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let provider = held.providers.get(key).copied().unwrap_or(0);
            let in_namespace = held.namespaces.get(namespace).copied().unwrap_or(0);
            if provider >= share {
                return Err(Busy::Provider);
            }
            if in_namespace >= self.per_namespace {
                return Err(Busy::Namespace);
            }
            *held.providers.entry(key.clone()).or_default() += 1;
            *held.namespaces.entry(namespace.to_string()).or_default() += 1;
            self.report(key, provider + 1);
            provider + 1 < share
        };
        // Room is left: the next in line need not wait for a slot to come
        // back (it may have been woken for one a newcomer took).
        if spare {
            self.waiters.wake_next(key);
        }
        // Counted before the wait, so a cancelled wait gives the share back.
        let mut slot = SendSlot {
            slots: self.clone(),
            key: key.clone(),
            namespace: namespace.to_string(),
            _global: None,
        };
        slot._global = self.global.clone().acquire_owned().await.ok();
        Ok(slot)
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
        self.waiters.wake_next(key);
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
    async fn take(slots: &Arc<SendSlots>, key: &ProviderId) -> Result<SendSlot, Busy> {
        slots.take(key, key.namespace(), None).await
    }

    #[test]
    fn a_namespace_holds_at_most_half_of_the_reconciles() {
        assert_eq!(shares(512, 256), (128, 128), "the defaults");
        assert_eq!(shares(256, 256), (64, 128));
        assert_eq!(shares(512, 1024), (128, 256), "slots bound first");
        assert_eq!(shares(1, 1), (1, 1), "never none");
    }

    #[tokio::test]
    async fn a_provider_and_a_namespace_hold_at_most_their_share() {
        let slots = SendSlots::new(8, 256, Arc::default());
        let a = key("team-a", "smtp");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(take(&slots, &a).await.expect("within the provider's share"));
        }
        assert!(take(&slots, &a).await.is_err(), "a quarter of 8 is 2");
        let a2 = key("team-a", "api");
        for _ in 0..2 {
            held.push(take(&slots, &a2).await.expect("the namespace has room"));
        }
        assert!(
            take(&slots, &key("team-a", "third")).await.is_err(),
            "half of 8 is 4 for the namespace"
        );
        let b = key("team-b", "smtp");
        held.push(take(&slots, &b).await.expect("another namespace is served"));

        held.remove(0);
        assert!(take(&slots, &a).await.is_ok(), "a slot given back is free");
    }

    #[tokio::test]
    async fn a_cluster_provider_counts_against_each_message_namespace() {
        let slots = SendSlots::new(8, 256, Arc::default());
        let shared = key("", "relay");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                slots
                    .take(&shared, "team-a", None)
                    .await
                    .expect("team-a's share"),
            );
        }
        assert!(
            slots.take(&shared, "team-b", None).await.is_err(),
            "the provider's own share is full"
        );
        let other = key("team-a", "smtp");
        for _ in 0..2 {
            held.push(
                slots
                    .take(&other, "team-a", None)
                    .await
                    .expect("team-a has room"),
            );
        }
        assert!(
            slots
                .take(&key("", "other-relay"), "team-a", None)
                .await
                .is_err(),
            "team-a holds half"
        );
        assert!(
            slots
                .take(&key("", "other-relay"), "team-b", None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_provider_with_its_own_limit_holds_no_more() {
        let slots = SendSlots::new(16, 256, Arc::default());
        let smtp = key("team-a", "smtp");
        let first = slots.take(&smtp, "team-a", Some(2)).await.expect("1 of 2");
        let _second = slots.take(&smtp, "team-a", Some(2)).await.expect("2 of 2");
        assert_eq!(
            slots.take(&smtp, "team-a", Some(2)).await.err(),
            Some(Busy::Provider),
            "its own limit is below its share of 4"
        );
        drop(first);
        assert!(slots.take(&smtp, "team-a", Some(2)).await.is_ok());
        let wide = key("team-b", "smtp");
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                slots
                    .take(&wide, "team-b", Some(100))
                    .await
                    .expect("within the share"),
            );
        }
        assert!(
            slots.take(&wide, "team-b", Some(100)).await.is_err(),
            "a limit above the share is held to the share"
        );
    }

    #[tokio::test]
    async fn one_slot_is_still_one_slot() {
        let slots = SendSlots::new(1, 256, Arc::default());
        let a = key("team-a", "smtp");
        let first = take(&slots, &a).await.expect("the only slot");
        assert!(take(&slots, &a).await.is_err());
        drop(first);
        assert!(take(&slots, &a).await.is_ok());
    }
}
