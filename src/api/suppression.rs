//! `EmailSuppression`: an address a provider no longer sends to, because
//! it bounced for good, its recipient marked mail as spam, or a person said
//! so (one object per provider and address, in the provider's namespace:
//! the controller's own for a ClusterEmailProvider); or an address that
//! unsubscribed from a mailing list (one object per list and address, in
//! the namespace of the messages on the list, whatever provider sends
//! them). People read, add and delete them with kubectl; the webhook
//! receiver, the bounce mailbox and the hosted unsubscribe endpoint add
//! them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::message::ProviderRef;
use super::schema;

/// An address the named provider does not send to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailSuppression",
    namespaced,
    shortname = "esup",
    category = "mailroom",
    doc = "An address the named provider does not send to (it bounced for good, its recipient complained, or a person said so), or that unsubscribed from the named list. Delete it to send to the address again.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerRef.name"}"#,
    printcolumn = r#"{"name":"List","type":"string","jsonPath":".spec.list"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.providerRef) != has(self.list)").message("a suppression names a provider (providerRef) or a mailing list (list), one of them"))]
#[x_kube(validation = Rule::new("has(self.list) == (self.reason == 'Unsubscribed')").message("reason Unsubscribed goes with a list (an unsubscribe is from one list), and a list with reason Unsubscribed"))]
pub struct EmailSuppressionSpec {
    /// The provider that does not send to the address: an EmailProvider in
    /// this namespace, or a ClusterEmailProvider (then this object lives in
    /// the controller's namespace). Not an EmailRoute: a suppression
    /// belongs to the provider that learned of it. Unset for an
    /// unsubscribe, which names a `list` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.kind) || self.kind != 'EmailRoute'").message("a suppression names a provider, not an EmailRoute (a route's messages honour the lists of all its providers)"))]
    pub provider_ref: Option<ProviderRef>,
    /// The mailing list the address unsubscribed from (reason
    /// Unsubscribed): messages of this namespace on that list skip it,
    /// whatever provider they go through; others still reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::list_name")]
    pub list: Option<String>,
    /// The address (`local@domain`), compared without regard to case.
    #[schemars(schema_with = "schema::address")]
    pub address: String,
    /// Why it is suppressed.
    pub reason: SuppressionReason,
    /// What the service or the recipient's server said, for a bounce or a
    /// complaint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub detail: Option<String>,
    /// When the event that suppressed it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Why an address is suppressed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuppressionReason {
    /// The recipient's server refused the address for good.
    HardBounce,
    /// The recipient marked mail from the provider as spam.
    Complaint,
    /// The address bounced softly (a full mailbox, a temporary refusal) as
    /// often as the provider's `softBounces` allow within their window.
    SoftBounces,
    /// A person added it.
    Manual,
    /// The recipient unsubscribed from `list` (the one-click link, an
    /// unsubscribe mail, or the service's own unsubscribe).
    Unsubscribed,
    /// The service lists the address on its own suppression list for
    /// another reason (unsubscribed or blocked there, added by hand), read
    /// by `spec.suppressions` on the provider; `detail` says why.
    ServiceList,
}

/// The annotation on an EmailSuppression read from the service's list.
pub const IMPORTED_ANNOTATION: &str = "mailroom.dev/imported-from";
/// The finalizer that deletes the address at the service before the
/// EmailSuppression goes (`suppressions.sync: Mirror`).
pub const MIRROR_FINALIZER: &str = "mailroom.dev/mirror-suppression";

/// The name of the suppression of `address` for the provider `kind/name`:
/// the same for every event about it, so adding it twice adds it once.
pub fn name_for(kind: &str, provider: &str, address: &str) -> String {
    let input = format!("{kind}/{provider}\0{}", address.to_ascii_lowercase());
    let hash = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let short: String = provider
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{}-{}",
        short.trim_matches('-'),
        hex::encode(&hash.as_ref()[..10])
    )
}

/// The name of the unsubscribe of `address` from `list`: the same however
/// often the recipient unsubscribes, and never a provider's suppression's.
pub fn name_for_list(list: &str, address: &str) -> String {
    let input = format!("list/{list}\0{}", address.to_ascii_lowercase());
    let hash = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let short: String = list.chars().take(30).collect();
    format!(
        "{}-unsub-{}",
        short.trim_matches('-'),
        hex::encode(&hash.as_ref()[..10])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unsubscribe_name_per_list_and_address() {
        let a = name_for_list("news", "Bo@Example.org");
        assert_eq!(a, name_for_list("news", "bo@example.org"));
        assert_ne!(a, name_for_list("offers", "bo@example.org"));
        assert_ne!(a, name_for("EmailProvider", "news", "bo@example.org"));
        let long = "l".repeat(63);
        assert!(name_for_list(&long, "bo@example.org").len() <= 63);
    }

    #[test]
    fn one_name_per_provider_and_address_whatever_the_case() {
        let a = name_for("EmailProvider", "relay", "Bo@Example.org");
        assert_eq!(a, name_for("EmailProvider", "relay", "bo@example.org"));
        assert_ne!(a, name_for("EmailProvider", "other", "bo@example.org"));
        assert_ne!(
            a,
            name_for("ClusterEmailProvider", "relay", "bo@example.org")
        );
        assert!(a.starts_with("relay-") && a.len() <= 63, "{a}");
    }
}
