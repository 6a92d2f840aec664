//! Writes a provider's status without losing another writer's: the
//! provider reconciler, the bounce mailbox reader and the send path each set
//! conditions, so every write carries the resourceVersion it was made from
//! and a conflict is read again and retried instead of overwriting.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::{ClusterEmailProvider, EmailProvider};

/// Attempts at a conflicting write before giving up.
const ATTEMPTS: u64 = 8;

/// Merge-patches `status` of `provider` (as cached), only if the object has
/// not changed since: a 409 means another writer was first.
pub async fn patch_guarded(
    client: &Client,
    provider: &EmailProvider,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": provider.meta().resource_version},
        "status": status,
    });
    let name = provider.name_any();
    let params = PatchParams::default();
    match provider.namespace() {
        Some(namespace) => {
            let api: Api<EmailProvider> = Api::namespaced(client.clone(), &namespace);
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
        }
        None => {
            let api: Api<ClusterEmailProvider> = Api::all(client.clone());
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
        }
    }
}

/// Reads the provider afresh, lets `edit` change its conditions (given its
/// generation) and writes them back guarded; on a conflict, again, at most
/// [`ATTEMPTS`] times. A provider that is gone is not an error.
pub async fn edit_conditions(
    client: &Client,
    provider: &EmailProvider,
    edit: impl Fn(&mut Vec<Condition>, Option<i64>),
) -> Result<(), kube::Error> {
    edit_status(client, provider, edit, serde_json::Map::new()).await
}

/// As [`edit_conditions`], writing the fields of `also` into the status
/// beside the conditions (a `null` removes a field).
pub async fn edit_status(
    client: &Client,
    provider: &EmailProvider,
    edit: impl Fn(&mut Vec<Condition>, Option<i64>),
    also: serde_json::Map<String, serde_json::Value>,
) -> Result<(), kube::Error> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let Some(current) = fresh(client, provider).await? else {
            return Ok(());
        };
        let mut conditions = current
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        edit(&mut conditions, current.metadata.generation);
        let mut status = also.clone();
        status.insert("conditions".into(), serde_json::json!(conditions));
        let status = serde_json::Value::Object(status);
        match patch_guarded(client, &current, status).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                last = Some(kube::Error::Api(e));
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
            result => return result,
        }
    }
    Err(last.unwrap_or_else(|| {
        kube::Error::Service("status write kept conflicting".to_string().into())
    }))
}

/// The provider as the apiserver has it now (a ClusterEmailProvider as the
/// provider it describes).
pub async fn fresh(
    client: &Client,
    provider: &EmailProvider,
) -> Result<Option<EmailProvider>, kube::Error> {
    let name = provider.name_any();
    match provider.namespace() {
        Some(namespace) => {
            let api: Api<EmailProvider> = Api::namespaced(client.clone(), &namespace);
            api.get_opt(&name).await
        }
        None => {
            let api: Api<ClusterEmailProvider> = Api::all(client.clone());
            Ok(api.get_opt(&name).await?.map(|c| c.as_provider()))
        }
    }
}
