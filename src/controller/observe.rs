//! Keeps the probes and the waiting-messages gauge current: the caches are
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
use crate::api::condition::{SENT, find};
use crate::api::{EmailMessage, Phase};

/// How often the waiting-messages gauge is counted again.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown`, then marks it.
pub async fn observe(
    providers: Ready,
    messages_listed: Ready,
    messages: Store<EmailMessage>,
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
            tokio::time::sleep(COUNT_EVERY).await;
        }
    };
    tokio::select! {
        _ = count => {},
        _ = shutdown => {},
    }
    telemetry.health.shutting_down.store(true, Ordering::SeqCst);
}

/// Sets `messages_waiting` from the message cache (no API call).
fn count_waiting(messages: &Store<EmailMessage>, telemetry: &Telemetry) {
    let mut counts: HashMap<(String, String, String), i64> = HashMap::new();
    for m in messages.state() {
        let Some(status) = &m.status else { continue };
        if status.phase != Some(Phase::Pending) {
            continue;
        }
        let reason = find(&status.conditions, SENT)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let key = (
            m.namespace().unwrap_or_default(),
            m.spec.provider_ref.name.clone(),
            reason,
        );
        *counts.entry(key).or_default() += 1;
    }
    telemetry.metrics.set_waiting(counts);
}
