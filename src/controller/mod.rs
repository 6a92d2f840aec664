//! The controller, run by the leader: one reconciler for EmailProviders
//! (verify, Ready), one for ClusterEmailProviders, one for EmailTemplates
//! (parse) and one for EmailMessages (claim, send, record), sharing verified
//! transports. Each kind is watched once (`shared`) and that watch feeds
//! every controller that needs it: a provider change reaches the messages
//! it wakes only after the provider cache holds it. Secrets and ConfigMaps
//! are watched metadata-only (see `triggers`): no Secret or ConfigMap data
//! ever arrives through a watch.

pub(crate) mod access;
mod activity;
mod attachment_memory;
pub(crate) mod breaker;
pub(crate) mod context;
pub(crate) mod credentials;
mod degraded;
mod domain;
pub(crate) mod error;
mod expiry;
pub mod leader;
mod mailbox_reader;
pub(crate) mod message;
mod observe;
mod pacing;
pub(crate) mod provider;
pub(crate) mod provider_status;
mod registration;
mod runners;
mod shared;
mod slot_waiters;
pub(crate) mod slots;
pub(crate) mod suppression_index;
mod suppression_sync;
pub(crate) mod suppressions;
pub(crate) mod template;
pub(crate) mod tenants;
pub(crate) mod triggers;
pub(crate) mod usage;
mod wake;
mod watches;

use std::future::Future;
use std::sync::Arc;

use futures::future::FutureExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::{Client, Resource};
use tracing::info;

pub use context::{Context, Settings};
pub use error::Error;

use crate::admin::Telemetry;
use runners::{Wakes, context, run_cluster_providers, run_controller, run_messages, run_providers};
use watches::{Watches, drive};

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

/// How long in-flight work may take to finish after the shutdown signal
/// (the pod's grace period is 60 s).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(40);

/// `part`, noted in `running` until it completes.
async fn tracked(
    name: &'static str,
    part: futures::future::BoxFuture<'_, ()>,
    running: &Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>>,
) {
    if let Ok(mut r) = running.lock() {
        r.insert(name);
    }
    part.await;
    if let Ok(mut r) = running.lock() {
        r.remove(name);
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
        routes,
        usages: _,
        secrets,
        config_maps,
        suppressions: _,
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
        Controller::for_shared_stream(templates.own.applied(), ctx.caches.templates.clone()),
        "EmailTemplate",
        template::reconcile,
        ctx.clone(),
        shutdown.clone(),
    );
    let wakes = Wakes {
        providers: providers.wakes,
        templates: templates.wakes,
        cluster_providers: clusters.wakes,
        routes: routes.2,
    };
    let (message_run, listed, store) = run_messages(&client, wakes, ctx.clone(), shutdown.clone());
    ctx.journal.watch_messages(store.clone());
    let providers_listed = ctx.caches.ready.providers.clone();
    let observe = observe::observe(
        providers_listed,
        listed,
        store,
        ctx.ledger.clone(),
        ctx.journal.clone(),
        telemetry,
        shutdown.clone(),
    );
    let background = drive(with_side_tasks(drivers, &ctx, &client), shutdown.clone());
    info!(
        namespace = settings.namespace.as_deref().unwrap_or("<all>"),
        "controller started"
    );
    let running: Arc<std::sync::Mutex<std::collections::BTreeSet<&'static str>>> = Arc::default();
    let parts = futures::future::join_all([
        tracked("EmailProvider controller", provider_run.boxed(), &running),
        tracked("ClusterEmailProvider controller", cluster_run, &running),
        tracked("EmailTemplate controller", template_run.boxed(), &running),
        tracked("EmailMessage controller", message_run.boxed(), &running),
        tracked("probes", observe.boxed(), &running),
        tracked("watches", background.boxed(), &running),
    ]);
    join_within_grace(parts, shutdown, &running).await;
    // What was sent last is recorded before the process ends.
    ctx.ledger.flush(&client).await;
    info!("controller stopped");
}

/// The watches' drivers and the tasks that run beside the controllers and
/// stop with them: the expiry of finished messages, the providers' recent
/// counts, the ledger and the bounce mailboxes.
fn with_side_tasks(
    mut drivers: Vec<futures::future::BoxFuture<'static, ()>>,
    ctx: &Arc<Context>,
    client: &Client,
) -> Vec<futures::future::BoxFuture<'static, ()>> {
    drivers.push(
        ctx.expiry
            .clone()
            .run(client.clone(), ctx.ledger.clone())
            .boxed(),
    );
    drivers.push(ctx.activity.clone().run(client.clone()).boxed());
    drivers.push(
        ctx.usage
            .clone()
            .run(client.clone(), ctx.telemetry.clone())
            .boxed(),
    );
    let journal = ctx.journal.clone();
    drivers.push(async move { journal.run().await }.boxed());
    let ledger = ctx.ledger.clone();
    let ledger_client = client.clone();
    drivers.push(async move { ledger.run(ledger_client).await }.boxed());
    let handles = Arc::new(mailbox_reader::Handles::of(ctx));
    drivers.push(mailbox_reader::run(handles).boxed());
    drivers
}

/// Waits for `parts`; in-flight reconciles finish before it returns, within
/// a bound: a part that does not stop is named, and left, so the process
/// still ends (and records what it sent) inside the pod's grace period.
async fn join_within_grace(
    parts: impl Future<Output = Vec<()>>,
    shutdown: impl Future<Output = ()>,
    running: &std::sync::Mutex<std::collections::BTreeSet<&'static str>>,
) {
    let grace = shutdown.then(|_| tokio::time::sleep(SHUTDOWN_GRACE));
    tokio::select! {
        _ = parts => {},
        () = grace => {
            let still: Vec<&str> = running
                .lock()
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            tracing::warn!(?still, "parts of the controller did not stop within {} s of the shutdown; left", SHUTDOWN_GRACE.as_secs());
        }
    }
}
