//! Whether a namespace may send through a ClusterEmailProvider: by name, or
//! by the Namespace's labels matching the provider's selector.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::{Client, ResourceExt};

use crate::api::ClusterEmailProvider;

/// Whether the namespace may use the provider, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The namespace is allowed.
    Allowed,
    /// The namespace is not allowed; the text says why.
    Denied(String),
}

/// Checks `namespace` against the provider's `allowedNamespaces`. The
/// Namespace is read only when a selector has to be matched.
pub async fn check(
    client: &Client,
    provider: &ClusterEmailProvider,
    namespace: &str,
) -> Result<Access, kube::Error> {
    let name = provider.name_any();
    let Some(allowed) = &provider.spec.allowed_namespaces else {
        return Ok(Access::Denied(format!(
            "ClusterEmailProvider {name:?} allows no namespace (spec.allowedNamespaces is unset)"
        )));
    };
    if allowed.names.iter().any(|n| n == namespace) {
        return Ok(Access::Allowed);
    }
    if let Some(selector) = &allowed.selector {
        let selector = match Selector::try_from(selector.clone()) {
            Ok(selector) => selector,
            Err(e) => {
                return Ok(Access::Denied(format!(
                    "ClusterEmailProvider {name:?} has an invalid spec.allowedNamespaces.selector: {e}"
                )));
            }
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let labels = namespaces
            .get_opt(namespace)
            .await?
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        if selector.matches(&labels) {
            return Ok(Access::Allowed);
        }
    }
    Ok(Access::Denied(format!(
        "namespace {namespace:?} is not among the namespaces ClusterEmailProvider {name:?} allows (spec.allowedNamespaces)"
    )))
}
