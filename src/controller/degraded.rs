//! Publishes a change of a provider's circuit breaker (see `breaker`): the
//! provider's `Degraded` condition and `status.breaker`, a `ProviderOpen`
//! (Warning) or `ProviderClosed` Event, and the breaker metric. A breaker
//! changes at most once per cool-down, so the Events come at that pace.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::breaker::Change;
use super::context::Context;
use super::provider_status;
use crate::api::condition::{self, DEGRADED, Reason};
use crate::api::{EmailProvider, ProviderId};

/// Writes `change` of `provider`'s breaker where people look.
pub async fn publish(ctx: &Context, provider: &EmailProvider, change: &Change) {
    let id = ProviderId::from_provider(provider);
    let (open, reason, text, event_reason, type_) = match change {
        Change::Opened(status) => {
            let text = format!(
                "circuit breaker open: {} sends in a row failed for the provider's own reason; EmailRoutes pass it over until {}, then one message probes it",
                status.failures, status.open_until.0
            );
            (
                true,
                Reason::BreakerOpen,
                text,
                "ProviderOpen",
                EventType::Warning,
            )
        }
        Change::Closed => (
            false,
            Reason::BreakerClosed,
            "circuit breaker closed: a send went through".to_string(),
            "ProviderClosed",
            EventType::Normal,
        ),
    };
    ctx.telemetry.metrics.set_breaker_open(&id, open);
    if open {
        warn!(provider = %id, "{text}");
    } else {
        info!(provider = %id, "{text}");
    }
    let mut also = serde_json::Map::new();
    let breaker = match change {
        Change::Opened(status) => serde_json::json!(status),
        Change::Closed => serde_json::Value::Null,
    };
    also.insert("breaker".into(), breaker);
    let edit = |conditions: &mut Vec<_>, generation| {
        condition::set(conditions, DEGRADED, open, reason, &text, generation);
    };
    if let Err(e) = provider_status::edit_status(&ctx.client, provider, edit, also).await {
        warn!(error = %e, provider = %id, "the breaker's state could not be written to the provider's status");
    }
    let mut object = provider.object_ref(&());
    if provider.namespace().is_none() {
        // A ClusterEmailProvider seen as a provider.
        object.kind = Some("ClusterEmailProvider".into());
    }
    ctx.events
        .publish(&object, type_, event_reason, "Send", &text)
        .await;
}
