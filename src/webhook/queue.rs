//! Writes delivery events into messages' status. Requests hand their events
//! to a fixed set of workers (one message always goes to the same one) and
//! wait for the write; a worker takes everything queued for a message at
//! once and writes it in one status update, so a burst costs one write per
//! message rather than one per event. Writes are guarded by
//! resourceVersion and retried on conflict.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::record;
use crate::api::{DeliveryEvent, EmailMessage};

/// How many jobs one worker takes at once.
const DRAIN: usize = 512;
/// Writes tried per message before giving up (conflicts with other writers).
const ATTEMPTS: usize = 8;

/// What became of one job's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written into status.
    Recorded,
    /// Already there: nothing to write.
    Unchanged,
    /// The message no longer exists.
    Gone,
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
    message: ObjectRef<EmailMessage>,
    events: Vec<DeliveryEvent>,
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
    pub fn start(client: Client, workers: usize, capacity: usize) -> Self {
        let depth = Arc::new(AtomicI64::new(0));
        let shards = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                tokio::spawn(work(client.clone(), rx, depth.clone()));
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

    /// Queues `events` for `message`; the receiver resolves once written.
    pub fn submit(
        &self,
        message: ObjectRef<EmailMessage>,
        events: Vec<DeliveryEvent>,
    ) -> Result<oneshot::Receiver<Result<Applied, WriteFailed>>, Full> {
        let shard = (self.hasher.hash_one(&message) % self.shards.len() as u64) as usize;
        let (done, result) = oneshot::channel();
        self.shards[shard]
            .try_send(Job {
                message,
                events,
                done,
            })
            .map_err(|_| Full)?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }
}

async fn work(client: Client, mut inbox: mpsc::Receiver<Job>, depth: Arc<AtomicI64>) {
    while let Some(first) = inbox.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < DRAIN {
            match inbox.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut by_message: HashMap<ObjectRef<EmailMessage>, Vec<Job>> = HashMap::new();
        for job in jobs {
            by_message.entry(job.message.clone()).or_default().push(job);
        }
        for (message, jobs) in by_message {
            let events: Vec<DeliveryEvent> =
                jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
            let result = write(&client, &message, &events).await;
            depth.fetch_sub(jobs.len() as i64, Ordering::Relaxed);
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        }
    }
}

/// Reads the message, lays the events over its status and writes it back
/// if that changed anything.
async fn write(
    client: &Client,
    message: &ObjectRef<EmailMessage>,
    events: &[DeliveryEvent],
) -> Result<Applied, WriteFailed> {
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
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Applied::Gone),
            Err(e) => return Err(failed(e.to_string())),
        };
        let mut status = current.status.clone().unwrap_or_default();
        if !record::apply(&mut status, events, current.metadata.generation) {
            return Ok(Applied::Unchanged);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {
                "phase": status.phase,
                "deliveryEvents": status.delivery_events,
                "conditions": status.conditions,
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
            Ok(_) => return Ok(Applied::Recorded),
            Err(kube::Error::Api(e)) if e.code == 409 => last = e.message,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Applied::Gone),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    Err(failed(format!(
        "{ATTEMPTS} conflicting writes in a row: {last}"
    )))
}
