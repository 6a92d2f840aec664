//! `spec.suppressions.sync` in the provider reconcile. `Import` reads the
//! service's list (up to `maxImported` addresses, paged by
//! `manage::suppressions`) every `intervalMinutes` and creates an
//! EmailSuppression for each address the provider does not list yet (one
//! object per address, looked up in the suppression index first, so a
//! second pass writes nothing). `Mirror` also puts a finalizer on the
//! provider's suppressions of the kinds the service keeps, and deletes the
//! address at the service before letting a deleted one go. Each pass does
//! a bounded amount of work; turning it off takes the finalizers away.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::context::Context;
use super::suppression_index::Owner;
use crate::api::condition::{self, Reason, SUPPRESSIONS_SYNCED};
use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::provider::{ApiSpec, SuppressionSync, SyncMode, SyncStatus};
use crate::api::suppression::{
    EmailSuppressionSpec, IMPORTED_ANNOTATION, MIRROR_FINALIZER, SuppressionReason, name_for,
};
use crate::api::{EmailProvider, EmailSuppression};
use crate::manage::client::Client;
use crate::manage::suppressions::{self, Kind, Listed};

/// Suppressions whose finalizer is added or handled in one pass at most.
const FINALIZERS_PER_PASS: usize = 500;
/// Creates under way at once.
const CREATES_AT_ONCE: usize = 16;

/// What `SuppressionsSynced` says, and `status.suppressionSync`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncState {
    /// Whether the last pass read the service's list.
    pub ok: bool,
    /// The condition reason.
    pub reason: Reason,
    /// The condition message.
    pub message: String,
    /// `status.suppressionSync`.
    pub status: Option<SyncStatus>,
    /// Whether the service was asked now (the status must be written).
    pub fresh: bool,
}

/// The provider as suppressions name it, and where they live.
fn owner(ctx: &Context, provider: &EmailProvider) -> Option<(String, ProviderRef)> {
    let name = provider.name_any();
    match provider.namespace() {
        Some(namespace) => Some((
            namespace,
            ProviderRef {
                kind: ProviderKind::EmailProvider,
                name,
            },
        )),
        None => Some((
            ctx.settings.cluster_provider_namespace.clone()?,
            ProviderRef {
                kind: ProviderKind::ClusterEmailProvider,
                name,
            },
        )),
    }
}

/// The provider's suppressions, from the cache.
fn listed(
    ctx: &Context,
    namespace: &str,
    provider: &ProviderRef,
) -> Vec<std::sync::Arc<EmailSuppression>> {
    let lists = &ctx.caches.suppressions;
    lists
        .index
        .list(namespace, &Owner::provider(provider))
        .into_iter()
        .filter_map(|name| {
            lists
                .store
                .get(&kube::runtime::reflector::ObjectRef::new(&name).within(namespace))
        })
        .collect()
}

/// The service's word for a suppression mailroom keeps, if it keeps one.
fn kind_of(reason: SuppressionReason) -> Option<Kind> {
    match reason {
        SuppressionReason::HardBounce => Some(Kind::Bounce),
        SuppressionReason::Complaint => Some(Kind::Complaint),
        SuppressionReason::ServiceList => Some(Kind::Other),
        _ => None,
    }
}

fn reason_of(kind: Kind) -> SuppressionReason {
    match kind {
        Kind::Bounce => SuppressionReason::HardBounce,
        Kind::Complaint => SuppressionReason::Complaint,
        Kind::Other => SuppressionReason::ServiceList,
    }
}

/// Runs one pass for `provider`; `None` when it syncs nothing.
pub async fn sync(
    ctx: &Context,
    provider: &EmailProvider,
    secrets_namespace: &str,
) -> Option<SyncState> {
    let (namespace, reference) = owner(ctx, provider)?;
    let settings = provider
        .spec
        .suppressions
        .clone()
        .filter(|s| s.sync != SyncMode::Disabled);
    let (Some(settings), Some(api)) = (settings, provider.spec.api.as_ref()) else {
        release_all(ctx, &namespace, &reference).await;
        return None;
    };
    let previous = provider
        .status
        .as_ref()
        .and_then(|s| s.suppression_sync.clone());
    let client = match super::registration::client_of(ctx, provider, secrets_namespace).await {
        Ok(client) => client,
        Err(message) => return Some(failed(message, previous)),
    };
    let mirrored = if settings.sync == SyncMode::Mirror {
        mirror(ctx, &client, api, &namespace, &reference).await
    } else {
        release_all(ctx, &namespace, &reference).await;
        0
    };
    let mirrored_total = previous.as_ref().map_or(0, |p| p.mirrored) + mirrored;
    if let Some(kept) = kept(provider, &settings, previous.as_ref()) {
        let mut kept = kept;
        if let Some(status) = kept.status.as_mut() {
            status.mirrored = mirrored_total;
        }
        kept.fresh |= mirrored > 0;
        return Some(kept);
    }
    let cap = settings.max_imported as usize;
    let (found, capped) = match suppressions::list(&client, api, cap).await {
        Ok(found) => found,
        Err(e) => return Some(failed(e.to_string(), previous)),
    };
    let service = api.provider.name();
    let mirror_on = settings.sync == SyncMode::Mirror;
    let (created, failures) = import(ctx, &namespace, &reference, service, &found, mirror_on).await;
    let status = SyncStatus {
        synced_at: Time(jiff::Timestamp::now()),
        read: found.len() as u32,
        created,
        capped,
        mirrored: mirrored_total,
    };
    let capped_note = if capped {
        format!("; stopped at maxImported ({cap}): the service drops mail to the rest itself")
    } else {
        String::new()
    };
    let failed_note = if failures > 0 {
        format!("; {failures} could not be written (tried again next pass)")
    } else {
        String::new()
    };
    Some(SyncState {
        ok: failures == 0,
        reason: if failures == 0 {
            Reason::Synced
        } else {
            Reason::SyncFailed
        },
        message: format!(
            "read {} addresses from {service}'s suppression list, {created} new EmailSuppressions{capped_note}{failed_note}",
            found.len()
        ),
        status: Some(status),
        fresh: true,
    })
}

/// The state in status, when the last pass is recent and the spec the same.
fn kept(
    provider: &EmailProvider,
    settings: &SuppressionSync,
    previous: Option<&SyncStatus>,
) -> Option<SyncState> {
    let status = provider.status.as_ref()?;
    let previous = previous?;
    if status.observed_generation != provider.metadata.generation {
        return None;
    }
    let condition = condition::find(&status.conditions, SUPPRESSIONS_SYNCED)?;
    let age = jiff::Timestamp::now().duration_since(previous.synced_at.0);
    let interval = Duration::from_secs(u64::from(settings.interval_minutes) * 60);
    Duration::try_from(age).ok().filter(|age| *age < interval)?;
    Some(SyncState {
        ok: condition.status == "True",
        reason: if condition.status == "True" {
            Reason::Synced
        } else {
            Reason::SyncFailed
        },
        message: condition.message.clone(),
        status: Some(previous.clone()),
        fresh: false,
    })
}

fn failed(message: String, previous: Option<SyncStatus>) -> SyncState {
    SyncState {
        ok: false,
        reason: Reason::SyncFailed,
        message,
        status: previous,
        fresh: true,
    }
}

/// Creates an EmailSuppression for each address the provider does not
/// list yet; answers how many were created and how many failed.
async fn import(
    ctx: &Context,
    namespace: &str,
    reference: &ProviderRef,
    service: &str,
    found: &[Listed],
    mirror: bool,
) -> (u32, u32) {
    let owner = Owner::provider(reference);
    let index = &ctx.caches.suppressions.index;
    let api: Api<EmailSuppression> = Api::namespaced(ctx.client.clone(), namespace);
    let kind = format!("{:?}", reference.kind);
    let since = Time(jiff::Timestamp::now());
    let objects: Vec<EmailSuppression> = found
        .iter()
        .filter(|l| index.names(namespace, &owner, &l.address).is_empty())
        .map(|listed| EmailSuppression {
            metadata: ObjectMeta {
                name: Some(name_for(&kind, &reference.name, &listed.address)),
                namespace: Some(namespace.to_string()),
                annotations: Some([(IMPORTED_ANNOTATION.to_string(), service.to_string())].into()),
                finalizers: mirror.then(|| vec![MIRROR_FINALIZER.to_string()]),
                ..Default::default()
            },
            spec: EmailSuppressionSpec {
                provider_ref: Some(reference.clone()),
                list: None,
                address: listed.address.clone(),
                reason: reason_of(listed.kind),
                detail: Some(listed.detail.clone()),
                since: Some(listed.since.map(Time).unwrap_or_else(|| since.clone())),
            },
        })
        .collect();
    let results: Vec<Result<bool, kube::Error>> = futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(CREATES_AT_ONCE)
        .collect()
        .await;
    let created = results.iter().filter(|r| matches!(r, Ok(true))).count() as u32;
    let failures = results.iter().filter(|r| r.is_err()).count() as u32;
    if failures > 0 {
        warn!(namespace, provider = %reference.name, failures, "importing suppressions: some could not be written");
    }
    (created, failures)
}

/// Mirror: deletes at the service the addresses of deleted suppressions,
/// then lets them go; puts the finalizer on those lacking it. Answers how
/// many were deleted at the service.
async fn mirror(
    ctx: &Context,
    client: &Client,
    api: &ApiSpec,
    namespace: &str,
    reference: &ProviderRef,
) -> u32 {
    let mut mirrored = 0;
    let mut handled = 0;
    for suppression in listed(ctx, namespace, reference) {
        if handled >= FINALIZERS_PER_PASS {
            break;
        }
        let has = suppression
            .finalizers()
            .iter()
            .any(|f| f == MIRROR_FINALIZER);
        let deleting = suppression.meta().deletion_timestamp.is_some();
        let kind = kind_of(suppression.spec.reason);
        match (deleting, has, kind) {
            (true, true, Some(kind)) => {
                handled += 1;
                match suppressions::remove(client, api, &suppression.spec.address, kind).await {
                    Ok(()) => {
                        mirrored += 1;
                        set_finalizer(ctx, &suppression, false).await;
                    }
                    Err(e) => {
                        warn!(namespace, provider = %reference.name, error = %e, "deleting a suppression at the service failed; tried again")
                    }
                }
            }
            (true, true, None) => {
                handled += 1;
                set_finalizer(ctx, &suppression, false).await;
            }
            (false, false, Some(_)) => {
                handled += 1;
                set_finalizer(ctx, &suppression, true).await;
            }
            _ => {}
        }
    }
    mirrored
}

/// Takes the mirror finalizer off every suppression of the provider that
/// has it (sync turned off or to Import).
async fn release_all(ctx: &Context, namespace: &str, reference: &ProviderRef) {
    let held = listed(ctx, namespace, reference)
        .into_iter()
        .filter(|s| s.finalizers().iter().any(|f| f == MIRROR_FINALIZER))
        .take(FINALIZERS_PER_PASS);
    for suppression in held {
        set_finalizer(ctx, &suppression, false).await;
    }
}

/// Adds or removes the mirror finalizer, guarded by the list it replaces.
async fn set_finalizer(ctx: &Context, suppression: &EmailSuppression, add: bool) {
    let current: Vec<String> = suppression.finalizers().to_vec();
    let mut next: Vec<String> = current
        .iter()
        .filter(|f| *f != MIRROR_FINALIZER)
        .cloned()
        .collect();
    if add {
        next.push(MIRROR_FINALIZER.to_string());
    }
    let test = if suppression.meta().finalizers.is_some() {
        json!({"op": "test", "path": "/metadata/finalizers", "value": current})
    } else {
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": suppression.resource_version()})
    };
    let Ok(patch) = serde_json::from_value::<json_patch::Patch>(
        json!([test, {"op": "add", "path": "/metadata/finalizers", "value": next}]),
    ) else {
        return;
    };
    let namespace = suppression.namespace().unwrap_or_default();
    let api: Api<EmailSuppression> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = suppression.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => {}
        // Gone or changed since the cache saw it: the next pass sees it again.
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {}
        Err(e) => {
            warn!(namespace, suppression = name, error = %e, "setting the mirror finalizer failed")
        }
    }
}

/// Sets or removes `SuppressionsSynced` in `conditions`.
pub fn report(conditions: &mut Vec<Condition>, state: Option<&SyncState>, generation: Option<i64>) {
    match state {
        Some(s) => condition::set(
            conditions,
            SUPPRESSIONS_SYNCED,
            s.ok,
            s.reason,
            &s.message,
            generation,
        ),
        None => conditions.retain(|c| c.type_ != SUPPRESSIONS_SYNCED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_service_keeps_is_mirrored() {
        assert_eq!(kind_of(SuppressionReason::HardBounce), Some(Kind::Bounce));
        assert_eq!(kind_of(SuppressionReason::Complaint), Some(Kind::Complaint));
        assert_eq!(kind_of(SuppressionReason::ServiceList), Some(Kind::Other));
        assert_eq!(kind_of(SuppressionReason::SoftBounces), None);
        assert_eq!(kind_of(SuppressionReason::Manual), None);
        assert_eq!(kind_of(SuppressionReason::Unsubscribed), None);
        for kind in [Kind::Bounce, Kind::Complaint, Kind::Other] {
            assert_eq!(kind_of(reason_of(kind)), Some(kind));
        }
    }
}
