//! The Kubernetes client mailroom runs with: the in-cluster or KUBECONFIG
//! configuration, sending a User-Agent that names mailroom, so that the
//! apiserver records mailroom's writes under the field manager `mailroom`
//! (managedFields, server-side apply conflicts) and audit logs name it,
//! instead of `unknown`.

use axum::http::{HeaderValue, header};
use kube::{Client, Config};

/// What mailroom's requests say they come from; the apiserver takes the
/// part before `/` as the field manager.
pub const USER_AGENT: &str = concat!("mailroom/", env!("CARGO_PKG_VERSION"));

/// Makes every request of clients built from `config` carry mailroom's
/// User-Agent.
pub fn identify(config: &mut Config) {
    config
        .headers
        .retain(|(name, _)| name != header::USER_AGENT);
    config
        .headers
        .push((header::USER_AGENT, HeaderValue::from_static(USER_AGENT)));
}

/// A client from the in-cluster configuration or KUBECONFIG, identified as
/// mailroom.
pub async fn connect() -> Result<Client, kube::Error> {
    let mut config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    identify(&mut config);
    Client::try_from(config)
}
