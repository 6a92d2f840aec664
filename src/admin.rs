//! The admin HTTP server: `/metrics` (Prometheus text), `/livez` (the process
//! answers) and `/readyz` (ready once the caches synced, or while standing by
//! for the lease; unready while shutting down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the probes report.
#[derive(Default)]
pub struct Health {
    /// The watches listed every object once.
    pub caches_synced: AtomicBool,
    /// This replica waits for the lease (healthy, not sending).
    pub standing_by: AtomicBool,
    /// Shutdown began.
    pub shutting_down: AtomicBool,
}

impl Health {
    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        let up =
            self.caches_synced.load(Ordering::SeqCst) || self.standing_by.load(Ordering::SeqCst);
        up && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Shared by the controller and the admin server.
#[derive(Default)]
pub struct Telemetry {
    /// Probe state.
    pub health: Health,
    /// Metrics.
    pub metrics: Metrics,
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> ([(&'static str, &'static str); 1], String) {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([("content-type", content_type)], t.metrics.encode())
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> (StatusCode, &'static str) {
    if t.health.ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the admin endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening (/metrics, /livez, /readyz)");
    axum::serve(listener, app).await
}
