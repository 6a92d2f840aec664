//! One webhook request: find the provider's key, check the signature, read
//! the events, match them to messages, queue the status writes and answer
//! once they are done (200), or with why not: 401 (signature), 400
//! (unreadable), 404 (no such provider or no webhook), 503 (not ready,
//! queue full, write failed or slow: the service retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, warn};

use super::Receiver;
use super::keys::REFRESH_AFTER;
use super::payload;
use super::queue::Applied;
use super::signature::{self, Refused};
use crate::api::ProviderId;
use crate::api::{DeliveryEvent, EmailMessage};

type Answer = (StatusCode, String);

pub(super) async fn namespaced(
    State(receiver): State<Arc<Receiver>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let scope = ProviderId::Namespaced { namespace, name };
    receive(&receiver, scope, &headers, &body).await
}

pub(super) async fn cluster(
    State(receiver): State<Arc<Receiver>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    receive(&receiver, ProviderId::Cluster { name }, &headers, &body).await
}

async fn receive(
    receiver: &Receiver,
    scope: ProviderId,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let started = Instant::now();
    let (endpoint, age) = receiver.keys.get(&scope, false).await;
    let mut endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(e) if e.is_not_found() => {
            debug!(provider = %scope, error = %e, "webhook for no provider");
            return (StatusCode::NOT_FOUND, e.to_string());
        }
        Err(e) => {
            warn!(provider = %scope, error = %e, "webhook cannot be checked");
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    };
    let service = endpoint.service.name();
    let metrics = &receiver.telemetry.metrics;
    let answer = |answer: Answer| {
        metrics.observe_webhook(&scope, service, started.elapsed());
        answer
    };
    let now = jiff::Timestamp::now().as_second();
    let mut verdict = signature::verify(
        &endpoint.key,
        headers,
        body,
        now,
        endpoint.tolerance_seconds,
    );
    // A key rotated since it was cached: read it again and check once more.
    let mismatch = matches!(verdict, Err(Refused::Mismatch | Refused::Credentials));
    if mismatch
        && age >= REFRESH_AFTER
        && let (Ok(fresh), _) = receiver.keys.get(&scope, true).await
    {
        verdict = signature::verify(&fresh.key, headers, body, now, fresh.tolerance_seconds);
        endpoint = fresh;
    }
    if let Err(refused) = verdict {
        metrics.count_webhook_refused(&scope, service, refused.label());
        warn!(provider = %scope, reason = %refused, "webhook refused");
        return answer((StatusCode::UNAUTHORIZED, refused.to_string()));
    }
    let payload = match payload::read(endpoint.service, headers, body) {
        Ok(payload) => payload,
        Err(e) => {
            warn!(provider = %scope, error = %e, "webhook payload unreadable");
            return answer((StatusCode::BAD_REQUEST, e.to_string()));
        }
    };
    if !receiver.index.synced() {
        return answer((
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: messages are still being listed".into(),
        ));
    }
    // Counted once acknowledged, so a retried request is not counted twice.
    let mut types: HashMap<String, u64> = HashMap::new();
    for reported in &payload.reported {
        *types
            .entry(format!("{:?}", reported.event.type_))
            .or_default() += 1;
    }
    if !payload.ignored.is_empty() {
        types.insert("Ignored".into(), payload.ignored.len() as u64);
    }
    let grace_until = tokio::time::Instant::now() + receiver.settings.unknown_grace();
    let mut by_message: HashMap<ObjectRef<EmailMessage>, Vec<DeliveryEvent>> = HashMap::new();
    let mut unknown = 0;
    for reported in payload.reported {
        let candidates = payload::candidate_ids(endpoint.service, &reported.message_id);
        let grace = grace_until.saturating_duration_since(tokio::time::Instant::now());
        match receiver.index.find(&scope, &candidates, grace).await {
            Some(message) => by_message.entry(message).or_default().push(reported.event),
            None => {
                debug!(provider = %scope, id = %reported.message_id, "event for an unknown message");
                unknown += 1;
            }
        }
    }
    let mut pending = Vec::with_capacity(by_message.len());
    for (message, events) in by_message {
        match receiver.queue.submit(message, events) {
            Ok(done) => pending.push(done),
            Err(full) => {
                warn!(provider = %scope, "{full}: asking the service to retry");
                return answer((StatusCode::SERVICE_UNAVAILABLE, full.to_string()));
            }
        }
    }
    metrics.set_webhook_queue(receiver.queue.depth());
    let written = tokio::time::timeout(
        receiver.settings.ack_timeout(),
        futures::future::join_all(pending),
    )
    .await;
    metrics.set_webhook_queue(receiver.queue.depth());
    let Ok(results) = written else {
        warn!(provider = %scope, "status writes are slow: asking the service to retry");
        return answer((
            StatusCode::SERVICE_UNAVAILABLE,
            "the events are queued but not written yet: retry".into(),
        ));
    };
    for result in results {
        match result {
            Ok(Ok(Applied::Gone)) => unknown += 1,
            Ok(Ok(Applied::Recorded | Applied::Unchanged)) => {}
            Ok(Err(e)) => {
                warn!(provider = %scope, error = %e, "webhook events not written");
                return answer((StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
            }
            Err(_) => {
                return answer((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the writer stopped: retry".into(),
                ));
            }
        }
    }
    if unknown > 0 {
        metrics.count_webhook_unknown(&scope, service, unknown);
    }
    for (type_, count) in types {
        metrics.count_webhook_events(&scope, service, &type_, count);
    }
    answer((StatusCode::OK, "ok".into()))
}
