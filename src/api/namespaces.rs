//! Namespaces picked by name or by labels: which namespaces a
//! ClusterEmailProvider allows, and which a provider's tenant policy
//! governs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Namespaces picked by name, by labels, or both (either one suffices).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 63)))]
    pub names: Vec<String>,

    /// Namespaces allowed by their labels (matchLabels and
    /// matchExpressions). An empty selector (`{}`) allows every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}
