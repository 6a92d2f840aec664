//! Writes delivery events into messages' status. Requests hand their events
//! to a fixed set of workers (one message always goes to the same one) and
//! wait for the write; a worker takes everything queued at once and writes
//! each message's events in one status update (the messages side by side),
//! so a burst costs one write per message rather than one per event. Writes
//! are guarded by resourceVersion and retried on conflict. A message that
//! moves to Bounced or Complained gets a Warning Event, after its requests
//! are answered.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::record;
use crate::admin::Telemetry;
use crate::api::ProviderId;
use crate::api::bounces::SoftBouncePolicy;
use crate::api::condition::{self, DELIVERED};
use crate::api::deliverability::{DEFAULT_LIST, Unsubscribe, list_of};
use crate::api::message::ProviderKind;
use crate::api::{DeliveryEvent, DeliveryEventType, EmailMessage, EmailMessageStatus, Phase};
use crate::delivery::soft::SoftBounces;

/// How many jobs one worker takes at once.
const DRAIN: usize = 512;
/// How many messages of one drain a worker writes at once.
const WRITES_PER_WORKER: usize = 8;
/// Writes tried per message before giving up (conflicts with other writers).
const ATTEMPTS: usize = 8;

/// What became of one job's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written into status.
    Recorded,
    /// Already there: nothing to write.
    Unchanged,
    /// The message no longer exists (or was re-created: another UID).
    Gone,
    /// The message names another provider than the one whose webhook
    /// reported it: nothing is written.
    Foreign,
    /// The message is not recorded as sent yet (the event overtook the
    /// controller's write): the service should try again.
    NotYet,
}

/// The message an event is for, as its origin named it, and the provider
/// whose webhook reported it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The message.
    pub message: ObjectRef<EmailMessage>,
    /// Its UID, as sent.
    pub uid: String,
    /// The provider in the webhook's URL.
    pub provider: ProviderId,
    /// The provider's soft bounce policy.
    pub soft_bounces: SoftBouncePolicy,
    /// The provider's unsubscribe (a bulk message's list may come from it).
    pub unsubscribe: Option<Unsubscribe>,
}

/// One event, and the bulk recipient it is about (where echoed).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The event.
    pub event: DeliveryEvent,
    /// The index in spec.recipients, for a bulk message's email.
    pub recipient: Option<u32>,
}

/// Why events could not be written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("writing delivery events to {message}: {why}")]
pub struct WriteFailed {
    /// The message.
    pub message: String,
    /// The API error.
    pub why: String,
}

/// The queue is full: the caller should ask the service to retry.
#[derive(Debug, thiserror::Error)]
#[error("the delivery event queue is full")]
pub struct Full;

struct Job {
    target: Target,
    events: Vec<Routed>,
    done: oneshot::Sender<Result<Applied, WriteFailed>>,
}

/// The workers' inboxes.
pub struct Queue {
    shards: Vec<mpsc::Sender<Job>>,
    hasher: std::collections::hash_map::RandomState,
    depth: Arc<AtomicI64>,
}

impl Queue {
    /// Starts `workers` workers writing with `client`, each holding up to
    /// `capacity` waiting jobs.
    pub fn start(
        client: Client,
        workers: usize,
        capacity: usize,
        home: Option<String>,
        soft: Arc<SoftBounces>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let depth = Arc::new(AtomicI64::new(0));
        let writer = Arc::new(Writer {
            events: crate::events::Events::new(client.clone()),
            client,
            home,
            soft,
            telemetry,
            depth: depth.clone(),
        });
        let shards = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                tokio::spawn(writer.clone().work(rx));
                tx
            })
            .collect();
        Self {
            shards,
            hasher: Default::default(),
            depth,
        }
    }

    /// Jobs waiting or being written.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Queues `events` for `target`; the receiver resolves once written.
    pub fn submit(
        &self,
        target: Target,
        events: Vec<Routed>,
    ) -> Result<oneshot::Receiver<Result<Applied, WriteFailed>>, Full> {
        let shard = (self.hasher.hash_one(&target.message) % self.shards.len() as u64) as usize;
        let (done, result) = oneshot::channel();
        self.shards[shard]
            .try_send(Job {
                target,
                events,
                done,
            })
            .map_err(|_| Full)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }
}

/// What the workers share.
struct Writer {
    client: Client,
    /// Where ClusterEmailProviders' suppression lists live.
    home: Option<String>,
    /// Soft bounces counted towards suppression.
    soft: Arc<SoftBounces>,
    events: crate::events::Events,
    telemetry: Arc<Telemetry>,
    depth: Arc<AtomicI64>,
}

impl Writer {
    async fn work(self: Arc<Self>, mut inbox: mpsc::Receiver<Job>) {
        while let Some(first) = inbox.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < DRAIN {
                match inbox.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut by_message: HashMap<Target, Vec<Job>> = HashMap::new();
            for job in jobs {
                by_message.entry(job.target.clone()).or_default().push(job);
            }
            // Distinct messages: written side by side, so one slow write
            // does not hold the others of its drain behind it. The next
            // drain waits for all of them, so a message is never written
            // twice at once.
            futures::stream::iter(by_message)
                .for_each_concurrent(WRITES_PER_WORKER, |(target, jobs)| {
                    self.write_jobs(target, jobs)
                })
                .await;
        }
    }

    /// Writes one message's jobs of a drain as one status update, then does
    /// what the events ask besides (suppressions, soft bounces,
    /// unsubscribes) and answers the jobs' requests.
    async fn write_jobs(&self, target: Target, jobs: Vec<Job>) {
        let events: Vec<Routed> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
        let (result, moved, list) = match write(&self.client, &target, &events).await {
            Ok(written) => (Ok(written.applied), written.moved, written.list),
            Err(e) => (Err(e), None, None),
        };
        self.depth.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
        if matches!(result, Ok(Applied::Recorded | Applied::Unchanged)) {
            for routed in &events {
                super::suppress::suppress(
                    &self.client,
                    &target.provider,
                    self.home.as_deref(),
                    &routed.event,
                )
                .await;
                super::suppress::count_soft(
                    &self.client,
                    &self.soft,
                    &target.provider,
                    self.home.as_deref(),
                    &target.soft_bounces,
                    &routed.event,
                )
                .await;
                if let Some(list) = &list {
                    self.unsubscribe(&target, list, &routed.event).await;
                }
            }
        }
        for job in jobs {
            let _ = job.done.send(result.clone());
        }
        if let Some(moved) = moved {
            self.announce(moved).await;
        }
    }

    /// Records the service's report that a recipient unsubscribed, on the
    /// message's list (logged if it fails: the event itself is recorded).
    async fn unsubscribe(&self, target: &Target, list: &str, event: &DeliveryEvent) {
        let (DeliveryEventType::Unsubscribed, Some(address)) = (event.type_, &event.recipient)
        else {
            return;
        };
        let namespace = target.message.namespace.as_deref().unwrap_or_default();
        let how = format!("{} reported it ({})", target.provider, event.id);
        let recorded = super::suppress::unsubscribe(
            &self.client,
            namespace,
            list,
            address,
            &how,
            event.time.clone(),
        )
        .await;
        let outcome = match recorded {
            Ok(super::suppress::Unsubscribed::Recorded) => "recorded",
            Ok(super::suppress::Unsubscribed::Already) => "already",
            Ok(super::suppress::Unsubscribed::Refused) => "refused",
            Err(e) => {
                tracing::warn!(namespace, list, error = %e, "recording an unsubscribe failed");
                "failed"
            }
        };
        self.telemetry.metrics.count_unsubscribe("service", outcome);
    }

    /// Counts a message's new phase; a Warning Event for Bounced and
    /// Complained.
    async fn announce(&self, moved: Moved) {
        let phase = format!("{:?}", moved.phase);
        self.telemetry
            .metrics
            .count_delivery_outcome(&moved.provider, &phase);
        if !matches!(moved.phase, Phase::Bounced | Phase::Complained) {
            return;
        }
        let reason = format!("{:?}", moved.phase);
        self.events
            .publish(
                &moved.object,
                EventType::Warning,
                &reason,
                "Deliver",
                &moved.note,
            )
            .await;
    }
}

/// A message whose phase a write moved.
struct Moved {
    object: k8s_openapi::api::core::v1::ObjectReference,
    provider: ProviderId,
    phase: Phase,
    note: String,
}

/// What the events do to `current`'s status, or why they do nothing.
fn lay_over(
    current: &EmailMessage,
    target: &Target,
    events: &[Routed],
    status: &mut EmailMessageStatus,
) -> Result<bool, Applied> {
    if current.metadata.uid.as_deref() != Some(target.uid.as_str()) {
        return Err(Applied::Gone);
    }
    let phase = status.phase;
    if !target.provider.may_have_sent(current) {
        // A routed message names its provider in the status written with
        // the outcome: until that write, an event that overtook it may
        // still be this provider's.
        let routed = current.spec.provider_ref.kind == ProviderKind::EmailRoute;
        let unfinished = !phase.is_some_and(Phase::is_finished);
        return Err(if routed && unfinished {
            Applied::NotYet
        } else {
            Applied::Foreign
        });
    }
    if current.spec.recipients.is_empty() {
        // A single message: once it is recorded as sent. One that failed
        // (or whose send is Unknown) takes no delivery events.
        if phase.and_then(Phase::delivery_rank).is_none() {
            let finished = phase.is_some_and(Phase::is_finished);
            return if finished {
                Ok(false)
            } else {
                Err(Applied::NotYet)
            };
        }
        let events: Vec<DeliveryEvent> = events.iter().map(|r| r.event.clone()).collect();
        return Ok(record::apply(status, &events, current.metadata.generation));
    }
    // A bulk message: once every batch is done, so these writes never
    // race the controller's.
    if !phase.is_some_and(Phase::is_finished) {
        return Err(Applied::NotYet);
    }
    let recipients: Vec<String> = current
        .spec
        .recipients
        .iter()
        .map(|r| r.to.clone())
        .collect();
    let events: Vec<_> = events
        .iter()
        .map(|r| (r.event.clone(), r.recipient))
        .collect();
    Ok(record::apply_bulk(status, &recipients, &events))
}

/// What a write did: its outcome, the phase it moved, and the list the
/// message is on (for an unsubscribe it reports).
struct Written {
    applied: Applied,
    moved: Option<Moved>,
    list: Option<String>,
}

impl Written {
    fn not(applied: Applied) -> Self {
        Self {
            applied,
            moved: None,
            list: None,
        }
    }
}

/// Reads the message, lays the events over its status and writes it back
/// if that changed anything.
async fn write(
    client: &Client,
    target: &Target,
    events: &[Routed],
) -> Result<Written, WriteFailed> {
    let message = &target.message;
    let namespace = message.namespace.clone().unwrap_or_default();
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), &namespace);
    let failed = |why: String| WriteFailed {
        message: format!("{namespace}/{}", message.name),
        why,
    };
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let current = match api.get_status(&message.name).await {
            Ok(current) => current,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Written::not(Applied::Gone)),
            Err(e) => return Err(failed(e.to_string())),
        };
        // An event's unsubscribe is from the message's list, or the
        // default list for a message on none.
        let list = list_of(&current.spec, target.unsubscribe.as_ref())
            .unwrap_or_else(|| DEFAULT_LIST.to_string());
        let written = |applied, moved| Written {
            applied,
            moved,
            list: Some(list.clone()),
        };
        let mut status = current.status.clone().unwrap_or_default();
        let before = status.phase;
        match lay_over(&current, target, events, &mut status) {
            Ok(true) => crate::api::health::message(&mut status, current.metadata.generation),
            Ok(false) => return Ok(written(Applied::Unchanged, None)),
            Err(not) => return Ok(Written::not(not)),
        }
        let moved = (status.phase != before)
            .then_some(status.phase)
            .flatten()
            .map(|phase| Moved {
                object: current.object_ref(&()),
                provider: target.provider.clone(),
                phase,
                note: condition::find(&status.conditions, DELIVERED)
                    .map(|c| c.message.clone())
                    .unwrap_or_default(),
            });
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {
                "phase": status.phase,
                "deliveryEvents": status.delivery_events,
                "conditions": status.conditions,
                "bulk": status.bulk,
            }
        });
        match api
            .patch_status(
                &message.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(written(Applied::Recorded, moved)),
            Err(kube::Error::Api(e)) if e.code == 409 => last = e.message,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Written::not(Applied::Gone)),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    Err(failed(format!(
        "{ATTEMPTS} conflicting writes in a row: {last}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn message(provider_ref: serde_json::Value, status: serde_json::Value) -> EmailMessage {
        serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "shop", "uid": "u-1"},
            "spec": {"providerRef": provider_ref, "to": ["a@example.org"], "subject": "s", "text": "t"},
            "status": status,
        }))
        .expect("message")
    }

    fn delivered_through(current: &EmailMessage, provider: &str) -> Result<bool, Applied> {
        let target = Target {
            message: ObjectRef::from_obj(current),
            uid: "u-1".into(),
            provider: ProviderId::Namespaced {
                namespace: "shop".into(),
                name: provider.into(),
            },
            soft_bounces: SoftBouncePolicy::default(),
            unsubscribe: None,
        };
        let event = DeliveryEvent {
            id: "e-1".into(),
            type_: DeliveryEventType::Delivered,
            time: Time(jiff::Timestamp::from_second(1_000).expect("time")),
            recipient: Some("a@example.org".into()),
            bounce: None,
            detail: None,
        };
        let events = [Routed {
            event,
            recipient: None,
        }];
        let mut status = current.status.clone().unwrap_or_default();
        lay_over(current, &target, &events, &mut status)
    }

    #[test]
    fn an_event_that_overtakes_a_routed_outcome_waits_and_another_providers_is_dropped() {
        let route = json!({"kind": "EmailRoute", "name": "r"});
        // The outcome through `b` is not written yet: `b`'s event waits.
        let unrecorded = message(route.clone(), json!({"phase": "Pending"}));
        assert_eq!(delivered_through(&unrecorded, "b"), Err(Applied::NotYet));
        // Recorded as sent through `a`: `b`'s event is not this message's.
        let sent = message(route, json!({"phase": "Sent", "provider": {"name": "a"}}));
        assert_eq!(delivered_through(&sent, "b"), Err(Applied::Foreign));
        assert_eq!(delivered_through(&sent, "a"), Ok(true));
        // A message naming `a` never takes `b`'s events, sent or not.
        let named = message(json!({"name": "a"}), json!({"phase": "Pending"}));
        assert_eq!(delivered_through(&named, "b"), Err(Applied::Foreign));
        assert_eq!(delivered_through(&named, "a"), Err(Applied::NotYet));
    }
}
