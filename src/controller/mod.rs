//! The controller: one reconciler for EmailProviders (verify, Ready) and one
//! for EmailMessages (claim, send, record), sharing verified transports.
//! Providers are re-verified when they or their Secrets/ConfigMaps change;
//! messages wake up when their provider changes. Secrets, ConfigMaps and the
//! message side's provider and template triggers are watched metadata-only
//! (see `triggers`): no Secret or ConfigMap data ever arrives through a watch.

pub mod access;
pub mod context;
pub mod credentials;
pub mod error;
pub mod leader;
pub mod message;
pub mod provider;
pub mod slots;
pub mod template;
pub mod triggers;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::guarded::{self, Mark};
pub use context::{Context, Settings};
pub use error::Error;

use crate::admin::Telemetry;
use crate::api::condition::{SENT, find};
use crate::api::message::ProviderKind;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate, Phase};
use crate::metrics::{ControllerLabels, ReasonLabels};

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
    let ns = settings.namespace.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let wc = watcher::Config::default();

    // Every kind is decoded one object at a time (`guarded`): an object the
    // controller cannot read costs only itself.
    let providers = guarded_controller(
        &client,
        api::<DeserializeGuard<EmailProvider>>(&client, ns.as_deref()),
        Mark::Ready,
    );
    let provider_store = providers.store();
    let templates = guarded_controller(
        &client,
        api::<DeserializeGuard<EmailTemplate>>(&client, ns.as_deref()),
        Mark::Ready,
    );
    let template_store = templates.store();
    // ClusterEmailProviders are served only where their Secrets live is known.
    let cluster_namespace = settings.cluster_provider_namespace.clone();
    let cluster_providers = cluster_namespace.as_ref().map(|_| {
        guarded_controller(
            &client,
            Api::<DeserializeGuard<ClusterEmailProvider>>::all(client.clone()),
            Mark::Ready,
        )
    });
    let cluster_store = match &cluster_providers {
        Some(controller) => controller.store(),
        None => kube::runtime::reflector::store().0,
    };

    let ctx = Arc::new(Context {
        client: client.clone(),
        transports: Default::default(),
        providers: provider_store.clone(),
        cluster_providers: cluster_store.clone(),
        templates: template_store.clone(),
        unrecorded: Default::default(),
        written: Default::default(),
        telemetry: telemetry.clone(),
        rate_limits: Default::default(),
        sends: slots::SendSlots::new(settings.max_concurrent_sends, telemetry.clone()),
        recorder: Recorder::new(client.clone(), event_reporter()),
        settings: settings.clone(),
    });

    let secret_store = provider_store.clone();
    let config_map_store = provider_store.clone();
    let provider_run = providers
        .watches_stream(triggers::secrets(&client, ns.as_deref()), move |secret| {
            referencing(
                &secret_store,
                "Secret",
                secret.namespace(),
                &secret.name_any(),
            )
        })
        .watches_stream(triggers::config_maps(&client, ns.as_deref()), move |map| {
            referencing(
                &config_map_store,
                "ConfigMap",
                map.namespace(),
                &map.name_any(),
            )
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(
            provider::reconcile,
            error_policy("EmailProvider"),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "provider reconcile failed");
            }
        });

    let (cluster_client, cluster_shutdown, cluster_ctx) =
        (client.clone(), shutdown.clone(), ctx.clone());
    let cluster_secrets = cluster_store.clone();
    let cluster_run = async move {
        let (Some(controller), Some(namespace)) = (cluster_providers, cluster_namespace.clone())
        else {
            return;
        };
        let config_map_store = cluster_secrets.clone();
        controller
            .watches_stream(
                triggers::secrets(&cluster_client, Some(&namespace)),
                move |secret| cluster_referencing(&cluster_secrets, "Secret", &secret.name_any()),
            )
            .watches_stream(
                triggers::config_maps(&cluster_client, Some(&namespace)),
                move |map| cluster_referencing(&config_map_store, "ConfigMap", &map.name_any()),
            )
            .graceful_shutdown_on(cluster_shutdown)
            .run(
                provider::reconcile_cluster,
                error_policy("ClusterEmailProvider"),
                cluster_ctx,
            )
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "cluster provider reconcile failed");
                }
            })
            .await;
    };

    // Messages are cached without managedFields and kubectl's
    // last-applied-configuration, which nothing here reads: the cache holds
    // every message of the namespaces served, so this is most of its memory.
    let (message_store, message_writer) = kube::runtime::reflector::store();
    let message_stream = guarded::watch(
        client.clone(),
        api::<DeserializeGuard<EmailMessage>>(&client, ns.as_deref()),
        wc.clone(),
        Mark::Message,
    )
    .modify(slim)
    .reflect(message_writer)
    .applied_objects();
    let messages = Controller::for_stream(message_stream, message_store.clone())
        .with_config(controller::Config::default().concurrency(settings.concurrency));
    let observe = observe(
        provider_store.clone(),
        message_store.clone(),
        telemetry.clone(),
        shutdown.clone(),
    );
    let ready_store = provider_store.clone();
    let template_run = templates
        .graceful_shutdown_on(shutdown.clone())
        .run(
            template::reconcile,
            error_policy("EmailTemplate"),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "template reconcile failed");
            }
        });
    let templates_ready = template_store.clone();
    let template_messages = message_store.clone();
    let cluster_messages = message_store.clone();
    let clusters_ready = cluster_store.clone();
    let serves_cluster_providers = settings.cluster_provider_namespace.is_some();
    let message_run = async move {
        // Messages are judged against providers and templates, so those
        // caches must be complete first: otherwise a message could be marked
        // ProviderNotFound for a provider that exists.
        // A shutdown before then ends the wait (nothing has started).
        let caches_ready = async {
            ready_store.wait_until_ready().await.is_ok()
                && templates_ready.wait_until_ready().await.is_ok()
                && (!serves_cluster_providers || clusters_ready.wait_until_ready().await.is_ok())
        };
        let ready = tokio::select! {
            ready = caches_ready => ready,
            () = shutdown.clone() => false,
        };
        if !ready {
            return;
        }
        let messages = if serves_cluster_providers {
            messages.watches_stream(
                triggers::metadata(Api::<PartialObjectMeta<ClusterEmailProvider>>::all(
                    client.clone(),
                )),
                move |provider| {
                    let name = provider.name_any();
                    unfinished_messages(&cluster_messages, None, |m| {
                        m.spec.provider_ref.kind == ProviderKind::ClusterEmailProvider
                            && m.spec.provider_ref.name == name
                    })
                },
            )
        } else {
            messages
        };
        messages
            .watches_stream(
                triggers::metadata(api::<PartialObjectMeta<EmailTemplate>>(
                    &client,
                    ns.as_deref(),
                )),
                move |template| {
                    let name = template.name_any();
                    unfinished_messages(&template_messages, template.namespace(), |m| {
                        m.spec.template_ref.as_ref().is_some_and(|t| t.name == name)
                    })
                },
            )
            .watches_stream(
                triggers::metadata(api::<PartialObjectMeta<EmailProvider>>(
                    &client,
                    ns.as_deref(),
                )),
                move |provider| {
                    let name = provider.name_any();
                    unfinished_messages(&message_store, provider.namespace(), |m| {
                        m.spec.provider_ref.kind == ProviderKind::EmailProvider
                            && m.spec.provider_ref.name == name
                    })
                },
            )
            .graceful_shutdown_on(shutdown)
            .run(message::reconcile, message_error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "message reconcile failed");
                }
            })
            .await;
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
        observe
    );
    info!("controller stopped");
}

/// A controller for `api`'s kind whose objects are decoded one at a time;
/// the ones that cannot be are marked as `mark` says and left out.
fn guarded_controller<K>(
    client: &Client,
    api: Api<DeserializeGuard<K>>,
    mark: Mark,
) -> Controller<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + std::fmt::Debug + Unpin,
{
    let (store, writer) = kube::runtime::reflector::store();
    let stream = guarded::watch(client.clone(), api, watcher::Config::default(), mark)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(stream, store)
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

/// The unfinished messages of `namespace` (of every namespace when `None`,
/// for a cluster-scoped provider) that `names` picks: those a provider or
/// template change must wake. Read from the cache, no API call.
fn unfinished_messages(
    store: &kube::runtime::reflector::Store<EmailMessage>,
    namespace: Option<String>,
    names: impl Fn(&EmailMessage) -> bool,
) -> Vec<ObjectRef<EmailMessage>> {
    store
        .state()
        .into_iter()
        .filter(|m| {
            let finished = m
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished());
            let in_scope = namespace.is_none() || m.namespace() == namespace;
            in_scope && !finished && names(m)
        })
        .map(|m| ObjectRef::from_obj(&*m))
        .collect()
}

fn referencing(
    store: &kube::runtime::reflector::Store<EmailProvider>,
    kind: &str,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<EmailProvider>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.namespace() == namespace && credentials::references(p, kind, name))
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// The ClusterEmailProviders that reference Secret or ConfigMap `name` of
/// the controller's namespace.
fn cluster_referencing(
    store: &kube::runtime::reflector::Store<ClusterEmailProvider>,
    kind: &str,
    name: &str,
) -> Vec<ObjectRef<ClusterEmailProvider>> {
    store
        .state()
        .into_iter()
        .filter(|p| credentials::references(&p.as_provider(), kind, name))
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// Marks the caches synced once both have listed everything, keeps the
/// waiting-messages gauge current, and marks shutdown for /readyz.
async fn observe(
    providers: kube::runtime::reflector::Store<EmailProvider>,
    messages: kube::runtime::reflector::Store<EmailMessage>,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()>,
) {
    use std::sync::atomic::Ordering;
    let count = async {
        if providers.wait_until_ready().await.is_err() || messages.wait_until_ready().await.is_err()
        {
            return;
        }
        telemetry.health.caches_synced.store(true, Ordering::SeqCst);
        loop {
            count_waiting(&messages, &telemetry);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    tokio::select! {
        _ = count => {},
        _ = shutdown => {},
    }
    telemetry.health.shutting_down.store(true, Ordering::SeqCst);
}

/// Sets `messages_waiting` from the message cache (no API call).
fn count_waiting(messages: &kube::runtime::reflector::Store<EmailMessage>, telemetry: &Telemetry) {
    let mut counts: std::collections::HashMap<ReasonLabels, i64> = Default::default();
    for m in messages.state() {
        let Some(status) = &m.status else { continue };
        if status.phase != Some(Phase::Pending) {
            continue;
        }
        let reason = find(&status.conditions, SENT)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let labels = ReasonLabels {
            namespace: m.namespace().unwrap_or_default(),
            provider: m.spec.provider_ref.name.clone(),
            reason,
        };
        *counts.entry(labels).or_default() += 1;
    }
    telemetry.metrics.waiting.clear();
    for (labels, n) in counts {
        telemetry.metrics.waiting.get_or_create(&labels).set(n);
    }
}

fn count_error(ctx: &Context, controller: &str) {
    let labels = ControllerLabels {
        controller: controller.to_string(),
    };
    ctx.telemetry
        .metrics
        .reconcile_errors
        .get_or_create(&labels)
        .inc();
}

/// The error policy of a controller that only verifies or parses (providers,
/// cluster providers, templates): count the error under `kind`, look again
/// soon after a conflict, in 5 s otherwise.
fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_, error, ctx| {
        count_error(&ctx, kind);
        if error.is_conflict() {
            Action::requeue(Duration::from_millis(500))
        } else {
            Action::requeue(Duration::from_secs(5))
        }
    }
}

fn message_error_policy(_: Arc<EmailMessage>, error: &Error, ctx: Arc<Context>) -> Action {
    count_error(&ctx, "EmailMessage");
    if error.is_conflict() {
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(Duration::from_secs(2))
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
