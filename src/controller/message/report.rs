//! Tells the world how an attempt went: the metrics of sends and failures,
//! a log line, and an Event on Sent, Failed and Unknown.

use std::time::Duration;

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::condition::{self, Reason, SENT};
use crate::api::{EmailMessage, EmailMessageStatus, Phase, ProviderId};
use crate::controller::activity::Outcome;
use crate::controller::context::Context;

/// Counts an attempt's outcome and its duration.
pub fn attempt_metrics(
    ctx: &Context,
    message: &EmailMessage,
    transport: &str,
    outcome: &EmailMessageStatus,
    elapsed: Duration,
) {
    let metrics = &ctx.telemetry.metrics;
    metrics.observe_send(transport, elapsed);
    match outcome.phase {
        Some(Phase::Sent) => {
            let namespace = message.namespace().unwrap_or_default();
            let sender = ProviderId::sender(message, Some(outcome));
            let provider = sender.as_ref().map_or("", |p| p.name());
            metrics.count_sent(&namespace, provider, transport);
            if let Some(sender) = sender {
                ctx.activity.count(sender, Outcome::Sent);
            }
        }
        Some(Phase::Failed | Phase::Unknown) => count_failure(ctx, message, outcome),
        _ => {}
    }
}

/// Counts a message that ended Failed or Unknown, by its reason.
fn count_failure(ctx: &Context, message: &EmailMessage, status: &EmailMessageStatus) {
    let reason = condition::find(&status.conditions, SENT)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let namespace = message.namespace().unwrap_or_default();
    let sender = ProviderId::sender(message, Some(status));
    // A routed message that never reached a provider counts as its route's.
    let provider = sender
        .as_ref()
        .map_or(message.spec.provider_ref.name.as_str(), |p| p.name());
    ctx.telemetry
        .metrics
        .count_failed(&namespace, provider, &reason);
    if let Some(sender) = sender {
        ctx.activity.count(sender, Outcome::Failed);
    }
}

/// A message the gate ended (Failed or Unknown): counted, and an Event.
pub async fn concluded(
    ctx: &Context,
    written: &EmailMessage,
    phase: Phase,
    why: Reason,
    text: &str,
) {
    if let Some(status) = &written.status {
        count_failure(ctx, written, status);
    }
    let event_reason = if phase == Phase::Unknown {
        "Unknown"
    } else {
        "Failed"
    };
    let note = format!("{why}: {text}");
    publish(ctx, written, EventType::Warning, event_reason, note).await;
}

/// Logs the outcome of an attempt and publishes an Event on Sent, Failed
/// and Unknown.
pub async fn announce(
    ctx: &Context,
    message: &EmailMessage,
    status: &EmailMessageStatus,
    elapsed: Duration,
) {
    let error = status.last_error.as_ref();
    let (type_, event_reason, note) = match status.phase {
        Some(Phase::Sent) => {
            info!(
                attempts = status.attempts,
                ms = elapsed.as_millis() as u64,
                "sent"
            );
            if !ctx.settings.sent_events {
                return;
            }
            let reply = status
                .server_reply
                .as_ref()
                .map(|r| format!(" ({} {})", r.code, r.message))
                .unwrap_or_default();
            let note = format!("accepted by the server{reply}");
            (EventType::Normal, "Sent", note)
        }
        Some(phase @ (Phase::Failed | Phase::Unknown)) => {
            let why = error
                .map(|e| format!("{}: {}", e.reason, e.message))
                .unwrap_or_default();
            let (event_reason, what) = if phase == Phase::Unknown {
                ("Unknown", "outcome unknown")
            } else {
                ("Failed", "failed")
            };
            let reason = error.map(|e| e.reason.as_str());
            warn!(attempts = status.attempts, reason, "{what}");
            (EventType::Warning, event_reason, why)
        }
        _ => {
            let reason = error.map(|e| e.reason.as_str());
            info!(
                attempts = status.attempts,
                reason, "attempt failed; will retry"
            );
            return;
        }
    };
    publish(ctx, message, type_, event_reason, note).await;
}

/// Publishes an Event about `message`.
pub async fn publish(
    ctx: &Context,
    message: &EmailMessage,
    type_: EventType,
    event_reason: &str,
    note: String,
) {
    let object = message.object_ref(&());
    ctx.events
        .publish(&object, type_, event_reason, "Send", &note)
        .await;
}
