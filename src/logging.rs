//! Logging: structured logs as text or JSON, filtered by a level flag or
//! `RUST_LOG`. Each reconcile's span carries the object's namespace and name.
//! Object bodies are never logged.

use tracing_subscriber::EnvFilter;

/// A fresh id for one reconcile, to follow its log lines.
pub fn trace_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `level` is a filter such as `info` or
/// `mailroom=debug,kube=info`; `RUST_LOG` overrides it when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // kube's client logs a whole response body (every message of a list,
    // bodies included) at WARN when it cannot decode it: never.
    let filter = match "kube_client::client=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
