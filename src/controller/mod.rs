//! The controller, run by the leader: one reconciler for EmailProviders
//! (verify, Ready), one for ClusterEmailProviders, one for EmailTemplates
//! (parse) and one for EmailMessages (claim, send, record), sharing verified
//! transports. Each kind is watched once (`shared`) and that watch feeds
//! every controller that needs it: a provider change reaches the messages
//! it wakes only after the provider cache holds it. Secrets and ConfigMaps
//! are watched metadata-only (see `triggers`): no Secret or ConfigMap data
//! ever arrives through a watch.

pub mod access;
pub mod context;
pub mod credentials;
pub mod error;
pub mod leader;
pub mod message;
mod observe;
pub mod provider;
mod shared;
pub mod slots;
pub mod template;
pub mod triggers;
mod wake;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::guarded::{self, Mark};
pub use context::{Context, Settings};
pub use error::Error;

use crate::admin::Telemetry;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate};
use shared::Feed;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` completes; in-flight reconciles
/// finish (and record their outcome) before it returns.
pub async fn run(
    client: Client,
    settings: Settings,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = Box::pin(shutdown).shared();
    let watches = Watches::start(&client, &settings);
    let ctx = context(&client, &settings, &telemetry, &watches);
    let Watches {
        providers,
        templates,
        clusters,
        secrets,
        config_maps,
        drivers,
    } = watches;

    let provider_run = run_providers(
        providers.own,
        secrets.namespaced,
        config_maps.namespaced,
        ctx.clone(),
        shutdown.clone(),
    );
    let cluster_run = match (secrets.cluster, config_maps.cluster) {
        (Some(secrets), Some(maps)) => {
            run_cluster_providers(clusters.own, secrets, maps, ctx.clone(), shutdown.clone())
                .boxed()
        }
        _ => futures::future::ready(()).boxed(),
    };
    let template_run = run_controller(
        Controller::for_shared_stream(templates.own.applied(), ctx.templates.clone()),
        "EmailTemplate",
        template::reconcile,
        ctx.clone(),
        shutdown.clone(),
    );
    let wakes = Wakes {
        providers: providers.wakes,
        templates: templates.wakes,
        cluster_providers: clusters.wakes,
    };
    let (message_run, listed, store) = run_messages(&client, wakes, ctx.clone(), shutdown.clone());
    let providers_listed = ctx.ready.providers.clone();
    let observe = observe::observe(providers_listed, listed, store, telemetry, shutdown.clone());
    // The watches stop with the controllers that read them.
    let watches = drive(drivers, shutdown);
    info!(
        namespace = settings.namespace.as_deref().unwrap_or("<all>"),
        "controller started"
    );
    futures::join!(
        provider_run,
        cluster_run,
        template_run,
        message_run,
        observe,
        watches
    );
    info!("controller stopped");
}

/// Drives the watches until `shutdown`.
async fn drive(drivers: Vec<BoxFuture<'static, ()>>, shutdown: impl Future<Output = ()>) {
    tokio::select! {
        _ = futures::future::join_all(drivers) => {},
        () = shutdown => {},
    }
}

/// A kind watched once for its own controller and the messages it wakes.
struct Pair<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: kube::runtime::reflector::Store<K>,
    ready: shared::Ready,
    own: Feed<K>,
    wakes: Feed<K>,
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
        let shared = shared::cached(events, 2);
        drivers.push(shared.driver.boxed());
        let [own, wakes] = two(shared.feeds);
        Self {
            store: shared.store,
            ready: shared.ready,
            own,
            wakes,
        }
    }
}

/// The leader's watches, one per kind (Secrets and ConfigMaps once per
/// scope), and the futures that drive them.
struct Watches {
    providers: Pair<EmailProvider>,
    templates: Pair<EmailTemplate>,
    clusters: Pair<ClusterEmailProvider>,
    secrets: TriggerWatch<PartialObjectMeta<Secret>>,
    config_maps: TriggerWatch<PartialObjectMeta<ConfigMap>>,
    drivers: Vec<BoxFuture<'static, ()>>,
}

impl Watches {
    /// Every kind is decoded one object at a time (`guarded`): an object
    /// the controller cannot read costs only itself.
    fn start(client: &Client, settings: &Settings) -> Self {
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
        let mut secrets = TriggerWatch::of(|n| triggers::secrets(client, n), ns, home);
        let mut config_maps = TriggerWatch::of(|n| triggers::config_maps(client, n), ns, home);
        drivers.append(&mut secrets.drivers);
        drivers.append(&mut config_maps.drivers);
        Self {
            providers,
            templates,
            clusters,
            secrets,
            config_maps,
            drivers,
        }
    }
}

/// What every reconcile shares, from the watches' caches.
fn context(
    client: &Client,
    settings: &Settings,
    telemetry: &Arc<Telemetry>,
    watches: &Watches,
) -> Arc<Context> {
    let serves_cluster_providers = settings.cluster_provider_namespace.is_some();
    Arc::new(Context {
        client: client.clone(),
        transports: Default::default(),
        providers: watches.providers.store.clone(),
        cluster_providers: watches.clusters.store.clone(),
        templates: watches.templates.store.clone(),
        ready: context::CachesReady {
            providers: watches.providers.ready.clone(),
            templates: watches.templates.ready.clone(),
            cluster_providers: if serves_cluster_providers {
                watches.clusters.ready.clone()
            } else {
                shared::Ready::given()
            },
        },
        unrecorded: Default::default(),
        written: Default::default(),
        telemetry: telemetry.clone(),
        rate_limits: Default::default(),
        sends: slots::SendSlots::new(settings.max_concurrent_sends, telemetry.clone()),
        events: crate::events::Events::new(client.clone()),
        settings: settings.clone(),
    })
}

/// The changes that wake messages.
struct Wakes {
    providers: Feed<EmailProvider>,
    templates: Feed<EmailTemplate>,
    cluster_providers: Feed<ClusterEmailProvider>,
}

/// The EmailMessage controller, on its own watch (messages are cached
/// without managedFields and kubectl's last-applied-configuration, which
/// nothing here reads: this cache is most of the controller's memory), woken
/// by the changes of the providers and templates its messages name. Returns
/// it, the signal that its cache has listed everything, and the cache.
fn run_messages(
    client: &Client,
    wakes: Wakes,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (
    impl Future<Output = ()>,
    shared::Ready,
    kube::runtime::reflector::Store<EmailMessage>,
) {
    let (store, writer) = kube::runtime::reflector::store();
    let events = guarded::watch(
        client.clone(),
        api::<DeserializeGuard<EmailMessage>>(client, ctx.settings.namespace.as_deref()),
        watcher::Config::default(),
        Mark::Message,
    )
    .modify(slim)
    .reflect(writer);
    let (events, listed) = shared::signal_ready(events);
    let concurrency = ctx.settings.concurrency;
    let (by_provider, by_template, by_cluster) = (store.clone(), store.clone(), store.clone());
    let controller = Controller::for_stream(events.applied_objects(), store.clone())
        .with_config(controller::Config::default().concurrency(concurrency))
        .watches_shared_stream(wakes.providers.touched(), move |p| {
            wake::messages_of_provider(&by_provider, &p)
        })
        .watches_shared_stream(wakes.templates.touched(), move |t| {
            wake::messages_of_template(&by_template, &t)
        })
        .watches_shared_stream(wakes.cluster_providers.touched(), move |c| {
            wake::messages_of_cluster_provider(&by_cluster, &c)
        });
    let run = run_controller(
        controller,
        "EmailMessage",
        message::reconcile,
        ctx,
        shutdown,
    );
    (run, listed, store)
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

/// The EmailProvider controller: verifies providers, and again when a
/// Secret or ConfigMap they reference changes.
fn run_providers(
    feed: Feed<EmailProvider>,
    secrets: Feed<PartialObjectMeta<Secret>>,
    config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (by_secret, by_map) = (ctx.providers.clone(), ctx.providers.clone());
    let controller = Controller::for_shared_stream(feed.applied(), ctx.providers.clone())
        .watches_shared_stream(secrets.touched(), move |s| {
            wake::providers_referencing(&by_secret, "Secret", s.namespace(), &s.name_any())
        })
        .watches_shared_stream(config_maps.touched(), move |m| {
            wake::providers_referencing(&by_map, "ConfigMap", m.namespace(), &m.name_any())
        });
    run_controller(
        controller,
        "EmailProvider",
        provider::reconcile,
        ctx,
        shutdown,
    )
}

/// The ClusterEmailProvider controller: as for EmailProviders, with the
/// Secrets and ConfigMaps of the controller's namespace `home`.
fn run_cluster_providers(
    feed: Feed<ClusterEmailProvider>,
    secrets: Feed<PartialObjectMeta<Secret>>,
    config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (by_secret, by_map) = (ctx.cluster_providers.clone(), ctx.cluster_providers.clone());
    let home = ctx
        .settings
        .cluster_provider_namespace
        .clone()
        .unwrap_or_default();
    let home_of_maps = home.clone();
    let controller = Controller::for_shared_stream(feed.applied(), ctx.cluster_providers.clone())
        .watches_shared_stream(secrets.touched(), move |s| {
            let (namespace, name) = (s.namespace(), s.name_any());
            wake::cluster_providers_referencing(&by_secret, "Secret", &home, namespace, &name)
        })
        .watches_shared_stream(config_maps.touched(), move |m| {
            let (namespace, name) = (m.namespace(), m.name_any());
            wake::cluster_providers_referencing(
                &by_map,
                "ConfigMap",
                &home_of_maps,
                namespace,
                &name,
            )
        });
    let reconcile = provider::reconcile_cluster;
    run_controller(controller, "ClusterEmailProvider", reconcile, ctx, shutdown)
}

/// Runs `controller` with `reconcile` until `shutdown`, under the one error
/// policy, logging the reconciles that failed.
fn run_controller<K, R, F>(
    controller: Controller<K>,
    kind: &'static str,
    reconcile: R,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
    R: FnMut(Arc<K>, Arc<Context>) -> F,
    F: Future<Output = Result<Action, Error>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy(kind), ctx)
        .for_each(move |result| async move {
            if let Err(e) = result {
                warn!(error = %e, kind, "reconcile failed");
            }
        })
}

/// Secrets (or ConfigMaps) watched once for both the EmailProviders and
/// the ClusterEmailProviders: one watch when one scope holds both (all
/// namespaces, or the controller's own), two otherwise.
struct TriggerWatch<K> {
    namespaced: Feed<K>,
    cluster: Option<Feed<K>>,
    drivers: Vec<BoxFuture<'static, ()>>,
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

/// Drops what the controller never reads from a cached message, noting how
/// many bytes of the stored object that was (`fits` counts them).
fn slim(message: &mut EmailMessage) {
    let fields = std::mem::take(message.managed_fields_mut());
    let fields_bytes = serde_json::to_vec(&fields).map_or(0, |b| b.len());
    let applied = message
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration")
        .map_or(0, |a| a.len());
    let dropped = fields_bytes + applied;
    if dropped > 0 {
        message.annotations_mut().insert(
            message::fits::DROPPED_BYTES.to_string(),
            dropped.to_string(),
        );
    }
}

/// How soon a failed reconcile is tried again: soon after a conflict (the
/// newer version brings its own reconcile), a little later otherwise (the
/// apiserver failed).
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
const API_FAILURE_RETRY: Duration = Duration::from_secs(2);

/// The one error policy: count the error under `kind`, and look again.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_, error, ctx| {
        ctx.telemetry.metrics.count_reconcile_error(kind);
        if error.is_conflict() {
            Action::requeue(CONFLICT_RETRY)
        } else {
            Action::requeue(API_FAILURE_RETRY)
        }
    }
}
