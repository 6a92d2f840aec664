//! Watches that decode one object at a time. The apiserver accepts what its
//! schema allows; the controller's types can be stricter (a time the
//! controller cannot represent, a number past its type). Decoded as a whole
//! list, one such object would fail every list and watch of its kind and so
//! stop all mail. Here each object is decoded on its own (kube's
//! `DeserializeGuard`): a bad one is left out of the stream, and its status
//! says why (a deterministic merge patch, so writing it twice changes
//! nothing and cannot loop), while every other object flows on.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::{DeserializeGuard, error_boundary::InvalidObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::api::condition::Reason;

/// How an object that cannot be decoded is marked in its status.
#[derive(Debug, Clone, Copy)]
pub enum Mark {
    /// A message: phase Failed, `Sent` False, reason InvalidRequest.
    Message,
    /// A provider or template: `Ready` False, reason InvalidSpec.
    Ready,
    /// Nothing is written (another watch of the same kind writes it).
    Nothing,
}

/// The longest decode error kept in a status message.
const MAX_ERROR_CHARS: usize = 300;

/// `api`'s objects, each decoded on its own: the ones that decode as `K`
/// flow on; the others are marked as `mark` says and left out.
pub fn watch<K>(
    client: Client,
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    mark: Mark,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let resource = ApiResource::erase::<K>(&Default::default());
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let keep = sort(event, |invalid| {
                if !matches!(mark, Mark::Nothing) {
                    tokio::spawn(write_mark(client.clone(), resource.clone(), invalid, mark));
                }
            });
            futures::future::ready(keep)
        })
}

/// The event with only decoded objects, handing each undecodable one that
/// was added or changed to `bad`. `None` when nothing is left of it.
fn sort<K>(
    event: Result<Event<DeserializeGuard<K>>, watcher::Error>,
    mut bad: impl FnMut(InvalidObject),
) -> Option<Result<Event<K>, watcher::Error>> {
    let mut good = |guard: DeserializeGuard<K>| match guard.0 {
        Ok(object) => Some(object),
        Err(invalid) => {
            bad(invalid);
            None
        }
    };
    match event {
        Err(e) => Some(Err(e)),
        Ok(Event::Init) => Some(Ok(Event::Init)),
        Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
        Ok(Event::Apply(guard)) => good(guard).map(|k| Ok(Event::Apply(k))),
        Ok(Event::InitApply(guard)) => good(guard).map(|k| Ok(Event::InitApply(k))),
        // A deleted object that never decoded was never in the stream.
        Ok(Event::Delete(guard)) => guard.0.ok().map(|k| Ok(Event::Delete(k))),
    }
}

/// The status patch that marks an undecodable object, the same each time
/// for the same object.
pub fn mark_patch(invalid: &InvalidObject, mark: Mark) -> Option<serde_json::Value> {
    let error: String = invalid.error.chars().take(MAX_ERROR_CHARS).collect();
    let text = format!("the controller cannot read this object: {error}");
    let generation = invalid.metadata.generation;
    let since = invalid.metadata.creation_timestamp.clone();
    let condition = |type_: &str, status: &str, why: Reason| {
        json!({"type": type_, "status": status, "reason": why, "message": text,
               "lastTransitionTime": since, "observedGeneration": generation})
    };
    match mark {
        Mark::Nothing => None,
        Mark::Message => Some(json!({"status": {
            "phase": "Failed",
            "observedGeneration": generation,
            "lastError": {"reason": Reason::InvalidRequest, "message": text, "retryable": false},
            "conditions": [
                condition("Sent", "False", Reason::InvalidRequest),
                condition("Ready", "False", Reason::InvalidRequest),
                condition("Stalled", "True", Reason::InvalidRequest),
            ],
        }})),
        Mark::Ready => Some(json!({"status": {
            "observedGeneration": generation,
            "conditions": [
                condition("Ready", "False", Reason::InvalidSpec),
                condition("Stalled", "True", Reason::InvalidSpec),
            ],
        }})),
    }
}

async fn write_mark(client: Client, resource: ApiResource, invalid: InvalidObject, mark: Mark) {
    let Some(patch) = mark_patch(&invalid, mark) else {
        return;
    };
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match &invalid.metadata.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, &resource),
        None => Api::all_with(client, &resource),
    };
    warn!(
        namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
        name,
        kind = resource.kind,
        "an object the controller cannot read is left out; its status says why"
    );
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(error = %e, name, "marking an object that cannot be read failed");
    }
}

/// A label no object carries: the probe below lists nothing.
const PROBE_SELECTOR: &str = "mailroom.dev/watch-list-probe=none";

/// How `api` is best listed when its watch starts: the apiserver's
/// streaming list (a watch that sends the current objects first, one at a
/// time, with no large list response to hold) where it serves one, pages
/// of `page_size` otherwise. One watch request that selects nothing tells.
pub async fn list_config<K>(api: &Api<K>, page_size: u32) -> watcher::Config
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let probe = kube::api::WatchParams::streaming_lists()
        .labels(PROBE_SELECTOR)
        .timeout(2);
    let first = match api.watch(&probe, "0").await {
        Ok(stream) => std::pin::pin!(stream).next().await,
        Err(e) => Some(Err(e)),
    };
    match first {
        Some(Ok(_)) => watcher::Config::default().streaming_lists(),
        outcome => {
            let why = match outcome {
                Some(Err(e)) => e.to_string(),
                _ => "the watch ended without its initial-events bookmark".into(),
            };
            tracing::info!(
                why,
                "the apiserver serves no streaming list; listing in pages"
            );
            watcher::Config::default().page_size(page_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmailMessage;

    fn guarded(value: serde_json::Value) -> DeserializeGuard<EmailMessage> {
        serde_json::from_value(value).expect("any object decodes as a guard")
    }

    fn message(send_at: &str) -> serde_json::Value {
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
               "metadata": {"name": "m", "namespace": "team", "generation": 1,
                            "creationTimestamp": "2026-12-01T00:00:00Z"},
               "spec": {"providerRef": {"name": "p"}, "to": ["a@example.org"], "subject": "s",
                        "text": "t", "sendAt": send_at}})
    }

    #[test]
    fn a_bad_object_is_left_out_and_handed_over_a_good_one_flows_on() {
        let mut bad = Vec::new();
        let good = sort(
            Ok(Event::InitApply(guarded(message("2026-12-01T09:00:00Z")))),
            |i| bad.push(i),
        );
        assert!(matches!(good, Some(Ok(Event::InitApply(_)))));
        let left_out = sort(
            Ok(Event::InitApply(guarded(message("9999-12-31T23:59:59Z")))),
            |i| bad.push(i),
        );
        assert!(left_out.is_none());
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].metadata.name.as_deref(), Some("m"));
        assert!(matches!(
            sort::<EmailMessage>(Ok(Event::InitDone), |_| {}),
            Some(Ok(Event::InitDone))
        ));
    }

    #[test]
    fn the_mark_is_the_same_each_time_and_bounded() {
        let invalid = InvalidObject {
            error: "x".repeat(10_000),
            metadata: Default::default(),
        };
        let first = mark_patch(&invalid, Mark::Message);
        assert_eq!(first, mark_patch(&invalid, Mark::Message));
        let text = first.expect("a patch")["status"]["lastError"]["message"]
            .as_str()
            .map(str::len);
        assert!(text.is_some_and(|n| n < 400), "{text:?}");
        assert!(mark_patch(&invalid, Mark::Nothing).is_none());
    }
}
