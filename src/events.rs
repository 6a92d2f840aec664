//! Kubernetes Events, as the controller and the webhook receiver both
//! publish them: reported by mailroom and this pod, with a bounded note. A
//! failure to publish is logged, never fatal: an Event is a courtesy, the
//! status is the record.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

/// The longest note an Event carries; longer ones are cut.
const MAX_NOTE_CHARS: usize = 1024;

/// Publishes Events.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events published with `client`, reported by [`reporter`].
    pub fn new(client: Client) -> Self {
        Self {
            recorder: Recorder::new(client, reporter()),
        }
    }

    /// Publishes an Event about `object`.
    pub async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }
}

/// Who Events say reported them: mailroom, and this pod (or host).
pub fn reporter() -> Reporter {
    Reporter {
        controller: "mailroom".into(),
        instance: std::env::var("POD_NAME").ok().or_else(hostname),
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
}
