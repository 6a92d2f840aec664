//! DKIM signing of an SMTP provider's mail: the domain and selector, the
//! private key in a Secret, the algorithm and the signed headers; and the
//! DNS record the provider's status prints for the public key.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::KeyRef;

/// Sign every message with DKIM (RFC 6376), relaxed/relaxed canonicalization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.headers) || self.headers.exists(h, h.lowerAscii() == 'from')").message("headers must include From (RFC 6376 §5.4)"))]
#[x_kube(validation = Rule::new("!has(self.headers) || !self.headers.exists(h, h.lowerAscii().startsWith('content-'))").message("Content-* headers belong to the MIME body and cannot be signed here"))]
#[serde(rename_all = "camelCase")]
pub struct DkimSpec {
    /// The signing domain (`d=`). For DMARC it must align with the From
    /// domain: the same, or its parent (the provider's Ready message warns
    /// when `defaultFrom` does not align).
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
        )
    )]
    pub domain: String,
    /// The selector (`s=`): the public key is published at
    /// `<selector>._domainkey.<domain>` (the provider's status prints the
    /// record).
    #[schemars(
        length(min = 1, max = 63),
        regex(
            pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
        )
    )]
    pub selector: String,
    /// The Secret key holding the private key: for `RsaSha256` a PEM RSA key
    /// of 2048 to 4096 bits (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8
    /// `BEGIN PRIVATE KEY`); for `Ed25519Sha256` a PKCS#8 PEM Ed25519 key or
    /// its 32-byte seed in base64. Anything else makes the provider
    /// InvalidSpec. The key is never logged.
    pub private_key_secret_ref: KeyRef,
    /// `RsaSha256` (default; every receiver verifies it) or `Ed25519Sha256`
    /// (RFC 8463; not every receiver does: sign with RSA unless you know).
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// The header fields signed, each at most once. Default: From, To, Cc,
    /// Subject, Date, Message-ID, Reply-To, MIME-Version. List-Unsubscribe
    /// and List-Unsubscribe-Post are always signed as well (RFC 8058).
    /// `Content-*` headers cannot be listed (the body hash covers the MIME
    /// tree).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(length(min = 1, max = 76), regex(pattern = r"^[A-Za-z0-9-]+$"))
    )]
    pub headers: Vec<String>,
}

/// The headers signed whatever the provider names: one-click unsubscribe
/// counts only when signed (RFC 8058 §3).
pub const ALWAYS_SIGNED_HEADERS: &[&str] = &["List-Unsubscribe", "List-Unsubscribe-Post"];

/// The headers signed when a provider names none.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
];

/// A DKIM signing algorithm.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// rsa-sha256 with an RSA key of 2048 to 4096 bits.
    #[default]
    RsaSha256,
    /// ed25519-sha256 (RFC 8463).
    Ed25519Sha256,
}

/// The DNS TXT record that publishes the provider's DKIM public key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DkimRecord {
    /// Where to publish it: `<selector>._domainkey.<domain>`.
    pub name: String,
    /// The TXT value: `v=DKIM1; k=rsa; p=<public key>`.
    pub value: String,
}
