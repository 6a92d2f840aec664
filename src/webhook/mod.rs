//! The delivery webhook receiver: its own HTTP server, in every replica
//! (standbys too, as it does not send), taking `POST
//! /webhooks/{namespace}/{provider}` (`/webhooks/_cluster/{provider}` for a
//! ClusterEmailProvider). Each request is checked with the provider's
//! webhook key, its events are matched to messages by the origin mailroom
//! sent with each email (see `api::origin`; no watch, no index), written
//! into their status, and only then acknowledged: an
//! acknowledged event is in etcd, and one that is not gets retried by the
//! service. The port faces the internet: bodies, request time, requests and
//! connections at once are bounded, and an unsigned request costs no
//! apiserver call (providers come from a watch). The same port answers
//! hosted one-click unsubscribes (`unsubscribe`:
//! `/unsubscribe/{namespace}/{list}/{token}`).

mod handler;
pub(crate) mod keys;
pub(crate) mod payload;
pub(crate) mod readiness;
pub(crate) mod server;
pub(crate) mod signature;
pub(crate) mod unsubscribe;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Router, middleware};
use kube::Client;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::admin::Telemetry;

/// The defaults of the receiver's flags; clap and `Settings::default()`
/// both read them, so they cannot drift apart.
pub mod defaults {
    /// `--webhook-ack-timeout-seconds`.
    pub const ACK_TIMEOUT_SECONDS: u64 = 10;
    /// `--webhook-unknown-grace-seconds`.
    pub const UNKNOWN_GRACE_SECONDS: u64 = 2;
    /// Status writers working at once.
    pub const WORKERS: usize = 16;
    /// Events each writer may hold waiting.
    pub const QUEUE_CAPACITY: usize = 4096;
    /// `--webhook-max-body-bytes`: 1 MiB.
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// `--webhook-read-timeout-seconds`.
    pub const READ_TIMEOUT_SECONDS: u64 = 10;
    /// `--webhook-max-requests`.
    pub const MAX_REQUESTS: usize = 256;
    /// `--webhook-max-connections`.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// `--unsubscribe-rate`.
    pub const UNSUBSCRIBE_RATE: u32 = 100;
    /// `--unsubscribe-burst`.
    pub const UNSUBSCRIBE_BURST: u32 = 1000;
}

/// How the receiver runs: its command-line flags (each also an environment
/// variable), flattened into `mailroom run`. The namespaces served are the
/// controller's (`--namespace`, `--cluster-provider-namespace`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "webhook")]
pub struct Settings {
    /// Only messages of this namespace (default: all).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Where ClusterEmailProviders' Secrets are (unset: their webhooks are
    /// not served).
    #[arg(skip)]
    pub cluster_provider_namespace: Option<String>,
    /// Where the hosted unsubscribe keys are (the controller's
    /// `--unsubscribe-key-secret`).
    #[arg(skip)]
    pub unsubscribe_key_secret: Option<String>,
    /// Unsubscribes one namespace may record a second through the hosted
    /// endpoint (429 with Retry-After past it and its burst); links that do
    /// not open are refused before this and cost nothing.
    #[arg(
        long = "unsubscribe-rate",
        env = "MAILROOM_UNSUBSCRIBE_RATE",
        default_value_t = defaults::UNSUBSCRIBE_RATE
    )]
    pub unsubscribe_rate: u32,
    /// Unsubscribes one namespace may record at once before its rate holds.
    #[arg(
        long = "unsubscribe-burst",
        env = "MAILROOM_UNSUBSCRIBE_BURST",
        default_value_t = defaults::UNSUBSCRIBE_BURST
    )]
    pub unsubscribe_burst: u32,
    /// Seconds a webhook request waits for its status writes before it is
    /// answered 503 (the service then retries; the write still completes).
    /// Keep it under the services' timeouts (Mailtrap 30 s).
    #[arg(
        long = "webhook-ack-timeout-seconds",
        env = "MAILROOM_WEBHOOK_ACK_TIMEOUT_SECONDS",
        default_value_t = defaults::ACK_TIMEOUT_SECONDS
    )]
    pub ack_timeout_seconds: u64,
    /// Seconds an event for a message not recorded as sent yet waits for
    /// that write (a webhook can overtake it) before the request is
    /// answered 503, so the service tries again later.
    #[arg(
        long = "webhook-unknown-grace-seconds",
        env = "MAILROOM_WEBHOOK_UNKNOWN_GRACE_SECONDS",
        default_value_t = defaults::UNKNOWN_GRACE_SECONDS
    )]
    pub unknown_grace_seconds: u64,
    /// Status writers working at once.
    #[arg(skip = defaults::WORKERS)]
    pub workers: usize,
    /// Events each writer may hold waiting before requests get 503.
    #[arg(skip = defaults::QUEUE_CAPACITY)]
    pub queue_capacity: usize,
    /// The largest webhook request body taken, in bytes (413 past it,
    /// refused while reading).
    #[arg(
        long = "webhook-max-body-bytes",
        env = "MAILROOM_WEBHOOK_MAX_BODY_BYTES",
        default_value_t = defaults::MAX_BODY_BYTES
    )]
    pub max_body_bytes: usize,
    /// Seconds a webhook client has to send a request's headers (then the
    /// connection is closed), and then its body (408).
    #[arg(
        long = "webhook-read-timeout-seconds",
        env = "MAILROOM_WEBHOOK_READ_TIMEOUT_SECONDS",
        default_value_t = defaults::READ_TIMEOUT_SECONDS
    )]
    pub read_timeout_seconds: u64,
    /// Webhook requests handled at once; more are answered 503 at once.
    #[arg(
        long = "webhook-max-requests",
        env = "MAILROOM_WEBHOOK_MAX_REQUESTS",
        default_value_t = defaults::MAX_REQUESTS
    )]
    pub max_requests: usize,
    /// Webhook connections open at once; more wait to be accepted.
    #[arg(
        long = "webhook-max-connections",
        env = "MAILROOM_WEBHOOK_MAX_CONNECTIONS",
        default_value_t = defaults::MAX_CONNECTIONS
    )]
    pub max_connections: usize,
}

impl Settings {
    /// How long a request waits for its events to be written.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_secs(self.ack_timeout_seconds)
    }

    /// How long an event whose message id is not known yet waits for it.
    pub fn unknown_grace(&self) -> Duration {
        Duration::from_secs(self.unknown_grace_seconds)
    }

    /// How long a client has to send a request's headers, and then its body.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_seconds)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            cluster_provider_namespace: None,
            unsubscribe_key_secret: None,
            unsubscribe_rate: defaults::UNSUBSCRIBE_RATE,
            unsubscribe_burst: defaults::UNSUBSCRIBE_BURST,
            ack_timeout_seconds: defaults::ACK_TIMEOUT_SECONDS,
            unknown_grace_seconds: defaults::UNKNOWN_GRACE_SECONDS,
            workers: defaults::WORKERS,
            queue_capacity: defaults::QUEUE_CAPACITY,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            read_timeout_seconds: defaults::READ_TIMEOUT_SECONDS,
            max_requests: defaults::MAX_REQUESTS,
            max_connections: defaults::MAX_CONNECTIONS,
        }
    }
}

/// What the request handlers share.
struct Receiver {
    client: Client,
    keys: keys::Keys,
    queue: crate::delivery::writer::Queue,
    settings: Settings,
    telemetry: Arc<Telemetry>,
    unsubscribe_keys: crate::delivery::unsubscribe::keys::Keys,
    unsubscribe_pace: unsubscribe::Pace,
}

/// The receiver's routes, with the writers started.
pub fn router(client: Client, settings: Settings, telemetry: Arc<Telemetry>) -> Router {
    let counted = telemetry.clone();
    let unsubscribe_keys = crate::delivery::unsubscribe::keys::Keys::new(
        client.clone(),
        crate::delivery::unsubscribe::keys::place(
            settings.unsubscribe_key_secret.as_deref(),
            settings.cluster_provider_namespace.as_deref(),
        ),
    );
    let receiver = Arc::new(Receiver {
        unsubscribe_keys,
        unsubscribe_pace: unsubscribe::Pace::new(
            settings.unsubscribe_rate,
            settings.unsubscribe_burst,
        ),
        keys: keys::Keys::new(
            client.clone(),
            settings.namespace.clone(),
            settings.cluster_provider_namespace.clone(),
        ),
        queue: crate::delivery::writer::Queue::start(
            client.clone(),
            settings.workers,
            settings.queue_capacity,
            settings.cluster_provider_namespace.clone(),
            Arc::default(),
            telemetry.clone(),
        ),
        telemetry,
        settings: settings.clone(),
        client,
    });
    Router::new()
        .route("/webhooks/_cluster/{provider}", post(handler::cluster))
        .route(
            "/webhooks/{namespace}/{provider}",
            post(handler::namespaced),
        )
        .route(
            "/unsubscribe/{namespace}/{list}/{token}",
            get(unsubscribe::page)
                .post(unsubscribe::post)
                .layer(RequestBodyLimitLayer::new(unsubscribe::MAX_BODY_BYTES)),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        // Innermost first: the body limit (413, also for a body without a
        // length), the time a request may take in all (408), the requests
        // at once (503 past it, never queued), and the count of every answer.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.read_timeout() + settings.ack_timeout() + settings.unknown_grace(),
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
    telemetry
        .metrics
        .count_webhook_answer(response.status().as_u16());
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
        tracing::info!(%addr, "webhook receiver listening (/webhooks/{{namespace}}/{{provider}}, /unsubscribe/...)");
    }
    let limits = server::Limits {
        header_timeout: settings.read_timeout(),
        max_connections: settings.max_connections,
    };
    let app = router(client, settings, telemetry);
    server::serve(listener, app, limits, shutdown).await
}
