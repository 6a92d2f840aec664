//! The custom resources of the `mailroom.dev/v1alpha1` API: what to send
//! ([`EmailMessage`], [`EmailTemplate`]) and how to send it
//! ([`EmailProvider`], [`ClusterEmailProvider`]), and the record of what
//! was sent ([`EmailLedger`]) and of the attempts under way
//! ([`EmailJournal`]).

pub mod bounces;
pub mod cluster_provider;
pub mod condition;
pub mod deliverability;
pub mod dkim;
pub mod health;
pub mod journal;
pub mod ledger;
pub mod message;
pub mod namespaces;
pub mod origin;
pub mod provider;
pub mod provider_id;
pub mod refs;
pub mod route;
pub mod schema;
pub mod suppression;
pub mod template;
pub mod tenancy;
pub mod usage;

pub use cluster_provider::{ClusterEmailProvider, ClusterEmailProviderSpec};
pub use journal::{EmailJournal, EmailJournalSpec, JournalClaim};
pub use ledger::{EmailLedger, EmailLedgerSpec, LedgerEntry};
pub use message::{
    BounceKind, DeliveryEvent, DeliveryEventType, EmailMessage, EmailMessageSpec,
    EmailMessageStatus, Phase, ProviderAttempt,
};
pub use provider::{EmailProvider, EmailProviderSpec, EmailProviderStatus};
pub use provider_id::ProviderId;
pub use route::{EmailRoute, EmailRouteSpec};
pub use suppression::{EmailSuppression, EmailSuppressionSpec, SuppressionReason};
pub use template::{EmailTemplate, EmailTemplateSpec, EmailTemplateStatus};
pub use usage::{EmailUsage, EmailUsageSpec, EmailUsageStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every mailroom resource.
pub const GROUP: &str = "mailroom.dev";

/// Every CustomResourceDefinition of the project, in install order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        EmailProvider::crd(),
        ClusterEmailProvider::crd(),
        EmailMessage::crd(),
        EmailTemplate::crd(),
        EmailLedger::crd(),
        EmailJournal::crd(),
        EmailSuppression::crd(),
        EmailRoute::crd(),
        EmailUsage::crd(),
    ]
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
        let mut value = serde_json::to_value(&crd)
            .map_err(<serde_yaml_ng::Error as serde::ser::Error>::custom)?;
        whole_bounds_as_integers(&mut value);
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&value)?);
    }
    Ok(out)
}

/// schemars writes range bounds as floats (`minimum: 1.0`); whole ones are
/// written as integers, as kubectl and kustomize print them, so every copy of
/// the CRDs reads the same.
fn whole_bounds_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for key in ["minimum", "maximum"] {
                let whole = map
                    .get(key)
                    .and_then(|v| v.as_f64())
                    .filter(|f| f.fract() == 0.0);
                if let Some(bound) = whole {
                    map.insert(key.into(), serde_json::Value::from(bound as i64));
                }
            }
            map.values_mut().for_each(whole_bounds_as_integers);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_bounds_as_integers),
        _ => {}
    }
}
