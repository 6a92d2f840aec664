//! `EmailLedger`: one page of mailroom's record of what it sent in a
//! namespace, so that a message created again (re-applied from Git, restored
//! from a backup) is not sent again. The controller appends to the newest
//! page and deletes a page once the window of its last entry has passed; a
//! person may read the pages, nobody but the controller writes them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Entries one page holds at most: a page stays well under the apiserver's
/// object size limit with the longest names and ids.
pub const PAGE_ENTRIES: usize = 1000;

/// Label on every ledger page (the controller lists pages by it).
pub const PAGE_LABEL: &str = "mailroom.dev/ledger";

/// One page of the record of what mailroom sent in this namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailLedger",
    namespaced,
    shortname = "eledger",
    category = "mailroom",
    doc = "One page of mailroom's record of the messages it sent in this namespace: a message whose identity is listed is not sent again. Written by the controller only.",
    printcolumn = r#"{"name":"Entries","type":"integer","jsonPath":".spec.count"}"#,
    printcolumn = r#"{"name":"Until","type":"string","jsonPath":".spec.until"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EmailLedgerSpec {
    /// How many entries the page holds.
    #[schemars(range(max = 1000))]
    pub count: u32,
    /// When the window of the page's last entry ends: the page is deleted
    /// then.
    pub until: Time,
    /// The messages sent, in the order they were recorded.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub entries: Vec<LedgerEntry>,
}

/// One message that was sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The message's identity, 32 hex characters: a SHA-256 of its
    /// namespace, name and spec, or of its namespace and
    /// `spec.idempotencyKey` when it has one.
    #[schemars(length(min = 32, max = 32), regex(pattern = r"^[0-9a-f]{32}$"))]
    pub id: String,
    /// The name of the EmailMessage that was sent.
    #[schemars(length(max = 253))]
    pub name: String,
    /// When the server accepted it.
    pub sent: Time,
    /// Until when a message with the same identity is not sent again.
    pub until: Time,
    /// The server's id for the accepted message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub provider_message_id: Option<String>,
}
