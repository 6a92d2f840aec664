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
pub mod webhook;

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
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::guarded::{self, Mark};
pub use context::{Context, Settings};
pub use error::Error;

use crate::admin::Telemetry;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate};
use crate::metrics::ControllerLabels;
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
    let ns = settings.namespace.as_deref();
    let home = settings.cluster_provider_namespace.clone();

    // One watch per kind. Every kind is decoded one object at a time
    // (`guarded`): an object the controller cannot read costs only itself.
    let providers = shared::cached(guarded_watch::<EmailProvider>(&client, ns), 2);
    let templates = shared::cached(guarded_watch::<EmailTemplate>(&client, ns), 2);
    let clusters = shared::cached(
        match &home {
            Some(_) => guarded_watch_all::<ClusterEmailProvider>(&client).boxed(),
            None => futures::stream::empty().boxed(),
        },
        2,
    );
    let secrets = TriggerWatch::of(
        |namespace| triggers::secrets(&client, namespace),
        ns,
        home.as_deref(),
    );
    let config_maps = TriggerWatch::of(
        |namespace| triggers::config_maps(&client, namespace),
        ns,
        home.as_deref(),
    );

    let (message_store, message_writer) = kube::runtime::reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        transports: Default::default(),
        providers: providers.store.clone(),
        cluster_providers: clusters.store.clone(),
        templates: templates.store.clone(),
        unrecorded: Default::default(),
        written: Default::default(),
        telemetry: telemetry.clone(),
        rate_limits: Default::default(),
        sends: slots::SendSlots::new(settings.max_concurrent_sends, telemetry.clone()),
        recorder: Recorder::new(client.clone(), event_reporter()),
        settings: settings.clone(),
    });

    let [provider_feed, provider_wakes] = two(providers.feeds);
    let [template_feed, template_wakes] = two(templates.feeds);
    let [cluster_feed, cluster_wakes] = two(clusters.feeds);
    let mut drivers: Vec<BoxFuture<'static, ()>> = vec![
        providers.driver.boxed(),
        templates.driver.boxed(),
        clusters.driver.boxed(),
    ];
    drivers.extend(secrets.drivers);
    drivers.extend(config_maps.drivers);

    let provider_run = run_providers(
        provider_feed,
        secrets.namespaced,
        config_maps.namespaced,
        ctx.clone(),
        shutdown.clone(),
    );
    let cluster_run = match (home.clone(), secrets.cluster, config_maps.cluster) {
        (Some(home), Some(secrets), Some(maps)) => run_cluster_providers(
            cluster_feed,
            secrets,
            maps,
            home,
            ctx.clone(),
            shutdown.clone(),
        )
        .boxed(),
        _ => futures::future::ready(()).boxed(),
    };
    let template_run = run_controller(
        Controller::for_shared_stream(template_feed.applied(), ctx.templates.clone()),
        "EmailTemplate",
        template::reconcile,
        ctx.clone(),
        shutdown.clone(),
    );
    let message_stream = guarded::watch(
        client.clone(),
        api::<DeserializeGuard<EmailMessage>>(&client, ns),
        watcher::Config::default(),
        Mark::Message,
    )
    .modify(slim)
    .reflect(message_writer)
    .applied_objects();
    let messages = Controller::for_stream(message_stream, message_store.clone())
        .with_config(controller::Config::default().concurrency(settings.concurrency));
    let (by_provider, by_template, by_cluster) = (
        message_store.clone(),
        message_store.clone(),
        message_store.clone(),
    );
    let messages = messages
        .watches_shared_stream(provider_wakes.touched(), move |p| {
            wake::messages_of_provider(&by_provider, &p)
        })
        .watches_shared_stream(template_wakes.touched(), move |t| {
            wake::messages_of_template(&by_template, &t)
        })
        .watches_shared_stream(cluster_wakes.touched(), move |c| {
            wake::messages_of_cluster_provider(&by_cluster, &c)
        });
    let message_run = run_controller(
        messages,
        "EmailMessage",
        message::reconcile,
        ctx.clone(),
        shutdown.clone(),
    );
    let observe = observe::observe(
        ctx.providers.clone(),
        message_store,
        telemetry,
        shutdown.clone(),
    );
    // The watches stop with the controllers that read them.
    let watches = futures::future::join_all(drivers);
    let watches = async move {
        tokio::select! {
            _ = watches => {},
            () = shutdown => {},
        }
    };
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
    home: String,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (by_secret, by_map) = (ctx.cluster_providers.clone(), ctx.cluster_providers.clone());
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
        let labels = ControllerLabels {
            controller: kind.to_string(),
        };
        ctx.telemetry
            .metrics
            .reconcile_errors
            .get_or_create(&labels)
            .inc();
        if error.is_conflict() {
            Action::requeue(CONFLICT_RETRY)
        } else {
            Action::requeue(API_FAILURE_RETRY)
        }
    }
}

/// Who Events say reported them: mailroom, and this pod (or host).
pub fn event_reporter() -> Reporter {
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
