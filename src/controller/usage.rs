//! Each namespace's use of each provider, against the provider's
//! `spec.tenants`: messages this clock hour and day (the quotas), sent,
//! bounced and complained over the reputation window (the hold), and
//! totals (chargeback). Counted in memory by the leader, seeded from the
//! namespace's EmailUsage object the first time a pair is seen (so a new
//! leader goes on from the last write), and written back to it every few
//! seconds while it changes. A person releases a hold by annotating the
//! EmailUsage `mailroom.dev/release-hold=true`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::tenancy::{ReputationLimit, TenantPolicy};
use crate::api::usage::{
    EmailUsage, EmailUsageStatus, Hold, RELEASE_HOLD_ANNOTATION, UsageCounts, UsageWindow,
};
use crate::api::{EmailMessage, Phase, ProviderId};

/// How often changed usage is written at most.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);
/// How soon a held message looks again on its own (a release also wakes
/// nothing else).
pub const HOLD_RECHECK: Duration = Duration::from_secs(30);
/// The most (provider, namespace) pairs counted; past it new pairs are not
/// bounded by quotas (and a warning says so) rather than grow memory.
const MAX_PAIRS: usize = 50_000;
/// Messages whose bounces and complaints are remembered as counted; past
/// it the memory starts afresh (a message's next change may then count
/// what it showed before again).
const MAX_SEEN: usize = 200_000;
/// Default `reputation.minimumSent` and `windowHours`.
const DEFAULT_MINIMUM_SENT: u32 = 100;
const DEFAULT_WINDOW_HOURS: u32 = 24;

type Key = (ProviderId, String);

#[derive(Debug, Clone, Default)]
struct Tally {
    hour: (i64, u64),
    day: (i64, u64),
    reputation: UsageCounts,
    totals: UsageCounts,
    hold: Option<Hold>,
    limits: (Option<u32>, Option<u32>),
    dirty: bool,
}

/// Why a namespace may not send through a provider now.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// A quota is used up until `until`.
    Quota {
        /// The sentence for the status.
        text: String,
        /// When the window ends.
        until: Duration,
    },
    /// The namespace's reputation hold.
    Reputation {
        /// The sentence for the status.
        text: String,
        /// Whether the hold started just now (an Event says so).
        new: bool,
    },
}

/// Every pair's usage.
#[derive(Default)]
pub struct Usage {
    inner: Mutex<HashMap<Key, Tally>>,
    /// Bounces and complaints already counted, by message uid.
    seen: Mutex<HashMap<String, (u64, u64)>>,
    /// The EmailUsage objects, read back the first time a pair is counted.
    store: Option<Store<EmailUsage>>,
}

impl Usage {
    /// Usage seeded from the EmailUsage objects in `store`.
    pub fn new(store: Store<EmailUsage>) -> Self {
        Self {
            inner: Mutex::default(),
            seen: Mutex::default(),
            store: Some(store),
        }
    }
}

fn hour_of(at: Timestamp) -> i64 {
    at.as_second().div_euclid(3600)
}

fn at_hour(hour: i64) -> Timestamp {
    Timestamp::from_second(hour.saturating_mul(3600)).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn until_hour(hour: i64, now: Timestamp) -> Duration {
    Duration::try_from(at_hour(hour).duration_since(now)).unwrap_or_default()
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Tally>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tally of `key`, seeded from its EmailUsage the first time.
    fn tally<'a>(&self, map: &'a mut HashMap<Key, Tally>, key: Key) -> Option<&'a mut Tally> {
        if !map.contains_key(&key) {
            if map.len() >= MAX_PAIRS {
                return None;
            }
            let persisted = self
                .store
                .as_ref()
                .and_then(|store| persisted(store, &key.0, &key.1));
            map.insert(key.clone(), seeded(persisted.as_ref()));
        }
        map.get_mut(&key)
    }

    /// Whether `namespace` may send through `provider` under `policy` now;
    /// when it may, `reserve` messages of its quotas are held for the send
    /// until the reservation is kept (sent) or dropped (given back), so
    /// sends under way at once cannot pass the quota together.
    pub fn admit(
        self: &std::sync::Arc<Self>,
        provider: &ProviderId,
        namespace: &str,
        policy: &TenantPolicy,
        now: Timestamp,
        reserve: u64,
    ) -> Result<Reservation, Held> {
        self.judge(provider, namespace, policy, now, reserve)?;
        Ok(Reservation {
            usage: self.clone(),
            key: (provider.clone(), namespace.to_string()),
            count: reserve,
            hour: hour_of(now),
            kept: false,
        })
    }

    fn judge(
        &self,
        provider: &ProviderId,
        namespace: &str,
        policy: &TenantPolicy,
        now: Timestamp,
        reserve: u64,
    ) -> Result<(), Held> {
        let mut map = self.lock();
        let key = (provider.clone(), namespace.to_string());
        let Some(tally) = self.tally(&mut map, key) else {
            warn!(%provider, namespace, "too many namespaces counted; this one is not bounded");
            return Ok(());
        };
        let result = Self::bounds(tally, provider, policy, now);
        if result.is_ok() {
            tally.hour.1 += reserve;
            tally.day.1 += reserve;
        }
        result
    }

    fn bounds(
        tally: &mut Tally,
        provider: &ProviderId,
        policy: &TenantPolicy,
        now: Timestamp,
    ) -> Result<(), Held> {
        roll(tally, now, policy.reputation.as_ref());
        tally.limits = (policy.messages_per_hour, policy.messages_per_day);
        if let Some(hold) = &tally.hold {
            return Err(Held::Reputation {
                text: hold_text(hold, provider),
                new: false,
            });
        }
        if let Some(limit) = &policy.reputation
            && let Some(hold) = judge(&tally.reputation, limit, now)
        {
            let text = hold_text(&hold, provider);
            tally.hold = Some(hold);
            tally.dirty = true;
            return Err(Held::Reputation { text, new: true });
        }
        if let Some(limit) = policy.messages_per_hour
            && tally.hour.1 >= u64::from(limit)
        {
            return Err(Held::Quota {
                text: format!(
                    "the namespace sent {} of its {limit} messages this hour through {provider} (spec.tenants[].messagesPerHour); it goes on at {}",
                    tally.hour.1,
                    at_hour(tally.hour.0 + 1)
                ),
                until: until_hour(tally.hour.0 + 1, now),
            });
        }
        if let Some(limit) = policy.messages_per_day
            && tally.day.1 >= u64::from(limit)
        {
            let next = (tally.day.0 + 1) * 24;
            return Err(Held::Quota {
                text: format!(
                    "the namespace sent {} of its {limit} messages today through {provider} (spec.tenants[].messagesPerDay); it goes on at {}",
                    tally.day.1,
                    at_hour(next)
                ),
                until: until_hour(next, now),
            });
        }
        Ok(())
    }

    /// Counts `count` messages (bulk recipients) of `namespace` accepted
    /// by `provider` at `now`, none of them reserved.
    pub fn sent(&self, provider: &ProviderId, namespace: &str, count: u64, now: Timestamp) {
        self.count(provider, namespace, now, |t| {
            t.hour.1 += count;
            t.day.1 += count;
            t.reputation.sent += count;
            t.totals.sent += count;
        });
    }

    /// Gives back `count` reserved messages of the hour `hour` (and its day).
    fn give_back(&self, key: &Key, count: u64, hour: i64) {
        let mut map = self.lock();
        if let Some(tally) = map.get_mut(key) {
            if tally.hour.0 == hour {
                tally.hour.1 = tally.hour.1.saturating_sub(count);
            }
            if tally.day.0 == hour.div_euclid(24) {
                tally.day.1 = tally.day.1.saturating_sub(count);
            }
        }
    }

    /// Counts one message of `namespace` through `provider` that ended
    /// Failed or Unknown.
    pub fn failed(&self, provider: &ProviderId, namespace: &str) {
        self.count(provider, namespace, Timestamp::now(), |t| {
            t.totals.failed += 1;
        });
    }

    /// Counts the bounce or complaint `message` shows (seen live, once).
    pub fn observe(&self, message: &EmailMessage) {
        let Some(provider) = ProviderId::of(message) else {
            return;
        };
        let Some(status) = message.status.as_ref() else {
            return;
        };
        // What the message shows now: a single message its phase, a bulk
        // message its recipients' counts.
        let shown = match &status.bulk {
            Some(bulk) => (u64::from(bulk.bounced), u64::from(bulk.complained)),
            None => (
                u64::from(status.phase == Some(Phase::Bounced)),
                u64::from(status.phase == Some(Phase::Complained)),
            ),
        };
        if shown == (0, 0) {
            return;
        }
        let uid = message.uid().unwrap_or_default();
        // Only what is new since this message was last counted.
        let (bounced, complained) = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= MAX_SEEN && !seen.contains_key(&uid) {
                seen.clear();
            }
            let before = seen.entry(uid).or_default();
            let new = (
                shown.0.saturating_sub(before.0),
                shown.1.saturating_sub(before.1),
            );
            *before = (before.0.max(shown.0), before.1.max(shown.1));
            new
        };
        if (bounced, complained) == (0, 0) {
            return;
        }
        let namespace = message.namespace().unwrap_or_default();
        self.count(&provider, &namespace, Timestamp::now(), |t| {
            t.reputation.bounced += bounced;
            t.totals.bounced += bounced;
            t.reputation.complained += complained;
            t.totals.complained += complained;
        });
    }

    /// Counts into a pair (seeded from its object the first time).
    fn count(
        &self,
        provider: &ProviderId,
        namespace: &str,
        now: Timestamp,
        add: impl FnOnce(&mut Tally),
    ) {
        let mut map = self.lock();
        let key = (provider.clone(), namespace.to_string());
        let Some(tally) = self.tally(&mut map, key) else {
            return;
        };
        roll(tally, now, None);
        add(tally);
        tally.dirty = true;
    }

    /// Releases `namespace`'s hold on `provider` and starts its window
    /// afresh. Returns whether it was held.
    pub fn release(&self, provider: &ProviderId, namespace: &str, now: Timestamp) -> bool {
        let mut map = self.lock();
        let Some(tally) = map.get_mut(&(provider.clone(), namespace.to_string())) else {
            return false;
        };
        tally.reputation = UsageCounts {
            since: Some(Time(now)),
            ..Default::default()
        };
        tally.dirty = true;
        tally.hold.take().is_some()
    }

    /// The pairs changed since last taken, as their status, marked clean.
    fn take_dirty(&self, now: Timestamp) -> Vec<(Key, EmailUsageStatus)> {
        let mut map = self.lock();
        map.iter_mut()
            .filter(|(_, t)| t.dirty)
            .map(|(key, t)| {
                t.dirty = false;
                roll(t, now, None);
                (key.clone(), status_of(t))
            })
            .collect()
    }

    /// Marks a pair to be written again (its write failed).
    fn redo(&self, key: &Key) {
        if let Some(t) = self.lock().get_mut(key) {
            t.dirty = true;
        }
    }

    /// Writes changed usage every `WRITE_EVERY`, and releases the holds a
    /// person asked to release, until the process ends.
    pub async fn run(
        self: std::sync::Arc<Self>,
        client: Client,
        telemetry: std::sync::Arc<crate::admin::Telemetry>,
    ) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(WRITE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Timestamp::now();
            self.releases(&client, &store, now).await;
            for (key, status) in self.take_dirty(now) {
                let held = status.hold.is_some();
                telemetry
                    .metrics
                    .set_tenant_usage(&key.0, &key.1, &status.totals, held);
                if let Err(e) = write(&client, &store, &key, &status).await {
                    warn!(provider = %key.0, namespace = key.1, error = %e, "writing a namespace's usage failed; tried again");
                    self.redo(&key);
                }
            }
        }
    }

    /// Releases the holds whose EmailUsage carries the release annotation,
    /// and takes the annotation off.
    async fn releases(&self, client: &Client, store: &Store<EmailUsage>, now: Timestamp) {
        let asked: Vec<_> = store
            .state()
            .into_iter()
            .filter(|u| {
                u.annotations()
                    .get(RELEASE_HOLD_ANNOTATION)
                    .map(String::as_str)
                    == Some("true")
            })
            .collect();
        for usage in asked {
            let namespace = usage.namespace().unwrap_or_default();
            let provider = provider_id(&usage.spec.provider_ref, &namespace);
            if self.release(&provider, &namespace, now) {
                tracing::info!(%provider, namespace, "reputation hold released");
            }
            let api: Api<EmailUsage> = Api::namespaced(client.clone(), &namespace);
            let patch =
                serde_json::json!({"metadata": {"annotations": {RELEASE_HOLD_ANNOTATION: null}}});
            if let Err(e) = api
                .patch(
                    &usage.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                warn!(error = %e, "taking the release annotation off failed; tried again");
            }
        }
    }
}

/// Messages of a namespace's quotas held for a send: kept when it is
/// accepted, given back when dropped otherwise (it failed, waited, or
/// another writer claimed the message first).
pub struct Reservation {
    usage: std::sync::Arc<Usage>,
    key: Key,
    count: u64,
    hour: i64,
    kept: bool,
}

impl Reservation {
    /// The reserved messages were accepted at `now`.
    pub fn keep(mut self, now: Timestamp) {
        self.kept = true;
        let count = self.count;
        self.usage.count(&self.key.0, &self.key.1, now, |t| {
            t.reputation.sent += count;
            t.totals.sent += count;
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept && self.count > 0 {
            self.usage.give_back(&self.key, self.count, self.hour);
        }
    }
}

/// The provider a usage object of `namespace` names.
pub fn provider_id(reference: &ProviderRef, namespace: &str) -> ProviderId {
    match reference.kind {
        ProviderKind::ClusterEmailProvider => ProviderId::Cluster {
            name: reference.name.clone(),
        },
        _ => ProviderId::Namespaced {
            namespace: namespace.to_string(),
            name: reference.name.clone(),
        },
    }
}

/// The reference a usage object names its provider by.
pub fn reference_of(provider: &ProviderId) -> ProviderRef {
    match provider {
        ProviderId::Namespaced { name, .. } => ProviderRef {
            kind: ProviderKind::EmailProvider,
            name: name.clone(),
        },
        ProviderId::Cluster { name } => ProviderRef {
            kind: ProviderKind::ClusterEmailProvider,
            name: name.clone(),
        },
    }
}

/// The usage object of `namespace` for `provider`, as the cache has it.
pub fn persisted(
    store: &Store<EmailUsage>,
    provider: &ProviderId,
    namespace: &str,
) -> Option<EmailUsageStatus> {
    let name = EmailUsage::name_for(&reference_of(provider));
    store
        .get(&ObjectRef::new(&name).within(namespace))
        .and_then(|u| u.status.clone())
}

/// Creates the usage object if the cache does not hold it (server-side
/// apply of its spec), then writes its status: one write a time once it
/// exists.
async fn write(
    client: &Client,
    store: &Store<EmailUsage>,
    key: &Key,
    status: &EmailUsageStatus,
) -> Result<(), kube::Error> {
    let (provider, namespace) = key;
    let reference = reference_of(provider);
    let name = EmailUsage::name_for(&reference);
    let api: Api<EmailUsage> = Api::namespaced(client.clone(), namespace);
    let exists = store
        .get(&ObjectRef::new(&name).within(namespace))
        .is_some();
    if !exists {
        let object = serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailUsage",
            "metadata": {"name": name},
            "spec": {"providerRef": reference},
        });
        let apply = PatchParams::apply("mailroom").force();
        api.patch(&name, &apply, &Patch::Apply(&object)).await?;
    }
    let patch = serde_json::json!({"status": status});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// A tally from the status last written.
fn seeded(persisted: Option<&EmailUsageStatus>) -> Tally {
    let Some(status) = persisted else {
        return Tally::default();
    };
    let window = |w: &Option<UsageWindow>, per: i64| {
        w.as_ref()
            .map(|w| (hour_of(w.start.0).div_euclid(per), w.messages))
            .unwrap_or_default()
    };
    Tally {
        hour: window(&status.hour, 1),
        day: window(&status.day, 24),
        reputation: status.reputation.clone().unwrap_or_default(),
        totals: status.totals.clone(),
        hold: status.hold.clone(),
        limits: (
            status.hour.as_ref().and_then(|w| w.limit),
            status.day.as_ref().and_then(|w| w.limit),
        ),
        dirty: false,
    }
}

/// Starts new windows when the clock has passed theirs.
fn roll(tally: &mut Tally, now: Timestamp, reputation: Option<&ReputationLimit>) {
    let hour = hour_of(now);
    if tally.hour.0 != hour {
        tally.hour = (hour, 0);
    }
    let day = hour.div_euclid(24);
    if tally.day.0 != day {
        tally.day = (day, 0);
    }
    let window_hours = reputation
        .and_then(|r| r.window_hours)
        .unwrap_or(DEFAULT_WINDOW_HOURS);
    let since = tally.reputation.since.as_ref().map(|t| t.0);
    let expired = since.is_none_or(|s| hour_of(now) - hour_of(s) >= i64::from(window_hours));
    if expired && tally.hold.is_none() {
        tally.reputation = UsageCounts {
            since: Some(Time(at_hour(hour))),
            ..Default::default()
        };
    }
}

/// A hold when the window's rates pass the limit (with enough sent).
fn judge(counts: &UsageCounts, limit: &ReputationLimit, now: Timestamp) -> Option<Hold> {
    let minimum = u64::from(limit.minimum_sent.unwrap_or(DEFAULT_MINIMUM_SENT));
    if counts.sent < minimum || counts.sent == 0 {
        return None;
    }
    let over = |count: u64, per: u64, max: Option<u32>| {
        max.filter(|m| count.saturating_mul(per) > u64::from(*m).saturating_mul(counts.sent))
    };
    let since = counts
        .since
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let sent = counts.sent;
    let text = if let Some(max) = over(counts.bounced, 100, limit.max_bounce_percent) {
        format!(
            "{} of {sent} messages sent since {since} bounced, over the provider's {max}% (spec.tenants[].reputation.maxBouncePercent)",
            counts.bounced
        )
    } else if let Some(max) = over(counts.complained, 1000, limit.max_complaint_per_mille) {
        format!(
            "{} of {sent} messages sent since {since} drew complaints, over the provider's {max} per thousand (spec.tenants[].reputation.maxComplaintPerMille)",
            counts.complained
        )
    } else {
        return None;
    };
    Some(Hold {
        reason: "ReputationHold".into(),
        message: text,
        since: Time(now),
    })
}

fn hold_text(hold: &Hold, provider: &ProviderId) -> String {
    format!(
        "the namespace's sends through {provider} are held since {}: {}. A person releases it by annotating its EmailUsage {RELEASE_HOLD_ANNOTATION}=true",
        hold.since.0, hold.message
    )
}

fn status_of(tally: &Tally) -> EmailUsageStatus {
    EmailUsageStatus {
        hour: Some(UsageWindow {
            start: Time(at_hour(tally.hour.0)),
            messages: tally.hour.1,
            limit: tally.limits.0,
        }),
        day: Some(UsageWindow {
            start: Time(at_hour(tally.day.0 * 24)),
            messages: tally.day.1,
            limit: tally.limits.1,
        }),
        reputation: Some(tally.reputation.clone()),
        totals: tally.totals.clone(),
        hold: tally.hold.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Usage {
        /// As a new leader whose cache holds `status` for every pair.
        fn seeded_with(status: &EmailUsageStatus, key: Key) -> Self {
            let usage = Self::default();
            usage.lock().insert(key, seeded(Some(status)));
            usage
        }
    }

    fn id() -> ProviderId {
        ProviderId::Cluster {
            name: "shared".into(),
        }
    }

    fn at(second: i64) -> Timestamp {
        // 2027-01-15T00:00:00Z, the start of an hour and a day.
        Timestamp::from_second(1_800_000_000 - 1_800_000_000 % 86_400 + second).expect("time")
    }

    #[test]
    fn an_hourly_quota_holds_until_the_next_hour_and_a_day_quota_until_the_next_day() {
        let usage = std::sync::Arc::new(Usage::default());
        let policy = TenantPolicy {
            messages_per_hour: Some(2),
            messages_per_day: Some(3),
            ..Default::default()
        };
        assert_eq!(usage.admit(&id(), "a", &policy, at(0), 0).map(drop), Ok(()));
        usage.sent(&id(), "a", 2, at(1));
        let Err(Held::Quota { until, .. }) = usage.admit(&id(), "a", &policy, at(60), 0).map(drop)
        else {
            panic!("over the hour");
        };
        assert_eq!(until, Duration::from_secs(3540));
        // Another namespace is not touched.
        assert_eq!(
            usage.admit(&id(), "b", &policy, at(60), 0).map(drop),
            Ok(())
        );
        assert_eq!(
            usage.admit(&id(), "a", &policy, at(3600), 0).map(drop),
            Ok(())
        );
        usage.sent(&id(), "a", 1, at(3601));
        let Err(Held::Quota { until, .. }) =
            usage.admit(&id(), "a", &policy, at(3700), 0).map(drop)
        else {
            panic!("over the day");
        };
        assert_eq!(until, Duration::from_secs(86_400 - 3700));
    }

    #[test]
    fn sends_under_way_at_once_cannot_pass_the_quota_together() {
        let usage = std::sync::Arc::new(Usage::default());
        let policy = TenantPolicy {
            messages_per_hour: Some(2),
            ..Default::default()
        };
        let first = usage.admit(&id(), "a", &policy, at(0), 1).expect("first");
        let second = usage.admit(&id(), "a", &policy, at(0), 1).expect("second");
        assert!(
            usage.admit(&id(), "a", &policy, at(0), 1).is_err(),
            "a third waits"
        );
        // One fails and gives its place back; the other is sent.
        drop(first);
        second.keep(at(1));
        let third = usage
            .admit(&id(), "a", &policy, at(2), 1)
            .expect("its place back");
        third.keep(at(3));
        assert!(usage.admit(&id(), "a", &policy, at(4), 1).is_err());
        let written = usage.take_dirty(at(5));
        assert_eq!(written[0].1.totals.sent, 2);
        assert_eq!(written[0].1.hour.as_ref().map(|h| h.messages), Some(2));
    }

    fn message(uid: &str, status: serde_json::Value) -> EmailMessage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "a", "uid": uid},
            "spec": {"providerRef": {"kind": "ClusterEmailProvider", "name": "shared"},
                     "to": ["x@example.org"], "subject": "s", "text": "t"},
            "status": status
        }))
        .expect("a message")
    }

    #[test]
    fn each_bounce_and_complaint_counts_once_for_single_and_bulk_messages() {
        let usage = Usage::default();
        let bounced = message("u1", serde_json::json!({"phase": "Bounced"}));
        usage.observe(&bounced);
        // Another change of the same bounced message counts nothing new.
        usage.observe(&bounced);
        let bulk = |bounced: u32, complained: u32| {
            message(
                "u2",
                serde_json::json!({"phase": "Sent", "bulk": {"total": 10, "sent": 10, "failed": 0,
                    "next": 10, "bounced": bounced, "complained": complained}}),
            )
        };
        usage.observe(&bulk(2, 0));
        usage.observe(&bulk(3, 1));
        usage.observe(&bulk(3, 1));
        let written = usage.take_dirty(at(0));
        let totals = &written[0].1.totals;
        assert_eq!((totals.bounced, totals.complained), (4, 1));
    }

    #[test]
    fn a_new_leader_goes_on_from_the_written_counts() {
        let usage = std::sync::Arc::new(Usage::default());
        let policy = TenantPolicy {
            messages_per_hour: Some(5),
            ..Default::default()
        };
        usage.sent(&id(), "a", 5, at(10));
        let written = usage.take_dirty(at(11));
        let status = written[0].1.clone();
        let next = std::sync::Arc::new(Usage::seeded_with(&status, (id(), "a".to_string())));
        assert!(matches!(
            next.admit(&id(), "a", &policy, at(20), 0).map(drop),
            Err(Held::Quota { .. })
        ));
    }

    #[test]
    fn bounces_past_the_limit_hold_the_namespace_until_released() {
        let usage = std::sync::Arc::new(Usage::default());
        let policy = TenantPolicy {
            reputation: Some(ReputationLimit {
                max_bounce_percent: Some(5),
                minimum_sent: Some(20),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(usage.admit(&id(), "a", &policy, at(0), 0).map(drop), Ok(()));
        usage.sent(&id(), "a", 20, at(1));
        {
            let mut map = usage.lock();
            let tally = map.get_mut(&(id(), "a".to_string())).expect("tally");
            tally.reputation.bounced = 1;
        }
        // 1 in 20 is 5%: not over.
        assert_eq!(usage.admit(&id(), "a", &policy, at(2), 0).map(drop), Ok(()));
        {
            let mut map = usage.lock();
            let tally = map.get_mut(&(id(), "a".to_string())).expect("tally");
            tally.reputation.bounced = 2;
        }
        let Err(Held::Reputation { new: true, text }) =
            usage.admit(&id(), "a", &policy, at(3), 0).map(drop)
        else {
            panic!("held");
        };
        assert!(text.contains("2 of 20"), "{text}");
        // Held until released, even in the next window.
        assert!(matches!(
            usage.admit(&id(), "a", &policy, at(90_000), 0).map(drop),
            Err(Held::Reputation { new: false, .. })
        ));
        assert_eq!(usage.admit(&id(), "b", &policy, at(3), 0).map(drop), Ok(()));
        assert!(usage.release(&id(), "a", at(90_001)));
        assert_eq!(
            usage.admit(&id(), "a", &policy, at(90_002), 0).map(drop),
            Ok(())
        );
    }
}
