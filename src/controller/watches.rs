//! The leader's watches: one per kind (Secrets and ConfigMaps once per
//! scope), each shared by the controllers that read it (see `shared`), and
//! the future that drives them until shutdown.

use std::future::Future;

use futures::future::{BoxFuture, FutureExt};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

use super::shared::{self, Feed};
use super::{Settings, api, triggers};
use crate::api::{
    ClusterEmailProvider, EmailProvider, EmailRoute, EmailSuppression, EmailTemplate, EmailUsage,
};
use crate::guarded::{self, Mark};

/// Drives the watches (and the tasks that run beside them) until `shutdown`.
pub(super) async fn drive(
    drivers: Vec<BoxFuture<'static, ()>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::select! {
        _ = futures::future::join_all(drivers) => {},
        () = shutdown => {},
    }
}

/// A kind watched once for its own controller and the messages it wakes.
pub(super) struct Pair<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub(super) store: Store<K>,
    pub(super) ready: shared::Ready,
    pub(super) own: Feed<K>,
    pub(super) wakes: Feed<K>,
}

impl<K> Pair<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// Watches `events` for the two readers; the driver goes to `drivers`.
    fn watch<S>(events: S, drivers: &mut Vec<BoxFuture<'static, ()>>) -> Self
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (store, ready, feeds) = cached(events, 2, drivers);
        let [own, wakes] = two(feeds);
        Self {
            store,
            ready,
            own,
            wakes,
        }
    }
}

/// A cached watch of `events` for `readers`; its driver goes to `drivers`.
#[allow(clippy::type_complexity)]
fn cached<K, S>(
    events: S,
    readers: usize,
    drivers: &mut Vec<BoxFuture<'static, ()>>,
) -> (Store<K>, shared::Ready, Vec<Feed<K>>)
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let shared = shared::cached(events, readers);
    drivers.push(shared.driver.boxed());
    (shared.store, shared.ready, shared.feeds)
}

/// The leader's watches, one per kind (Secrets and ConfigMaps once per
/// scope), and the futures that drive them.
pub(super) struct Watches {
    pub(super) providers: Pair<EmailProvider>,
    pub(super) templates: Pair<EmailTemplate>,
    pub(super) clusters: Pair<ClusterEmailProvider>,
    /// The EmailRoutes: a cache, its signal, and what wakes the messages
    /// naming one (no controller of their own).
    pub(super) routes: (Store<EmailRoute>, shared::Ready, Feed<EmailRoute>),
    /// The EmailUsage objects: a cache read back by `usage`, nothing to wake.
    pub(super) usages: (Store<EmailUsage>, shared::Ready),
    pub(super) secrets: TriggerWatch<PartialObjectMeta<Secret>>,
    pub(super) config_maps: TriggerWatch<PartialObjectMeta<ConfigMap>>,
    /// The suppression lists: a cache and its index, nothing to wake.
    pub(super) suppressions: (super::suppressions::Lists, shared::Ready),
    pub(super) drivers: Vec<BoxFuture<'static, ()>>,
}

impl Watches {
    /// Every kind is decoded one object at a time (`guarded`): an object
    /// the controller cannot read costs only itself.
    pub(super) fn start(client: &Client, settings: &Settings) -> Self {
        let ns = settings.namespace.as_deref();
        let home = settings.cluster_provider_namespace.as_deref();
        let mut drivers = Vec::new();
        let providers = Pair::watch(guarded_watch::<EmailProvider>(client, ns), &mut drivers);
        let templates = Pair::watch(guarded_watch::<EmailTemplate>(client, ns), &mut drivers);
        let cluster_events = match home {
            Some(_) => guarded_watch_all::<ClusterEmailProvider>(client).boxed(),
            None => futures::stream::empty().boxed(),
        };
        let clusters = Pair::watch(cluster_events, &mut drivers);
        let (store, ready, feeds) =
            cached(guarded_watch::<EmailRoute>(client, ns), 1, &mut drivers);
        let wakes = feeds.into_iter().next().unwrap_or_else(Feed::empty);
        let routes = (store, ready, wakes);
        let (store, ready, _) = cached(guarded_watch::<EmailUsage>(client, ns), 0, &mut drivers);
        let usages = (store, ready);
        // Every served namespace, and the one a ClusterEmailProvider's live in.
        let suppression_scope = match (ns, home) {
            (Some(own), Some(home)) if own != home => None,
            _ => ns,
        };
        let index = super::suppression_index::SuppressionIndex::default();
        let indexed = index.clone();
        // Cached without managedFields and kubectl's last applied
        // configuration: an unsubscribed list can hold very many of them.
        let events = guarded_watch::<EmailSuppression>(client, suppression_scope)
            .modify(|s: &mut EmailSuppression| {
                s.metadata.managed_fields = None;
                if let Some(annotations) = s.metadata.annotations.as_mut() {
                    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                }
            })
            .inspect(move |event| {
                if let Ok(event) = event {
                    indexed.observe(event);
                }
            });
        let suppressions = shared::cached(events, 0);
        drivers.push(suppressions.driver.boxed());
        let mut secrets = TriggerWatch::of(|n| triggers::secrets(client, n), ns, home);
        let mut config_maps = TriggerWatch::of(|n| triggers::config_maps(client, n), ns, home);
        drivers.append(&mut secrets.drivers);
        drivers.append(&mut config_maps.drivers);
        Self {
            providers,
            templates,
            clusters,
            routes,
            usages,
            secrets,
            config_maps,
            suppressions: (
                super::suppressions::Lists {
                    store: suppressions.store,
                    index,
                },
                suppressions.ready,
            ),
            drivers,
        }
    }
}

/// The two feeds of a watch shared by a controller and the messages it wakes.
fn two<K: Send + Sync + 'static>(feeds: Vec<Feed<K>>) -> [Feed<K>; 2] {
    let mut feeds = feeds.into_iter();
    match (feeds.next(), feeds.next()) {
        (Some(a), Some(b)) => [a, b],
        // `shared::cached(_, 2)` always makes two.
        _ => [Feed::empty(), Feed::empty()],
    }
}

/// Secrets (or ConfigMaps) watched once for both the EmailProviders and
/// the ClusterEmailProviders: one watch when one scope holds both (all
/// namespaces, or the controller's own), two otherwise.
pub(super) struct TriggerWatch<K> {
    pub(super) namespaced: Feed<K>,
    pub(super) cluster: Option<Feed<K>>,
    pub(super) drivers: Vec<BoxFuture<'static, ()>>,
}

impl<K: Send + Sync + 'static> TriggerWatch<K> {
    fn of<S>(watch: impl Fn(Option<&str>) -> S, namespace: Option<&str>, home: Option<&str>) -> Self
    where
        S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    {
        let one_scope = namespace.is_none() || namespace == home;
        match home {
            None => {
                let (mut feeds, driver) = shared::uncached(watch(namespace), 1);
                Self {
                    namespaced: feeds.pop().unwrap_or_else(Feed::empty),
                    cluster: None,
                    drivers: vec![driver.boxed()],
                }
            }
            Some(_) if one_scope => {
                let (feeds, driver) = shared::uncached(watch(namespace), 2);
                let [namespaced, cluster] = two(feeds);
                Self {
                    namespaced,
                    cluster: Some(cluster),
                    drivers: vec![driver.boxed()],
                }
            }
            Some(home) => {
                let (mut own, own_driver) = shared::uncached(watch(namespace), 1);
                let (mut theirs, their_driver) = shared::uncached(watch(Some(home)), 1);
                Self {
                    namespaced: own.pop().unwrap_or_else(Feed::empty),
                    cluster: theirs.pop(),
                    drivers: vec![own_driver.boxed(), their_driver.boxed()],
                }
            }
        }
    }
}

/// A guarded watch of `K` in `namespace` (all when `None`).
fn guarded_watch<K>(
    client: &Client,
    namespace: Option<&str>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    guarded::watch(
        client.clone(),
        api::<DeserializeGuard<K>>(client, namespace),
        watcher::Config::default(),
        Mark::Ready,
    )
}

/// A guarded watch of the cluster-scoped `K`.
fn guarded_watch_all<K>(
    client: &Client,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    guarded::watch(
        client.clone(),
        Api::<DeserializeGuard<K>>::all(client.clone()),
        watcher::Config::default(),
        Mark::Ready,
    )
}
