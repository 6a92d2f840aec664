//! `EmailUsage`, one per namespace and provider: what the namespace sent
//! through the provider, against the bounds its `spec.tenants` sets, where
//! the namespace's team can read it (and the platform team can release a
//! reputation hold).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::message::ProviderRef;

/// The annotation a person sets on an EmailUsage (`true`) to release its
/// namespace's ReputationHold; the controller takes it off and starts the
/// window afresh.
pub const RELEASE_HOLD_ANNOTATION: &str = "mailroom.dev/release-hold";

/// What one namespace sent through one provider, against the bounds the
/// provider sets (written by the controller; read it with `kubectl get
/// emailusage`). Its name is the provider's kind and name
/// (`clusteremailprovider.shared-relay`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailUsage",
    namespaced,
    status = "EmailUsageStatus",
    shortname = "eusage",
    category = "mailroom",
    doc = "What one namespace sent through one provider this hour and day, against the provider's quotas, and whether its sends are held for its bounce or complaint rate. Written by the controller.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerRef.name"}"#,
    printcolumn = r#"{"name":"Hour","type":"integer","jsonPath":".status.hour.messages"}"#,
    printcolumn = r#"{"name":"Day","type":"integer","jsonPath":".status.day.messages"}"#,
    printcolumn = r#"{"name":"Sent","type":"integer","jsonPath":".status.totals.sent"}"#,
    printcolumn = r#"{"name":"Bounced","type":"integer","jsonPath":".status.totals.bounced"}"#,
    printcolumn = r#"{"name":"Complained","type":"integer","jsonPath":".status.totals.complained"}"#,
    printcolumn = r#"{"name":"Held","type":"string","jsonPath":".status.hold.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EmailUsageSpec {
    /// The provider this usage is of.
    pub provider_ref: ProviderRef,
}

/// The counts, as of the last write (every few seconds while they change).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailUsageStatus {
    /// This clock hour (UTC): messages accepted, against `messagesPerHour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<UsageWindow>,
    /// This day (UTC): messages accepted, against `messagesPerDay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<UsageWindow>,
    /// The reputation window: messages accepted, bounced and complained
    /// since its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<UsageCounts>,
    /// Every message since this object was made: for chargeback.
    #[serde(default)]
    pub totals: UsageCounts,
    /// Set while the namespace's sends through the provider are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

/// Messages accepted in one quota window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageWindow {
    /// Its start.
    pub start: Time,
    /// Messages (bulk recipients) accepted in it.
    pub messages: u64,
    /// The quota, when the provider sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Counts of outcomes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageCounts {
    /// Since when (the reputation window's start; for totals, unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Accepted by the server.
    #[serde(default)]
    pub sent: u64,
    /// Ended Failed or Unknown.
    #[serde(default)]
    pub failed: u64,
    /// Hard-bounced or dropped, by the service's events or the bounce
    /// mailbox.
    #[serde(default)]
    pub bounced: u64,
    /// Marked as spam.
    #[serde(default)]
    pub complained: u64,
}

/// Why a namespace's sends are held.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// `ReputationHold`.
    pub reason: String,
    /// The rate that passed the provider's limit, in words.
    pub message: String,
    /// Since when.
    pub since: Time,
}

impl EmailUsage {
    /// The name of the usage object of `provider`.
    pub fn name_for(provider: &ProviderRef) -> String {
        let name = format!(
            "{}.{}",
            provider.kind_name().to_ascii_lowercase(),
            provider.name
        );
        if name.len() <= 253 {
            return name;
        }
        // Too long for an object name: cut, with a digest of the whole.
        let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
        let mut cut: String = name.chars().take(200).collect();
        cut.push('-');
        cut.push_str(&hex::encode(&digest.as_ref()[..8]));
        cut
    }
}
