//! One webhook request: find the provider's key, check the signature, read
//! the events, match them to messages, queue the status writes and answer
//! once they are done (200), or with why not: 401 (signature), 400
//! (unreadable), 404 (no such provider or no webhook), 406 (Mailgun's
//! legacy form-encoded webhooks, which are not read), 503 (not ready,
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
use super::signature::{self, Refused};
use crate::api::ProviderId;
use crate::delivery::writer::{Applied, Routed, Target};

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
    if let Some(why) = payload::legacy_form(endpoint.service, headers) {
        warn!(provider = %scope, "{why}");
        return answer((StatusCode::NOT_ACCEPTABLE, why));
    }
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
    let (by_message, mut unknown) = route(receiver, &scope, &endpoint, payload.reported);
    match write_all(receiver, &scope, by_message).await {
        Ok(not_found) => unknown += not_found,
        Err(refusal) => return answer(refusal),
    }
    if unknown > 0 {
        metrics.count_webhook_unknown(&scope, service, unknown);
    }
    for (type_, count) in types {
        metrics.count_webhook_events(&scope, service, &type_, count);
    }
    answer((StatusCode::OK, "ok".into()))
}

/// The events grouped by the message their origin names, and how many name
/// none this provider may write: no origin (sent before mailroom wrote
/// one, or by another tool), or a namespace the provider does not serve.
fn route(
    receiver: &Receiver,
    scope: &ProviderId,
    endpoint: &super::keys::Endpoint,
    reported: Vec<payload::Reported>,
) -> (HashMap<Target, Vec<Routed>>, u64) {
    let mut by_message: HashMap<Target, Vec<Routed>> = HashMap::new();
    let mut unknown = 0;
    for reported in reported {
        let Some(origin) = reported.origin else {
            debug!(provider = %scope, id = %reported.message_id, "event without mailroom's origin");
            unknown += 1;
            continue;
        };
        let allowed = match scope {
            ProviderId::Namespaced { namespace, .. } => *namespace == origin.namespace,
            ProviderId::Cluster { .. } => receiver
                .settings
                .namespace
                .as_ref()
                .is_none_or(|served| *served == origin.namespace),
        };
        if !allowed {
            debug!(provider = %scope, namespace = %origin.namespace, "event for a namespace this provider does not serve");
            unknown += 1;
            continue;
        }
        let target = Target {
            message: ObjectRef::new(&origin.name).within(&origin.namespace),
            uid: origin.uid,
            provider: scope.clone(),
            soft_bounces: endpoint.soft_bounces.clone(),
            unsubscribe: endpoint.unsubscribe.clone(),
        };
        by_message.entry(target).or_default().push(Routed {
            event: reported.event,
            recipient: origin.recipient,
        });
    }
    (by_message, unknown)
}

/// How often events for a message not recorded as sent yet are tried
/// again within the grace the settings give.
const NOT_YET_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Writes every message's events; how many found no message of this
/// provider, or the answer that asks the service to retry.
async fn write_all(
    receiver: &Receiver,
    scope: &ProviderId,
    mut by_message: HashMap<Target, Vec<Routed>>,
) -> Result<u64, Answer> {
    let metrics = &receiver.telemetry.metrics;
    let grace_until = tokio::time::Instant::now() + receiver.settings.unknown_grace();
    let mut unknown = 0;
    loop {
        let mut pending = Vec::with_capacity(by_message.len());
        for (target, events) in by_message.drain() {
            match receiver.queue.submit(target.clone(), events.clone()) {
                Ok(done) => pending.push((target, events, done)),
                Err(full) => {
                    warn!(provider = %scope, "{full}: asking the service to retry");
                    return Err((StatusCode::SERVICE_UNAVAILABLE, full.to_string()));
                }
            }
        }
        metrics.set_webhook_queue(receiver.queue.depth());
        let (targets, dones): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|(t, e, d)| ((t, e), d)).unzip();
        let written = tokio::time::timeout(
            receiver.settings.ack_timeout(),
            futures::future::join_all(dones),
        )
        .await;
        metrics.set_webhook_queue(receiver.queue.depth());
        let Ok(results) = written else {
            warn!(provider = %scope, "status writes are slow: asking the service to retry");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the events are queued but not written yet: retry".into(),
            ));
        };
        for ((target, events), result) in targets.into_iter().zip(results) {
            match result {
                Ok(Ok(Applied::Gone)) => unknown += 1,
                Ok(Ok(Applied::Foreign)) => {
                    warn!(provider = %scope, message = %target.message, "an event names a message of another provider: not written");
                    unknown += 1;
                }
                Ok(Ok(Applied::NotYet)) => {
                    by_message.insert(target, events);
                }
                Ok(Ok(Applied::Recorded | Applied::Unchanged)) => {}
                Ok(Err(e)) => {
                    warn!(provider = %scope, error = %e, "webhook events not written");
                    return Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
                }
                Err(_) => {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the writer stopped: retry".into(),
                    ));
                }
            }
        }
        if by_message.is_empty() {
            return Ok(unknown);
        }
        if tokio::time::Instant::now() + NOT_YET_RETRY > grace_until {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "a message is not recorded as sent yet: retry".into(),
            ));
        }
        tokio::time::sleep(NOT_YET_RETRY).await;
    }
}
