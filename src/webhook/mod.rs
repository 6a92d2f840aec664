//! The delivery webhook receiver: its own HTTP server, in every replica
//! (standbys too, as it does not send), taking `POST
//! /webhooks/{namespace}/{provider}` (`/webhooks/_cluster/{provider}` for a
//! ClusterEmailProvider). Each request is checked with the provider's
//! webhook key, its events are matched to messages by the service's message
//! id, written into their status, and only then acknowledged: an
//! acknowledged event is in etcd, and one that is not gets retried by the
//! service.

mod handler;
pub mod index;
pub mod keys;
pub mod payload;
pub mod queue;
pub mod record;
pub mod signature;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;

use crate::admin::Telemetry;
use crate::api::EmailMessage;

/// How the receiver runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only messages of this namespace (default: all).
    pub namespace: Option<String>,
    /// Where ClusterEmailProviders' Secrets are (unset: their webhooks are
    /// not served).
    pub cluster_provider_namespace: Option<String>,
    /// How long a request waits for its events to be written before it is
    /// answered 503 (the service retries; the write still completes).
    pub ack_timeout: Duration,
    /// How long an event whose message id is not known yet waits for it
    /// to appear (a webhook can overtake the status write it follows).
    pub unknown_grace: Duration,
    /// Status writers working at once.
    pub workers: usize,
    /// Events each writer may hold waiting before requests get 503.
    pub queue_capacity: usize,
    /// The largest request body taken.
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            cluster_provider_namespace: None,
            ack_timeout: Duration::from_secs(10),
            unknown_grace: Duration::from_secs(2),
            workers: 16,
            queue_capacity: 4096,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What the request handlers share.
struct Receiver {
    keys: keys::Keys,
    index: Arc<index::Index>,
    queue: queue::Queue,
    settings: Settings,
    telemetry: Arc<Telemetry>,
}

/// The receiver's routes, with the index watch and the writers started.
pub fn router(client: Client, settings: Settings, telemetry: Arc<Telemetry>) -> Router {
    let index = Arc::new(index::Index::default());
    let messages: Api<DeserializeGuard<EmailMessage>> = match &settings.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    tokio::spawn(index.clone().maintain(client.clone(), messages));
    let receiver = Arc::new(Receiver {
        keys: keys::Keys::new(client.clone(), settings.cluster_provider_namespace.clone()),
        index,
        queue: queue::Queue::start(
            client,
            settings.workers,
            settings.queue_capacity,
            telemetry.clone(),
        ),
        telemetry,
        settings: settings.clone(),
    });
    Router::new()
        .route("/webhooks/_cluster/{provider}", post(handler::cluster))
        .route(
            "/webhooks/{namespace}/{provider}",
            post(handler::namespaced),
        )
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .with_state(receiver)
}

/// Serves the receiver on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    settings: Settings,
    telemetry: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "webhook receiver listening (/webhooks/{{namespace}}/{{provider}})");
    }
    let app = router(client, settings, telemetry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
