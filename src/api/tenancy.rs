//! `spec.tenants` of a provider: what each namespace that sends through it
//! may do (quotas, a share of its rate, the senders it may use, where its
//! mail may go, the bounce and complaint rates it may reach). What each
//! namespace used is in `usage` (EmailUsage).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::namespaces::AllowedNamespaces;

/// The most policies a provider lists.
pub const MAX_TENANT_POLICIES: usize = 20;

/// An address (`billing@example.com`) or every address of a domain
/// (`*@example.com`), compared without regard to case.
const ADDRESS_PATTERN: &str = r"^(\*|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64})@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";

/// What the namespaces it picks may do with the provider. The first policy
/// of `spec.tenants` that picks a message's namespace governs it; a
/// namespace none picks is not bounded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicy {
    /// The namespaces this policy governs, by name, by labels, or both;
    /// unset, every namespace. Each namespace is bounded on its own: a
    /// quota is per namespace, not shared by the namespaces picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<AllowedNamespaces>,
    /// Messages a namespace may send through the provider per hour (each
    /// recipient of a bulk message counts one), counted in clock hours
    /// (UTC). Over it, messages wait (reason QuotaExceeded) until the next
    /// hour; none fails for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub messages_per_hour: Option<u32>,
    /// As `messagesPerHour`, per day (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub messages_per_day: Option<u32>,
    /// The share of the provider's `rateLimit` one namespace may use, in
    /// percent: each namespace gets its own bucket of that share, so one
    /// namespace cannot take the whole rate from the others. Needs the
    /// provider's `rateLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub rate_share_percent: Option<u32>,
    /// The only senders (`from` and `replyTo`, the provider's `defaultFrom`
    /// included) a namespace may use: addresses, or `*@domain` for every
    /// address of a domain. Empty: any. A message naming another ends
    /// Failed (reason SenderNotAllowed) and nothing is sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(regex(pattern = ADDRESS_PATTERN), length(max = 254)))]
    pub senders: Vec<String>,
    /// Where a namespace's mail may go: for staging and test namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<RecipientGuard>,
    /// The bounce and complaint rates a namespace may reach before its
    /// sends through the provider are held (reason ReputationHold) until a
    /// person releases them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<ReputationLimit>,
}

/// The recipients a namespace may mail, and what happens to the others.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecipientGuard {
    /// Recipients (to, cc, bcc) mail may go to: addresses, or `*@domain`.
    #[schemars(length(min = 1, max = 100), inner(regex(pattern = ADDRESS_PATTERN), length(max = 254)))]
    pub allow: Vec<String>,
    /// Where mail to anyone else goes instead: the email is sent to this
    /// address alone, its original recipients listed in `X-Original-To`, and
    /// the message's status says so. Unset, such a message ends Failed
    /// (reason RecipientNotAllowed) and nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ADDRESS_PATTERN), length(max = 254))]
    pub redirect_to: Option<String>,
}

/// When a namespace's bounces or complaints hold its sends.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.maxBouncePercent) || has(self.maxComplaintPerMille)").message("set maxBouncePercent, maxComplaintPerMille or both"))]
pub struct ReputationLimit {
    /// Hard bounces (and drops) per hundred messages sent over the window
    /// above which the namespace is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_bounce_percent: Option<u32>,
    /// Complaints per thousand messages sent over the window above which
    /// the namespace is held (services review accounts at 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_complaint_per_mille: Option<u32>,
    /// Messages the namespace must have sent in the window before its
    /// rates are judged (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub minimum_sent: Option<u32>,
    /// The window, in hours (default 24), counted in clock hours (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 720))]
    pub window_hours: Option<u32>,
}
