//! The bounce mailbox of an SMTP provider: where the recipients' servers
//! send their bounces and complaints, and how mailroom reads them (POP3 over
//! TLS). Also the soft-bounce policy every provider shares: how many soft
//! bounces in how long put an address on the suppression list.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::{CaBundleSource, SecretRef};

/// The mailbox bounces of this provider's mail go to, read by the
/// controller (the leader) every `pollSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BounceMailbox {
    /// The bounce address, e.g. `bounces@example.com`. Every message is
    /// sent with the envelope sender `bounces+<token>@example.com`, the
    /// token an HMAC of the message's identity, so each bounce names its
    /// message even when it quotes none of it. The mailbox must receive
    /// mail for `local+anything@domain` (sub-addressing: Postfix
    /// `recipient_delimiter = +`, Gmail and Microsoft 365 do it by
    /// default). The local part is at most 24 characters, with no `+`.
    #[schemars(
        length(min = 3, max = 254),
        regex(pattern = r"^[A-Za-z0-9._-]{1,24}@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    )]
    pub address: String,
    /// The POP3 server that holds the mailbox.
    pub pop3: Pop3Server,
    /// The Secret, in the provider's namespace, with `username` and
    /// `password` for the mailbox and, optionally, `tokenKey`: the key of
    /// the envelope tokens (at least 16 bytes; without it the key is derived
    /// from the password, and a new password leaves the bounces of earlier
    /// mail to be matched by their Message-ID).
    pub secret_ref: SecretRef,
    /// Seconds between two reads of the mailbox.
    #[serde(default = "default_poll_seconds")]
    #[schemars(range(min = 10, max = 3600))]
    pub poll_seconds: u32,
}

fn default_poll_seconds() -> u32 {
    60
}

/// A POP3 server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.tls != 'None' || !has(self.caBundle)").message("caBundle needs tls Implicit"))]
#[serde(rename_all = "camelCase")]
pub struct Pop3Server {
    /// Host name or IP address.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$")
    )]
    pub host: String,
    /// TCP port: 995 for POP3 over TLS (default), 110 without.
    #[serde(default = "default_pop3_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// `Implicit` (default): TLS from the first byte (POP3S). `None`: clear
    /// text, credentials included; must be chosen explicitly.
    #[serde(default)]
    pub tls: MailboxTls,
    /// Extra certificate authorities (PEM) to trust for the server's
    /// certificate, in addition to the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleSource>,
}

fn default_pop3_port() -> u16 {
    995
}

/// How a mailbox connection is secured.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MailboxTls {
    /// TLS from the first byte.
    #[default]
    Implicit,
    /// No TLS: the password and the bounces cross the network in clear text.
    None,
}

/// How many soft bounces (a full mailbox, a temporary refusal) suppress an
/// address, from the bounce mailbox and the services' webhooks alike.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SoftBouncePolicy {
    /// Soft bounces within the window that suppress the address (reason
    /// SoftBounces). 0 turns the count off.
    #[serde(default = "default_soft_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub limit: u32,
    /// The window, in hours.
    #[serde(default = "default_soft_window_hours")]
    #[schemars(range(min = 1, max = 8760))]
    pub window_hours: u32,
}

impl Default for SoftBouncePolicy {
    fn default() -> Self {
        Self {
            limit: default_soft_limit(),
            window_hours: default_soft_window_hours(),
        }
    }
}

fn default_soft_limit() -> u32 {
    3
}

fn default_soft_window_hours() -> u32 {
    168
}
