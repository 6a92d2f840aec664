//! `ClusterEmailProvider`: an EmailProvider for the whole cluster. Platform
//! teams run one relay or service account for many namespaces; the
//! credentials stay in the controller's namespace and an allow-list says
//! which namespaces may send through it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use super::namespaces::AllowedNamespaces;
use super::provider::{EmailProvider, EmailProviderSpec, EmailProviderStatus};

/// How to send, for messages of the namespaces it allows. Its Secrets and
/// ConfigMaps are read from the controller's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "ClusterEmailProvider",
    status = "EmailProviderStatus",
    shortname = "cemailprovider",
    doc = "A cluster-wide way to send email (an SMTP server or an email service's HTTP API), for the namespaces it allows. Its Secrets are read from the controller's namespace.",
    category = "mailroom",
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".status.transport"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Webhook","type":"string","jsonPath":".status.conditions[?(@.type==\"WebhookReady\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Bounces","type":"string","jsonPath":".status.conditions[?(@.type==\"BouncesReady\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEmailProviderSpec {
    /// How to send: the same fields as an EmailProvider's spec. Secret and
    /// ConfigMap references point into the controller's namespace.
    #[serde(flatten)]
    pub provider: EmailProviderSpec,

    /// The namespaces whose messages may use this provider. A message from
    /// any other namespace ends Failed with reason Denied and nothing is sent.
    /// Unset, no namespace may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

impl ClusterEmailProvider {
    /// The provider as the controller handles every provider: an
    /// EmailProvider with no namespace, the same name, spec and status.
    pub fn as_provider(&self) -> EmailProvider {
        EmailProvider {
            metadata: ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: None,
                uid: self.metadata.uid.clone(),
                generation: self.metadata.generation,
                resource_version: self.metadata.resource_version.clone(),
                deletion_timestamp: self.metadata.deletion_timestamp.clone(),
                finalizers: self.metadata.finalizers.clone(),
                ..ObjectMeta::default()
            },
            spec: self.spec.provider.clone(),
            status: self.status.clone(),
        }
    }
}
