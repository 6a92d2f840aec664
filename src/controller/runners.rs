//! How each controller runs: the context every reconcile shares, the
//! message, provider, cluster-provider and template controllers with the
//! changes that wake them, and the one error policy they share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use super::context::{Attempts, Caches, CachesReady};
use super::shared::{self, Feed};
use super::watches::Watches;
use super::{Context, Error, Settings, api, expiry, message, provider, slots, wake};
use crate::admin::Telemetry;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailRoute, EmailTemplate};
use crate::guarded::{self, Mark};

/// What every reconcile shares, from the watches' caches.
pub(super) fn context(
    client: &Client,
    settings: &Settings,
    telemetry: &Arc<Telemetry>,
    watches: &Watches,
) -> Arc<Context> {
    let serves_cluster_providers = settings.cluster_provider_namespace.is_some();
    Arc::new(Context {
        client: client.clone(),
        transports: Default::default(),
        caches: Caches {
            providers: watches.providers.store.clone(),
            cluster_providers: watches.clusters.store.clone(),
            templates: watches.templates.store.clone(),
            routes: watches.routes.0.clone(),
            usages: watches.usages.0.clone(),
            suppressions: watches.suppressions.0.clone(),
            ready: CachesReady {
                providers: watches.providers.ready.clone(),
                templates: watches.templates.ready.clone(),
                routes: watches.routes.1.clone(),
                usages: watches.usages.1.clone(),
                cluster_providers: if serves_cluster_providers {
                    watches.clusters.ready.clone()
                } else {
                    shared::Ready::given()
                },
                suppressions: watches.suppressions.1.clone(),
            },
        },
        attempts: Attempts {
            sends: slots::SendSlots::new(
                settings.max_concurrent_sends,
                usize::from(settings.concurrency),
                telemetry.clone(),
            ),
            unrecorded: Default::default(),
            written: Default::default(),
            attachment_memory: super::attachment_memory::AttachmentMemory::new(
                u64::from(settings.max_attachment_memory_mib) * 1024 * 1024,
            ),
        },
        expiry: Default::default(),
        activity: Default::default(),
        ledger: Arc::new(crate::ledger::Ledger::new(
            settings.namespace.clone(),
            settings.ledger_max_entries,
        )),
        journal: Arc::new(crate::journal::Journal::new(
            client.clone(),
            settings.namespace.clone(),
        )),
        bounces: Default::default(),
        telemetry: telemetry.clone(),
        unsubscribe_keys: Arc::new(crate::delivery::unsubscribe::keys::Keys::new(
            client.clone(),
            crate::delivery::unsubscribe::keys::place(
                settings.unsubscribe_key_secret.as_deref(),
                settings.cluster_provider_namespace.as_deref(),
            ),
        )),
        rate_limits: Default::default(),
        usage: Arc::new(super::usage::Usage::new(watches.usages.0.clone())),
        breakers: super::breaker::Breakers::new(
            settings.breaker_failures,
            Duration::from_secs(settings.breaker_cooldown_seconds.into()),
        ),
        events: crate::events::Events::new(client.clone()),
        settings: settings.clone(),
    })
}

/// The changes that wake messages.
pub(super) struct Wakes {
    pub(super) providers: Feed<EmailProvider>,
    pub(super) templates: Feed<EmailTemplate>,
    pub(super) cluster_providers: Feed<ClusterEmailProvider>,
    pub(super) routes: Feed<EmailRoute>,
}

/// The EmailMessage controller, on its own watch (messages are cached
/// without managedFields and kubectl's last-applied-configuration, which
/// nothing here reads: this cache is most of the controller's memory), woken
/// by the changes of the providers and templates its messages name. Returns
/// it, the signal that its cache has listed everything, and the cache.
pub(super) fn run_messages(
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
    let api = api::<DeserializeGuard<EmailMessage>>(client, ctx.settings.namespace.as_deref());
    let (watch_client, watch_ctx, sift_ctx) = (client.clone(), ctx.clone(), ctx.clone());
    // Started once the provider caches are listed: a finished message's
    // time to live may be its provider's.
    let events = futures::stream::once(async move {
        watch_ctx.caches_ready().await;
        let config = guarded::list_config(&api, LIST_PAGE_SIZE).await;
        guarded::watch(watch_client, api, config, Mark::Message)
    })
    .flatten()
    .modify(slim)
    .filter_map(move |event| futures::future::ready(in_flight(event, &sift_ctx)))
    .reflect(writer);
    let (events, listed) = shared::signal_ready(events);
    let concurrency = ctx.settings.concurrency;
    let (by_provider, by_template, by_cluster) = (store.clone(), store.clone(), store.clone());
    let by_route = store.clone();
    let (routes_p, routes_c) = (ctx.caches.routes.clone(), ctx.caches.routes.clone());
    let turns = turns_still_waiting(ctx.clone(), store.clone());
    let controller = Controller::for_stream(events.applied_objects(), store.clone())
        .with_config(controller::Config::default().concurrency(concurrency))
        .reconcile_on(turns)
        .watches_shared_stream(provider_changes(wakes.providers), move |p| {
            wake::messages_of_provider(&by_provider, &routes_p, &p)
        })
        .watches_shared_stream(wakes.routes.touched(), move |r| {
            wake::messages_of_route(&by_route, &r)
        })
        .watches_shared_stream(wakes.templates.touched(), move |t| {
            wake::messages_of_template(&by_template, &t)
        })
        .watches_shared_stream(
            cluster_provider_changes(wakes.cluster_providers),
            move |c| wake::messages_of_cluster_provider(&by_cluster, &routes_c, &c),
        );
    let run = run_controller(
        controller,
        "EmailMessage",
        message::reconcile,
        ctx,
        shutdown,
    );
    (run, listed, store)
}

/// The provider changes that can change a waiting message's fate.
fn provider_changes(
    feed: Feed<EmailProvider>,
) -> impl futures::Stream<Item = Arc<EmailProvider>> + Send + 'static {
    feed.touched_where(wake::key_of, |p| {
        wake::provider_fingerprint(p.metadata.generation, p.status.as_ref())
    })
}

/// As `provider_changes`, for ClusterEmailProviders.
fn cluster_provider_changes(
    feed: Feed<ClusterEmailProvider>,
) -> impl futures::Stream<Item = Arc<ClusterEmailProvider>> + Send + 'static {
    feed.touched_where(wake::key_of, |p| {
        wake::provider_fingerprint(p.metadata.generation, p.status.as_ref())
    })
}

/// The EmailProvider controller: verifies providers, and again when a
/// Secret or ConfigMap they reference changes.
pub(super) fn run_providers(
    feed: Feed<EmailProvider>,
    secrets: Feed<PartialObjectMeta<Secret>>,
    config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (by_secret, by_map) = (ctx.caches.providers.clone(), ctx.caches.providers.clone());
    let controller = Controller::for_shared_stream(feed.applied(), ctx.caches.providers.clone())
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
pub(super) fn run_cluster_providers(
    feed: Feed<ClusterEmailProvider>,
    secrets: Feed<PartialObjectMeta<Secret>>,
    config_maps: Feed<PartialObjectMeta<ConfigMap>>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (by_secret, by_map) = (
        ctx.caches.cluster_providers.clone(),
        ctx.caches.cluster_providers.clone(),
    );
    let home = ctx
        .settings
        .cluster_provider_namespace
        .clone()
        .unwrap_or_default();
    let home_of_maps = home.clone();
    let controller =
        Controller::for_shared_stream(feed.applied(), ctx.caches.cluster_providers.clone())
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
pub(super) fn run_controller<K, R, F>(
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
            match result {
                Ok(_) => {}
                // A reconcile queued for an object that has left the cache
                // since: a finished message (the cache keeps only those in
                // flight) or a deleted object. Nothing is left to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    debug!(%object, kind, "queued reconcile skipped: no longer in the cache");
                }
                Err(e) => warn!(error = %e, kind, "reconcile failed"),
            }
        })
}

/// Notes a finished `message` for expiry, with its provider's default
/// time to live as the cache shows it, and, when it was sent, in the
/// ledger for its provider's deduplication window (a message sent before
/// the ledger existed is recorded when first seen).
fn note_finished(ctx: &Context, message: &EmailMessage) {
    let (own, cluster) = message::provider_of(message, ctx);
    let spec = own
        .as_ref()
        .map(|p| &p.spec)
        .or(cluster.as_ref().map(|c| &c.spec.provider));
    ctx.ledger
        .remember(message, spec.and_then(|s| s.deduplication_window_days));
    ctx.expiry
        .note(message, spec.and_then(|s| s.ttl_seconds_after_finished));
}

/// Messages per page when the apiserver serves no streaming list.
const LIST_PAGE_SIZE: u32 = 500;

/// The turns given to messages waiting for a send slot, as messages to
/// reconcile. One the cache no longer holds (deleted, or finished by
/// another writer since it joined its line) hands its turn on to the next
/// in the same line, so the slot that came free is not left idle.
fn turns_still_waiting(
    ctx: Arc<Context>,
    store: kube::runtime::reflector::Store<EmailMessage>,
) -> impl Stream<Item = ObjectRef<EmailMessage>> + Send + 'static {
    let turns = ctx.attempts.sends.waiters.turns();
    turns.filter_map(move |turn| {
        let waits = store.get(&turn.message).is_some();
        if !waits {
            ctx.attempts.sends.waiters.done(&turn.message);
        }
        futures::future::ready(waits.then_some(turn.message))
    })
}

/// Keeps only messages in flight in the cache: a finished one leaves it
/// (an update that finishes it reaches the cache as a deletion), and its
/// time to live is noted in `expiry`. Returns what the cache takes.
fn in_flight(
    event: Result<watcher::Event<EmailMessage>, watcher::Error>,
    ctx: &Context,
) -> Option<Result<watcher::Event<EmailMessage>, watcher::Error>> {
    use watcher::Event;
    let finished = |message: &EmailMessage| {
        let finished = message
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished());
        if finished {
            note_finished(ctx, message);
        } else {
            ctx.expiry.forget(message);
        }
        if !expiry::held(message) {
            ctx.attempts
                .written
                .forget(&message.uid().unwrap_or_default());
        }
    };
    match event {
        Ok(Event::InitApply(message)) => {
            finished(&message);
            expiry::held(&message).then_some(Ok(Event::InitApply(message)))
        }
        Ok(Event::Apply(message)) => {
            ctx.activity.observe(&message);
            ctx.usage.observe(&message);
            finished(&message);
            if expiry::held(&message) {
                Some(Ok(Event::Apply(message)))
            } else {
                Some(Ok(Event::Delete(message)))
            }
        }
        Ok(Event::Delete(message)) => {
            ctx.expiry.forget(&message);
            ctx.attempts
                .written
                .forget(&message.uid().unwrap_or_default());
            Some(Ok(Event::Delete(message)))
        }
        other => Some(other),
    }
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

/// How soon a reconcile that failed is tried again when the apiserver failed
/// (after a conflict: `error::CONFLICT_RETRY`).
const API_FAILURE_RETRY: Duration = Duration::from_secs(2);

/// The one error policy: count the error under `kind`, and look again.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_, error, ctx| {
        ctx.telemetry.metrics.count_reconcile_error(kind);
        if error.is_conflict() {
            Action::requeue(super::error::CONFLICT_RETRY)
        } else {
            Action::requeue(API_FAILURE_RETRY)
        }
    }
}
