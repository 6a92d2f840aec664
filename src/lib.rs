//! mailroom: a Kubernetes operator that sends email. `EmailProvider` says how
//! to send, `EmailMessage` says what to send; the controller sends each message
//! once and writes the outcome into its status.

pub mod admin;
pub mod api;
pub(crate) mod bounces;
pub(crate) mod compose;
pub mod controller;
pub mod delivery;
pub(crate) mod events;
pub(crate) mod guarded;
#[cfg(test)]
mod hostile_input;
pub mod journal;
pub mod kube_client;
pub mod ledger;
pub mod logging;
pub(crate) mod manage;
pub mod metrics;
#[cfg(test)]
mod module_graph;
pub mod preview;
pub(crate) mod render;
pub(crate) mod transport;
pub mod webhook;

/// Selects ring as the process-wide TLS crypto provider. The kube client,
/// lettre and reqwest all use rustls; call this once before any of them.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
