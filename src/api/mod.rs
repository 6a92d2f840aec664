//! The custom resources of the `mailroom.dev/v1alpha1` API: what to send
//! ([`EmailMessage`]) and how to send it ([`EmailProvider`]).

pub mod condition;
pub mod message;
pub mod provider;
pub mod schema;

pub use message::{EmailMessage, EmailMessageSpec, EmailMessageStatus, Phase};
pub use provider::{EmailProvider, EmailProviderSpec, EmailProviderStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every mailroom resource.
pub const GROUP: &str = "mailroom.dev";

/// Every CustomResourceDefinition of the project, in install order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![EmailProvider::crd(), EmailMessage::crd()]
        .into_iter()
        .map(without_unsigned_formats)
        .collect()
}

/// schemars marks unsigned integers with formats (`uint16`, `uint32`) that
/// Kubernetes does not know and warns about on every apply; the ranges in the
/// schema already bound them, so the formats are dropped.
fn without_unsigned_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.starts_with("uint"))
                {
                    map.remove("format");
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// The CRDs as one multi-document YAML stream, as stored in `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
