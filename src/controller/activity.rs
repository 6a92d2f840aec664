//! What each provider did over the last hour, for its status: messages
//! sent and failed (counted by the leader as it records them) and messages
//! delivered, bounced and complained (counted once each from the message
//! watch as it changes, which sees every webhook receiver's writes).
//! Counted in memory in
//! one-minute buckets and written to `status.recent` at most every
//! `WRITE_EVERY`, and only when the figures changed. Counting starts when
//! the controller does: `status.recent.since` says from when.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::warn;

use crate::api::condition::{self, DELIVERED};
use crate::api::provider::RecentActivity;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, Phase, ProviderId};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the server.
    Sent,
    /// Ended Failed or Unknown.
    Failed,
    /// Delivered (or opened or clicked), by the service's events.
    Delivered,
    /// Bounced for good (or dropped by the service).
    Bounced,
    /// Marked as spam.
    Complained,
}

/// The window counted.
const WINDOW_MINUTES: i64 = 60;
/// How often the figures are written at most.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);
/// Delivery outcomes remembered (so each is counted once); those older
/// than the window are forgotten, and past this many in the window further
/// outcomes are not counted.
const MAX_SEEN: usize = 100_000;

type Counts = [u64; 5];

#[derive(Default)]
struct Inner {
    buckets: HashMap<ProviderId, VecDeque<(i64, Counts)>>,
    written: HashMap<ProviderId, Counts>,
    seen: HashMap<(String, usize), i64>,
    /// The minute `seen` was last pruned: once a minute, not per outcome.
    pruned: i64,
}

/// The counts of every provider.
pub struct Activity {
    started: Timestamp,
    inner: Mutex<Inner>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            started: Timestamp::now(),
            inner: Mutex::default(),
        }
    }
}

fn minute(at: Timestamp) -> i64 {
    at.as_second().div_euclid(60)
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Sent => 0,
        Outcome::Failed => 1,
        Outcome::Delivered => 2,
        Outcome::Bounced => 3,
        Outcome::Complained => 4,
    }
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one `outcome` of `provider` at `at`.
    fn count_at(&self, provider: ProviderId, outcome: Outcome, at: Timestamp) {
        let now = minute(at);
        let mut inner = self.lock();
        let buckets = inner.buckets.entry(provider).or_default();
        match buckets.back_mut() {
            Some((m, counts)) if *m == now => counts[slot(outcome)] += 1,
            _ => {
                let mut counts = Counts::default();
                counts[slot(outcome)] = 1;
                buckets.push_back((now, counts));
            }
        }
        while buckets
            .front()
            .is_some_and(|(m, _)| *m <= now - WINDOW_MINUTES)
        {
            buckets.pop_front();
        }
    }

    /// Counts one `outcome` of `provider` now.
    pub fn count(&self, provider: ProviderId, outcome: Outcome) {
        self.count_at(provider, outcome, Timestamp::now());
    }

    /// Counts the delivery outcome `message` shows, once, if it happened
    /// within the window. Called for changes seen live, not for a watch's
    /// (re-)list, so a restart does not count the last hour again.
    pub fn observe(&self, message: &EmailMessage) {
        let Some(status) = &message.status else {
            return;
        };
        let outcome = match status.phase {
            Some(Phase::Delivered) => Outcome::Delivered,
            Some(Phase::Bounced) => Outcome::Bounced,
            Some(Phase::Complained) => Outcome::Complained,
            _ => return,
        };
        let Some(when) =
            condition::find(&status.conditions, DELIVERED).map(|c| c.last_transition_time.0)
        else {
            return;
        };
        let now = Timestamp::now();
        if minute(when) <= minute(now) - WINDOW_MINUTES {
            return;
        }
        let key = (message.uid().unwrap_or_default(), slot(outcome));
        {
            let mut inner = self.lock();
            if inner.seen.contains_key(&key) {
                return;
            }
            if inner.pruned != minute(now) {
                let oldest_kept = minute(now) - WINDOW_MINUTES;
                inner.seen.retain(|_, m| *m > oldest_kept);
                inner.pruned = minute(now);
            }
            if inner.seen.len() >= MAX_SEEN {
                return;
            }
            inner.seen.insert(key, minute(when));
        }
        if let Some(provider) = ProviderId::of(message) {
            self.count_at(provider, outcome, when.min(now));
        }
    }

    /// The figures of every provider whose counts changed since written.
    fn changed(&self, now: Timestamp) -> Vec<(ProviderId, Counts)> {
        let oldest_kept = minute(now) - WINDOW_MINUTES;
        let mut inner = self.lock();
        let mut out = Vec::new();
        let Inner {
            buckets, written, ..
        } = &mut *inner;
        buckets.retain(|provider, buckets| {
            buckets.retain(|(m, _)| *m > oldest_kept);
            let mut totals = Counts::default();
            for (_, counts) in buckets.iter() {
                for (t, c) in totals.iter_mut().zip(counts) {
                    *t += c;
                }
            }
            if written.get(provider) != Some(&totals) {
                out.push((provider.clone(), totals));
            }
            !buckets.is_empty() || totals != Counts::default()
        });
        out
    }

    fn mark_written(&self, provider: ProviderId, counts: Counts) {
        self.lock().written.insert(provider, counts);
    }

    /// The status figures for `counts` at `now`.
    fn recent(&self, counts: Counts, now: Timestamp) -> RecentActivity {
        let window_start = now
            .checked_sub(jiff::SignedDuration::from_mins(WINDOW_MINUTES))
            .unwrap_or(now);
        RecentActivity {
            window_seconds: (WINDOW_MINUTES * 60) as u32,
            since: Time(window_start.max(self.started)),
            sent: counts[0],
            failed: counts[1],
            delivered: counts[2],
            bounced: counts[3],
            complained: counts[4],
        }
    }

    /// Writes the changed figures every `WRITE_EVERY`, until the process
    /// ends.
    pub async fn run(self: std::sync::Arc<Self>, client: Client) {
        let mut tick = tokio::time::interval(WRITE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Timestamp::now();
            for (provider, counts) in self.changed(now) {
                let patch = serde_json::json!({"status": {"recent": self.recent(counts, now)}});
                match write(&client, &provider, &patch).await {
                    Ok(()) => self.mark_written(provider, counts),
                    // Gone: nothing to write to; counted as written.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.mark_written(provider, counts)
                    }
                    Err(e) => {
                        warn!(%provider, error = %e, "writing the provider's recent activity failed; tried again")
                    }
                }
            }
        }
    }
}

async fn write(
    client: &Client,
    provider: &ProviderId,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let params = PatchParams::default();
    match provider {
        ProviderId::Namespaced { namespace, name } => {
            Api::<EmailProvider>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &Patch::Merge(patch))
                .await
                .map(drop)
        }
        ProviderId::Cluster { name } => Api::<ClusterEmailProvider>::all(client.clone())
            .patch_status(name, &params, &Patch::Merge(patch))
            .await
            .map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> ProviderId {
        ProviderId::Namespaced {
            namespace: "team".into(),
            name: "p".into(),
        }
    }

    fn delivered(uid: &str, phase: &str, at: Timestamp) -> EmailMessage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": uid, "namespace": "team", "uid": uid},
            "spec": {"providerRef": {"name": "p"}, "to": ["b@example.org"], "subject": "s", "text": "t"},
            "status": {"phase": phase, "conditions": [{"type": "Delivered", "status": "True",
                "reason": phase, "message": "", "lastTransitionTime": at.to_string()}]}
        }))
        .expect("a message")
    }

    #[test]
    fn counts_over_the_last_hour_are_written_only_when_they_change() {
        let activity = Activity::default();
        let now = Timestamp::now();
        activity.count_at(provider(), Outcome::Sent, now);
        activity.count_at(provider(), Outcome::Sent, now);
        activity.count_at(provider(), Outcome::Failed, now);
        let changed = activity.changed(now);
        assert_eq!(changed, vec![(provider(), [2, 1, 0, 0, 0])]);
        activity.mark_written(provider(), changed[0].1);
        assert!(activity.changed(now).is_empty(), "nothing new");
        let later = now
            .checked_add(jiff::SignedDuration::from_mins(61))
            .expect("a time");
        assert_eq!(
            activity.changed(later),
            vec![(provider(), [0, 0, 0, 0, 0])],
            "an hour later the window is empty, and says so once"
        );
        activity.mark_written(provider(), [0; 5]);
        assert!(activity.changed(later).is_empty());
    }

    #[test]
    fn a_delivery_outcome_counts_once_and_only_within_the_hour() {
        let activity = Activity::default();
        let now = Timestamp::now();
        let message = delivered("u1", "Delivered", now);
        activity.observe(&message);
        activity.observe(&message);
        activity.observe(&delivered("u1", "Bounced", now));
        let long_ago = now
            .checked_sub(jiff::SignedDuration::from_mins(90))
            .expect("a time");
        activity.observe(&delivered("u2", "Delivered", long_ago));
        assert_eq!(activity.changed(now), vec![(provider(), [0, 0, 1, 1, 0])]);
    }
}
