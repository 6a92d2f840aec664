//! The delivery webhook receiver: its own HTTP server, in every replica
//! (standbys too, as it does not send), taking `POST
//! /webhooks/{namespace}/{provider}` (`/webhooks/_cluster/{provider}` for a
//! ClusterEmailProvider). Each request is checked with the provider's
//! webhook key, its events are matched to messages by the service's message
//! id, written into their status, and only then acknowledged: an
//! acknowledged event is in etcd, and one that is not gets retried by the
//! service. The port faces the internet: bodies, request time, requests and
//! connections at once are bounded, and an unsigned request costs no
//! apiserver call (providers come from a watch).

mod handler;
pub mod index;
pub mod keys;
pub mod payload;
pub mod queue;
pub mod record;
pub mod server;
pub mod signature;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Router, middleware};
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

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
    /// The largest request body taken (413 past it, refused while reading).
    pub max_body_bytes: usize,
    /// How long a client has to send a request's headers, and then its body.
    pub read_timeout: Duration,
    /// Requests handled at once; more are answered 503 at once.
    pub max_requests: usize,
    /// Connections open at once.
    pub max_connections: usize,
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
            max_body_bytes: 1024 * 1024,
            read_timeout: Duration::from_secs(10),
            max_requests: 256,
            max_connections: 1024,
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
    let counted = telemetry.clone();
    let receiver = Arc::new(Receiver {
        keys: keys::Keys::new(
            client.clone(),
            settings.namespace.clone(),
            settings.cluster_provider_namespace.clone(),
        ),
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
        .fallback(|| async { StatusCode::NOT_FOUND })
        // Innermost first: the body limit (413, also for a body without a
        // length), the time a request may take in all (408), the requests
        // at once (503 past it, never queued), and the count of every answer.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.read_timeout + settings.ack_timeout + settings.unknown_grace,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy: try again")
                }))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(
                    settings.max_requests.max(1),
                )),
        )
        .layer(middleware::from_fn_with_state(counted, count_answer))
        .with_state(receiver)
}

/// Counts every answer by its status code.
async fn count_answer(
    State(telemetry): State<Arc<Telemetry>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let labels = crate::metrics::AnswerLabels {
        code: response.status().as_u16().to_string(),
    };
    telemetry
        .metrics
        .webhook_answers
        .get_or_create(&labels)
        .inc();
    response
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
    let limits = server::Limits {
        header_timeout: settings.read_timeout,
        max_connections: settings.max_connections,
    };
    let app = router(client, settings, telemetry);
    server::serve(listener, app, limits, shutdown).await
}
