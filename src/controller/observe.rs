//! Keeps the probes, the waiting-messages gauge and the ledger's and claim
//! journal's gauges current: the caches are
//! marked synced once they have listed everything, and shutdown is marked
//! for /readyz.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::shared::Ready;
use crate::admin::Telemetry;
use crate::api::condition::Reason;
use crate::api::condition::{SENT, find};
use crate::api::{EmailMessage, Phase};
use crate::journal::Journal;
use crate::ledger::Ledger;

/// How often the waiting-messages gauge is counted again.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown`, then marks it.
pub async fn observe(
    providers: Ready,
    messages_listed: Ready,
    messages: Store<EmailMessage>,
    ledger: Arc<Ledger>,
    journal: Arc<Journal>,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) {
    let count = async {
        if !providers.wait().await || !messages_listed.wait().await {
            return;
        }
        telemetry.health.caches_synced.store(true, Ordering::SeqCst);
        loop {
            count_waiting(&messages, &telemetry);
            let ledger = ledger.size();
            telemetry.metrics.set_ledger(ledger.entries, ledger.writes);
            telemetry
                .metrics
                .set_journal(journal.len(), journal.writes());
            tokio::time::sleep(COUNT_EVERY).await;
        }
    };
    tokio::select! {
        _ = count => {},
        _ = shutdown => {},
    }
    telemetry.health.shutting_down.store(true, Ordering::SeqCst);
}

/// Sets `messages_waiting` and `messages_waiting_oldest_seconds` from the
/// message cache (no API call).
fn count_waiting(messages: &Store<EmailMessage>, telemetry: &Telemetry) {
    let mut counts: HashMap<(String, String, String), i64> = HashMap::new();
    let mut oldest: HashMap<(String, String), f64> = HashMap::new();
    let now = jiff::Timestamp::now();
    for m in messages.state() {
        let Some(status) = &m.status else { continue };
        if status.phase != Some(Phase::Pending) {
            continue;
        }
        let reason = find(&status.conditions, SENT)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let namespace = m.namespace().unwrap_or_default();
        let provider = m.spec.provider_ref.name.clone();
        if reason != Reason::Scheduled.as_str()
            && let Some(created) = &m.metadata.creation_timestamp
        {
            let age = now.duration_since(created.0).as_secs_f64().max(0.0);
            let entry = oldest
                .entry((namespace.clone(), provider.clone()))
                .or_default();
            *entry = entry.max(age);
        }
        *counts.entry((namespace, provider, reason)).or_default() += 1;
    }
    telemetry.metrics.set_waiting(counts);
    telemetry.metrics.set_waiting_oldest(oldest);
}
