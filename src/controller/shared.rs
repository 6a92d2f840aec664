//! One watch per kind, shared by every controller that needs it (the
//! provider controller and the messages it wakes, say). A cached watch
//! fills its cache first and only then hands each change on, so no
//! controller can see a change before the cache holds it (objects of the
//! initial list are handed on as they are listed, and the cache holds them
//! all once the list is complete: controllers wait for that). Deletions are
//! handed on too, for the controllers they wake. Whether a cache has listed
//! everything is a `Ready` signal any number of tasks can wait on: kube's
//! own `Store::wait_until_ready` wakes only the last of several waiters, so
//! it is left to the controller that owns the store. Each subscriber has a
//! bounded buffer: a slow one holds the watch back rather than grow memory,
//! so every subscriber must be polled from the start (see `run`).

use std::future::Future;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Changes buffered per subscriber before the watch waits for it.
const BUFFER: usize = 1024;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or changed (or listed when the watch starts).
    Applied,
    /// Deleted.
    Deleted,
}

/// Whether a cache has listed everything once; any number may wait.
#[derive(Clone)]
pub struct Ready(watch::Receiver<bool>);

impl Ready {
    /// Waits until the cache has listed everything; `false` when its watch
    /// stopped first.
    pub async fn wait(&self) -> bool {
        let mut ready = self.0.clone();
        ready.wait_for(|listed| *listed).await.is_ok()
    }

    /// A signal already given (for a cache that is not used).
    pub fn given() -> Self {
        Ready(watch::channel(true).1)
    }
}

/// The events of `events`, with `Ready` given at the first InitDone (after
/// the cache, reflected before this, has swapped the list in).
pub fn signal_ready<K, S>(events: S) -> (impl Stream<Item = S::Item> + Send + 'static, Ready)
where
    K: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let (listed, ready) = watch::channel(false);
    let events = events.inspect(move |event| {
        if matches!(event, Ok(Event::InitDone)) {
            listed.send_replace(true);
        }
    });
    (events, Ready(ready))
}

/// A watch shared by `N` subscribers: the cache, the subscribers' streams,
/// and the future that drives them all.
pub struct Shared<K, D>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The cache (empty for an uncached watch).
    pub store: Store<K>,
    /// Given once the cache has listed everything.
    pub ready: Ready,
    /// One stream of changes per subscriber.
    pub feeds: Vec<Feed<K>>,
    /// Runs the watch; it must be polled for anything to arrive.
    pub driver: D,
}

/// One subscriber's changes.
pub struct Feed<K> {
    changes: mpsc::Receiver<(Arc<K>, Change)>,
}

impl<K: Send + Sync + 'static> Feed<K> {
    /// A feed that has ended: nothing arrives.
    pub fn empty() -> Self {
        let (_, changes) = mpsc::channel(0);
        Self { changes }
    }

    /// Created and changed objects only: a controller's own kind.
    pub fn applied(self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changes.filter_map(|(object, change)| async move {
            (change == Change::Applied).then_some(object)
        })
    }

    /// Every change, deletions included: what wakes another kind.
    pub fn touched(self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.changes.map(|(object, _)| object)
    }

    /// Deletions, and changes that alter what `fingerprint` reads of an
    /// object (`key` names it): what wakes another kind when the rest of
    /// the object, such as counts in its status, changes often.
    pub fn touched_where(
        self,
        key: impl Fn(&K) -> String + Send + 'static,
        fingerprint: impl Fn(&K) -> u64 + Send + 'static,
    ) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let mut seen: std::collections::HashMap<String, u64> = Default::default();
        self.changes.filter_map(move |(object, change)| {
            let key = key(&object);
            let wakes = match change {
                Change::Deleted => {
                    seen.remove(&key);
                    true
                }
                Change::Applied => {
                    let print = fingerprint(&object);
                    seen.insert(key, print) != Some(print)
                }
            };
            futures::future::ready(wakes.then_some(object))
        })
    }
}

/// A cached watch of `events` for `subscribers`.
pub fn cached<K, S>(
    events: S,
    subscribers: usize,
) -> Shared<K, impl Future<Output = ()> + Send + 'static>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let (events, ready) = signal_ready(reflector::reflector(writer, events));
    let changes = events.flat_map(|event| {
        futures::stream::iter(
            changes_of(event)
                .into_iter()
                .map(|(object, change)| (Arc::new(object), change)),
        )
    });
    let (feeds, driver) = fan_out(changes, subscribers);
    Shared {
        store,
        ready,
        feeds,
        driver,
    }
}

/// An uncached watch of `objects` (each change as the object touched) for
/// `subscribers`: for kinds that only wake others.
pub fn uncached<K, S>(
    objects: S,
    subscribers: usize,
) -> (Vec<Feed<K>>, impl Future<Output = ()> + Send + 'static)
where
    K: Send + Sync + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    let changes = objects.filter_map(|object| async move {
        match object {
            Ok(object) => Some((Arc::new(object), Change::Applied)),
            Err(e) => {
                note_watch_error(&e);
                None
            }
        }
    });
    fan_out(changes, subscribers)
}

/// Logs a failed watch, which the watcher retries. A watch whose version
/// expired (410: the apiserver no longer holds that much history, as at
/// its start or after a compaction) is routine: the watcher lists again.
fn note_watch_error(error: &watcher::Error) {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => {
            debug!(error = %error, "a watch's version expired; listing again");
        }
        _ => warn!(error = %error, "a watch failed; it is retried"),
    }
}

/// The changes one watcher event brings.
fn changes_of<K>(event: Result<Event<K>, watcher::Error>) -> Option<(K, Change)> {
    match event {
        Ok(Event::Apply(object) | Event::InitApply(object)) => Some((object, Change::Applied)),
        Ok(Event::Delete(object)) => Some((object, Change::Deleted)),
        Ok(Event::Init | Event::InitDone) => None,
        Err(e) => {
            note_watch_error(&e);
            None
        }
    }
}

/// Hands every item of `source` to each subscriber in order. A subscriber
/// that has stopped is left out; the source is driven on regardless (it
/// may fill a cache others read).
fn fan_out<K, S>(
    source: S,
    subscribers: usize,
) -> (Vec<Feed<K>>, impl Future<Output = ()> + Send + 'static)
where
    K: Send + Sync + 'static,
    S: Stream<Item = (Arc<K>, Change)> + Send + 'static,
{
    let (senders, feeds): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| {
            let (tx, rx) = mpsc::channel(BUFFER);
            (tx, Feed { changes: rx })
        })
        .unzip();
    let driver = async move {
        let mut senders = senders;
        let mut source = std::pin::pin!(source);
        while let Some(item) = source.next().await {
            let mut open = Vec::with_capacity(senders.len());
            for mut tx in senders {
                if tx.send(item.clone()).await.is_ok() {
                    open.push(tx);
                }
            }
            senders = open;
        }
    };
    (feeds, driver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_each_change_once_the_cache_holds_it() {
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(map("a"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(map("b"))),
            Ok(Event::Delete(map("a"))),
        ]);
        let Shared {
            store,
            ready,
            mut feeds,
            driver,
        } = cached(events, 2);
        let touched = feeds.pop().expect("two feeds").touched();
        let applied = feeds.pop().expect("two feeds").applied();
        let seen_store = store.clone();
        let applied = applied
            .map(move |object| {
                let name = object.metadata.name.clone().unwrap_or_default();
                // The cache already holds what a subscriber is handed.
                let held = seen_store
                    .state()
                    .iter()
                    .any(|m| m.metadata.name == object.metadata.name);
                (name, held)
            })
            .collect::<Vec<_>>();
        let touched = touched
            .map(|object| object.metadata.name.clone().unwrap_or_default())
            .collect::<Vec<_>>();
        let ((), applied, touched) = futures::join!(driver, applied, touched);
        // Listed objects arrive as listed; a later change only once held.
        let names: Vec<_> = applied.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(applied[1].1, "b handed on before the cache held it");
        assert_eq!(touched, vec!["a", "b", "a"]);
        assert_eq!(store.state().len(), 1, "a was deleted");
        assert!(ready.wait().await, "listed");
    }

    #[tokio::test]
    async fn every_waiter_hears_that_the_cache_is_ready() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (events, ready) = signal_ready::<ConfigMap, _>(rx);
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let ready = ready.clone();
                tokio::spawn(async move { ready.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        tx.unbounded_send(Ok(Event::Init)).expect("sent");
        tx.unbounded_send(Ok(Event::InitDone)).expect("sent");
        drop(tx);
        let consumed = tokio::spawn(events.count());
        for waiter in waiters {
            assert!(waiter.await.expect("joined"));
        }
        assert_eq!(consumed.await.expect("joined"), 2);
        assert!(ready.wait().await, "and a late one");
    }

    #[tokio::test]
    async fn only_changes_that_alter_the_fingerprint_and_deletions_wake() {
        let labelled = |name: &str, label: &str| {
            let mut m = map(name);
            m.metadata.labels = Some([("l".to_string(), label.to_string())].into());
            m
        };
        let events = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(labelled("a", "1"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(labelled("a", "1"))),
            Ok(Event::Apply(labelled("a", "2"))),
            Ok(Event::Delete(labelled("a", "2"))),
        ]);
        let Shared {
            mut feeds, driver, ..
        } = cached(events, 1);
        let woken = feeds
            .pop()
            .expect("a feed")
            .touched_where(
                |m: &ConfigMap| m.metadata.name.clone().unwrap_or_default(),
                |m| u64::from(m.metadata.labels.as_ref().is_some_and(|l| l["l"] == "2")),
            )
            .map(|m| m.metadata.labels.clone().unwrap_or_default()["l"].clone())
            .collect::<Vec<_>>();
        let ((), woken) = futures::join!(driver, woken);
        assert_eq!(woken, ["1", "2", "2"], "the unchanged repeat woke nobody");
    }

    #[tokio::test]
    async fn a_subscriber_that_stopped_holds_nothing_back() {
        let events = futures::stream::iter((0..3000).map(|i| Ok(map(&format!("m{i}")))));
        let (mut feeds, driver) = uncached(events, 2);
        drop(feeds.pop());
        let counted = feeds.pop().expect("a feed").touched().count();
        let ((), count) = futures::join!(driver, counted);
        assert_eq!(count, 3000);
    }
}
