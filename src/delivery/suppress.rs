//! Adds an address to its provider's suppression list when a hard bounce or
//! a complaint is reported for it (by a service's webhook or the bounce
//! mailbox): an EmailSuppression named
//! after the provider and the address, so the same event twice (or a bounce
//! then a complaint) adds it once. The first reason stays. Soft bounces are
//! counted, and suppress at the provider's limit.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

use crate::api::bounces::SoftBouncePolicy;
use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::suppression::{EmailSuppressionSpec, SuppressionReason, name_for};
use crate::api::{BounceKind, DeliveryEvent, DeliveryEventType, EmailSuppression, ProviderId};
use crate::delivery::soft::SoftBounces;

/// Why `event` suppresses its recipient, if it does.
pub fn reason_of(event: &DeliveryEvent) -> Option<SuppressionReason> {
    match (event.type_, event.bounce) {
        (DeliveryEventType::Bounced, Some(BounceKind::Hard)) => Some(SuppressionReason::HardBounce),
        (DeliveryEventType::Complained, _) => Some(SuppressionReason::Complaint),
        _ => None,
    }
}

/// Suppresses the recipient of `event` for `provider`; a ClusterEmailProvider's
/// list lives in `home`. Errors are logged: the event itself is recorded.
pub async fn suppress(
    client: &Client,
    provider: &ProviderId,
    home: Option<&str>,
    event: &DeliveryEvent,
) {
    let (Some(reason), Some(address)) = (reason_of(event), event.recipient.as_deref()) else {
        return;
    };
    let since = Time(event.time.0);
    suppress_address(
        client,
        provider,
        home,
        address,
        reason,
        event.detail.clone(),
        since,
    )
    .await;
}

/// Counts `event` if it is a soft bounce; at `policy`'s limit its recipient
/// is suppressed (reason SoftBounces).
pub async fn count_soft(
    client: &Client,
    soft: &SoftBounces,
    provider: &ProviderId,
    home: Option<&str>,
    policy: &SoftBouncePolicy,
    event: &DeliveryEvent,
) {
    let is_soft =
        event.type_ == DeliveryEventType::Bounced && event.bounce == Some(BounceKind::Soft);
    let Some(address) = event.recipient.as_deref().filter(|_| is_soft) else {
        return;
    };
    if !soft.count(provider, address, &event.id, event.time.0, policy) {
        return;
    }
    let detail = format!(
        "{} soft bounces within {} hours; the last: {}",
        policy.limit,
        policy.window_hours,
        event.detail.as_deref().unwrap_or("no detail")
    );
    let reason = SuppressionReason::SoftBounces;
    let since = event.time.clone();
    suppress_address(client, provider, home, address, reason, Some(detail), since).await;
}

/// Suppresses `address` for `provider` for `reason`.
pub async fn suppress_address(
    client: &Client,
    provider: &ProviderId,
    home: Option<&str>,
    address: &str,
    reason: SuppressionReason,
    detail: Option<String>,
    since: Time,
) {
    let (namespace, kind, name) = match provider {
        ProviderId::Namespaced { namespace, name } => {
            (namespace.as_str(), ProviderKind::EmailProvider, name)
        }
        ProviderId::Cluster { name } => match home {
            Some(home) => (home, ProviderKind::ClusterEmailProvider, name),
            None => return,
        },
    };
    let object = EmailSuppression {
        metadata: ObjectMeta {
            name: Some(name_for(&format!("{kind:?}"), name, address)),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        spec: EmailSuppressionSpec {
            provider_ref: Some(ProviderRef {
                kind,
                name: name.clone(),
            }),
            list: None,
            address: address.to_string(),
            reason,
            detail: detail.map(|d| d.chars().take(1024).collect()),
            since: Some(since),
        },
    };
    let api: Api<EmailSuppression> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => info!(namespace, provider = %name, reason = ?reason, "address suppressed"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        // An address the schema refuses (not a bare addr-spec) is not listed.
        Err(kube::Error::Api(s)) if s.code == 422 => {
            warn!(namespace, provider = %name, "a suppressed address the schema refuses was not listed")
        }
        Err(e) => warn!(namespace, provider = %name, error = %e, "suppressing an address failed"),
    }
}

/// What recording an unsubscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The EmailSuppression was made.
    Recorded,
    /// It was there already (the same recipient unsubscribing again).
    Already,
    /// The schema refuses the address: nothing is listed.
    Refused,
}

/// Records that `address` unsubscribed from `list` in `namespace`: an
/// EmailSuppression with reason Unsubscribed, named after the list and the
/// address, so a second unsubscribe adds nothing. `how` says how it came
/// (the one-click link, a mail, the service's own event).
pub async fn unsubscribe(
    client: &Client,
    namespace: &str,
    list: &str,
    address: &str,
    how: &str,
    since: Time,
) -> Result<Unsubscribed, kube::Error> {
    let object = EmailSuppression {
        metadata: ObjectMeta {
            name: Some(crate::api::suppression::name_for_list(list, address)),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        spec: EmailSuppressionSpec {
            provider_ref: None,
            list: Some(list.to_string()),
            address: address.to_ascii_lowercase(),
            reason: SuppressionReason::Unsubscribed,
            detail: Some(how.chars().take(1024).collect()),
            since: Some(since),
        },
    };
    let api: Api<EmailSuppression> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            info!(namespace, list, how, "address unsubscribed");
            Ok(Unsubscribed::Recorded)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Unsubscribed::Already),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            warn!(
                namespace,
                list, "an unsubscribed address the schema refuses was not listed"
            );
            Ok(Unsubscribed::Refused)
        }
        Err(e) => Err(e),
    }
}
