//! Finds the message a delivery event is about: an in-memory map from
//! (provider, service message id) to the message, kept by a watch on
//! EmailMessages. It holds only the ids of sent messages, not the objects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;

use crate::api::{EmailMessage, ProviderId};
use crate::guarded::Mark;

type Key = (ProviderId, String);
type Map = HashMap<Key, ObjectRef<EmailMessage>>;

/// The index. Answers only once the watch has listed every message.
#[derive(Default)]
pub struct Index {
    map: RwLock<Map>,
    synced: AtomicBool,
    changed: Notify,
}

/// The ids a sent message is known by.
fn ids(message: &EmailMessage) -> Vec<String> {
    let Some(status) = &message.status else {
        return Vec::new();
    };
    if !status.phase.is_some_and(|p| p.was_sent()) {
        return Vec::new();
    }
    let mut ids: Vec<String> = status.provider_message_ids.clone();
    if let Some(id) = &status.provider_message_id
        && !ids.contains(id)
    {
        ids.push(id.clone());
    }
    ids
}

fn insert(map: &mut Map, message: &EmailMessage) {
    let scope = ProviderId::of(message);
    let object = ObjectRef::from_obj(message);
    for id in ids(message) {
        map.insert((scope.clone(), id), object.clone());
    }
}

impl Index {
    /// Whether the first list finished.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    fn lookup(&self, scope: &ProviderId, candidates: &[String]) -> Option<ObjectRef<EmailMessage>> {
        let map = self.map.read().ok()?;
        candidates
            .iter()
            .find_map(|id| map.get(&(scope.clone(), id.clone())).cloned())
    }

    /// The message `scope` sent under one of `candidates`; waits up to
    /// `grace` for it to appear (a webhook may overtake the watch event of
    /// the status that holds its id).
    pub async fn find(
        &self,
        scope: &ProviderId,
        candidates: &[String],
        grace: Duration,
    ) -> Option<ObjectRef<EmailMessage>> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let changed = self.changed.notified();
            if let Some(found) = self.lookup(scope, candidates) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.lookup(scope, candidates);
            }
        }
    }

    /// Adds the ids of `message`.
    pub fn note(&self, message: &EmailMessage) {
        if ids(message).is_empty() {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            insert(&mut map, message);
        }
        self.changed.notify_waiters();
    }

    fn forget(&self, message: &EmailMessage) {
        let scope = ProviderId::of(message);
        if let Ok(mut map) = self.map.write() {
            for id in ids(message) {
                map.remove(&(scope.clone(), id));
            }
        }
    }

    fn replace(&self, fresh: Map) {
        if let Ok(mut map) = self.map.write() {
            *map = fresh;
        }
        self.synced.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Keeps the index up to date from a watch on `api`, until the process
    /// ends. A re-list rebuilds it whole, so deletions missed while the
    /// watch was down are dropped.
    pub async fn maintain(
        self: Arc<Self>,
        client: Client,
        api: Api<DeserializeGuard<EmailMessage>>,
    ) {
        let mut relisted: Option<Map> = None;
        // Decoded one at a time: a message the controller cannot read (the
        // controller's own watch marks it) is left out, the rest indexed.
        let stream = crate::guarded::watch(client, api, watcher::Config::default(), Mark::Nothing);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => relisted = Some(Map::new()),
                Ok(Event::InitApply(message)) => {
                    if let Some(map) = relisted.as_mut() {
                        insert(map, &message);
                    }
                }
                Ok(Event::InitDone) => {
                    let fresh = relisted.take().unwrap_or_default();
                    tracing::debug!(ids = fresh.len(), "webhook index listed");
                    self.replace(fresh);
                }
                Ok(Event::Apply(message)) => self.note(&message),
                Ok(Event::Delete(message)) => self.forget(&message),
                Err(e) => {
                    tracing::warn!(error = %e, "watching EmailMessages for the webhook index")
                }
            }
        }
    }
}
