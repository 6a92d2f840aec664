//! `EmailProvider`: how to send. Names exactly one transport (an SMTP server or one service API) with
//! its connection settings; credentials always come from Secrets.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::refs::{CaBundleSource, KeyRef, SecretRef};
use super::schema;

/// How to send email: one transport, with its connection settings and the
/// Secrets that hold its credentials. The controller verifies it and reports
/// the result in the `Ready` condition.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailProvider",
    namespaced,
    status = "EmailProviderStatus",
    shortname = "eprov",
    doc = "How to send email: an SMTP server, or the HTTP API of Mailtrap, Resend, Postmark, Mailgun or SendGrid, with credentials from Secrets.",
    category = "mailroom",
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".status.transport"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Webhook","type":"string","jsonPath":".status.conditions[?(@.type==\"WebhookReady\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Bounces","type":"string","jsonPath":".status.conditions[?(@.type==\"BouncesReady\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("[has(self.smtp), has(self.api)].filter(t, t).size() == 1").message("exactly one transport must be set: smtp or api"))]
#[x_kube(validation = Rule::new("!has(self.tracking) || has(self.api)").message("tracking needs an api provider (Postmark, Mailgun or SendGrid): SMTP servers do not track opens or clicks"))]
#[x_kube(validation = Rule::new("!has(self.tracking) || !has(self.api) || !(self.api.provider in ['Mailtrap', 'Resend'])").message("Mailtrap and Resend set open and click tracking per sending domain in their dashboards, not per provider or message: remove tracking"))]
#[x_kube(validation = Rule::new("!has(self.webhook) || has(self.api)").message("webhook needs an api provider: SMTP servers send no delivery webhooks"))]
#[x_kube(validation = Rule::new("!has(self.suppressions) || has(self.api)").message("suppressions.sync needs an api provider: an SMTP server keeps no suppression list to sync"))]
#[x_kube(validation = Rule::new("!has(self.tenants) || has(self.rateLimit) || self.tenants.all(t, !has(t.rateSharePercent))").message("tenants[].rateSharePercent is a share of rateLimit: set rateLimit"))]
#[serde(rename_all = "camelCase")]
pub struct EmailProviderSpec {
    /// Send over SMTP to a relay or mail server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,

    /// Send through an email service's HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,

    /// Pause sending: while true, this provider's messages wait (reason
    /// Suspended) and nothing is sent. Setting it back to false resumes them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// A token bucket shared by every message of this provider: at most
    /// `messagesPerSecond` on average, `burst` at once. A message held back
    /// waits (reason RateLimited); it never fails for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// Retry limits for this provider's messages (each message may override
    /// them). Defaults: the controller's `--max-attempts` and
    /// `--deadline-seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,

    /// Delete this provider's messages this many seconds after they finish,
    /// unless a message sets its own `ttlSecondsAfterFinished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<u32>,

    /// How many days mailroom remembers each message this provider sent
    /// (in the namespace's EmailLedger pages), so that the same message
    /// created again (re-applied by a GitOps tool, restored from a backup)
    /// is not sent again but marked Sent with reason AlreadySent. Default
    /// 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 365))]
    pub deduplication_window_days: Option<u32>,

    /// The sender used by messages that do not set `from`, as `address` or
    /// `Display Name <address>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_mailbox")]
    pub default_from: Option<String>,

    /// The most bytes a message's attachments may add up to, before
    /// encoding (default 10 MiB, Postmark's limit; Mailgun takes 25 MB,
    /// SendGrid 30 MB, Resend 40 MB). A message over it fails with
    /// InvalidRequest naming the attachment, and nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 52428800))]
    pub max_attachment_bytes: Option<u32>,

    /// How many soft bounces within how many hours put an address on the
    /// suppression list (default 3 in 168 hours; `limit: 0` turns it off).
    /// Hard bounces and complaints suppress at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_bounces: Option<super::bounces::SoftBouncePolicy>,

    /// One-click unsubscribe for bulk messages (`spec.recipients`) that set
    /// none of their own; its URL is rendered for each recipient. Single
    /// messages only get the headers they ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<super::deliverability::Unsubscribe>,

    /// Open and click tracking for every message (a message's `tracking`
    /// overrides it setting by setting). Postmark, Mailgun and SendGrid only:
    /// refused at apply for SMTP (servers do not track) and for Mailtrap and
    /// Resend (set it per sending domain in their dashboards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<super::deliverability::Tracking>,

    /// What each namespace sending through this provider may do: quotas,
    /// a share of the rate, allowed senders, allowed recipients (or a
    /// redirect, for staging), the bounce and complaint rates it may reach.
    /// The first policy that picks a message's namespace governs it (at
    /// most 20). What each namespace used is in its EmailUsage objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub tenants: Vec<super::tenancy::TenantPolicy>,

    /// Receive the service's delivery webhooks (API providers only): the
    /// controller verifies each request with the key in this Secret and
    /// records delivered, bounced and complained in the message's status.
    /// Register `https://<your host>/webhooks/<namespace>/<name>` at the
    /// service (`/webhooks/_cluster/<name>` for a ClusterEmailProvider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,

    /// Keep mailroom's suppression list and the service's in step (API
    /// providers). `Import` reads the service's bounces, complaints and
    /// unsubscribes into EmailSuppressions (up to `maxImported`); `Mirror`
    /// also deletes an address at the service when its EmailSuppression is
    /// deleted, so deleting one sends to the address again through both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressions: Option<SuppressionSync>,
}

/// How the provider's suppression list follows the service's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SuppressionSync {
    /// `Import`, `Mirror` or `Disabled` (default; not `Off`, which YAML
    /// reads as a boolean).
    #[serde(default)]
    pub sync: SyncMode,
    /// The most addresses read from the service in one pass (default
    /// 10,000; at most 100,000): each becomes an EmailSuppression, one
    /// object per address. Past it the import stops and says so; the
    /// service still drops mail to the rest (`Dropped` events).
    #[serde(default = "default_max_imported")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_imported: u32,
    /// Minutes between two imports (default 60).
    #[serde(default = "default_sync_minutes")]
    #[schemars(range(min = 5, max = 1440))]
    pub interval_minutes: u32,
}

fn default_max_imported() -> u32 {
    10_000
}

fn default_sync_minutes() -> u32 {
    60
}

/// How the suppression lists are kept in step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Nothing is read from or written to the service's list.
    #[default]
    Disabled,
    /// The service's list is read into EmailSuppressions.
    Import,
    /// As Import, and a deleted EmailSuppression is deleted at the service.
    Mirror,
}

/// How the controller checks that a delivery webhook came from the service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret, in the provider's namespace, with the service's webhook
    /// key: `signingSecret` for Resend (`whsec_...`) and Mailtrap,
    /// `signingKey` for Mailgun (its HTTP webhook signing key),
    /// `verificationKey` for SendGrid (the signed event webhook's public
    /// key, base64), `username` and `password` for Postmark (the basic auth
    /// credentials put in the webhook URL).
    pub secret_ref: SecretRef,
    /// How old a signed timestamp may be, in seconds (Resend, SendGrid,
    /// Mailgun): older requests are refused as replays. Default 300.
    #[serde(default = "default_webhook_tolerance_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub tolerance_seconds: u32,
    /// Have the controller create the subscription at the service itself,
    /// for the events mailroom reads, pointing at
    /// `{--webhook-public-url}/webhooks/{namespace}/{name}`; keep it (a
    /// subscription deleted or changed at the service is put back); and
    /// remove it when the provider is deleted (a finalizer). The key the
    /// service gives (or, for Postmark, the basic auth credentials the
    /// controller makes) is written into `secretRef`, a Secret the
    /// controller creates and owns: an existing Secret of someone else's is
    /// never written. Needs an API key allowed to manage webhooks (see
    /// docs/providers.md); without one `WebhookReady` says so and sending
    /// goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub register: bool,
}

fn default_webhook_tolerance_seconds() -> u32 {
    300
}

/// The attachment cap a provider gets when it sets none: 10 MiB.
pub const DEFAULT_MAX_ATTACHMENT_BYTES: u32 = 10 * 1024 * 1024;

/// The SMTP transport.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.tls != 'None' || !has(self.caBundle)").message("caBundle needs tls StartTLS or Implicit"))]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    /// Host name or IP address of the SMTP server.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$")
    )]
    pub host: String,

    /// TCP port of the SMTP server: usually 587 for StartTLS, 465 for
    /// Implicit TLS and 25 for relays.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// How the connection is secured. `StartTLS` (default) upgrades the
    /// connection and refuses to continue if the server does not offer it;
    /// `Implicit` speaks TLS from the first byte (SMTPS); `None` sends in clear
    /// text and must be chosen explicitly.
    #[serde(default)]
    pub tls: TlsMode,

    /// Extra certificate authorities (PEM) to trust for the server's
    /// certificate, in addition to the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleSource>,

    /// Credentials for SMTP AUTH. Leave unset for relays that accept mail
    /// without authentication (for example by source IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SmtpAuth>,

    /// The name sent in EHLO. Defaults to the controller's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    )]
    pub helo_name: Option<String>,

    /// Seconds to wait for the server to connect; a whole attempt
    /// (greeting, every command, the reply to DATA) is cut off after twice
    /// this, as Unreachable (a send cut off may have been delivered: see the
    /// message's deliveryPolicy).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,

    /// Connection pool settings: connections are kept open and reused by the
    /// messages of this provider.
    #[serde(default)]
    pub pool: PoolSpec,

    /// The mailbox that receives this provider's bounces and complaints.
    /// When set, each message goes out with an envelope sender that names
    /// it, and the controller reads the mailbox: a bounce turns the message
    /// Bounced (hard) or records it (soft, delayed), a complaint turns it
    /// Complained, and hard bounces and complaints put the address on the
    /// provider's suppression list. The `BouncesReady` condition says
    /// whether the mailbox can be read; sending never depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounces: Option<super::bounces::BounceMailbox>,

    /// Sign every message with DKIM, for relays that do not sign (many
    /// company relays and self-hosted Postfix do not). Publish the record
    /// the provider's `status.dkim` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<super::dkim::DkimSpec>,
}

fn default_port() -> u16 {
    587
}

fn default_timeout_seconds() -> u32 {
    30
}

/// How an SMTP connection is secured.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Upgrade with STARTTLS; fail if the server does not offer it.
    #[default]
    StartTLS,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS at all: credentials and mail cross the network in clear text.
    None,
}

/// SMTP authentication.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmtpAuth {
    /// The SASL mechanism: `Plain` (default) or `Login` with a password, or
    /// `XOAuth2` with an OAuth 2.0 access token (Microsoft 365, Gmail).
    #[serde(default)]
    pub mechanism: AuthMechanism,
    /// The Secret, in the provider's namespace, that holds the credentials.
    pub secret_ref: SecretRef,
    /// The Secret key holding the user name.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// The Secret key holding the password, or the access token for XOAuth2.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// A SASL mechanism for SMTP AUTH.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMechanism {
    /// AUTH PLAIN with user name and password.
    #[default]
    Plain,
    /// AUTH LOGIN with user name and password.
    Login,
    /// AUTH XOAUTH2 with user name and an OAuth 2.0 access token.
    XOAuth2,
}

/// Connection pool settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// The most connections open at once to this server (default 100).
    /// Each carries one message at a time (about four a second at 50 ms per
    /// server reply). The pool opens 16 at first (fewer when this is lower)
    /// and more while messages wait for one, up to this: one more a send at
    /// first, one more a round of sends once the server refused one. A
    /// server that refuses one more with a 421 reply (Postfix past its cap)
    /// brings it back to those it took, never below 16, for ten minutes.
    /// Set it to what the server allows one client where that is below 16
    /// (Exchange Online: 3).
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
    /// Seconds an unused connection stays open before it is closed.
    #[serde(default = "default_idle_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub idle_timeout_seconds: u32,
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            idle_timeout_seconds: default_idle_timeout_seconds(),
        }
    }
}

fn default_max_connections() -> u32 {
    100
}

/// Connections an SMTP pool opens at first (or `maxConnections` when
/// lower); it grows from there while messages wait for one.
pub const POOL_START_CONNECTIONS: u32 = 16;

fn default_idle_timeout_seconds() -> u32 {
    60
}

/// A token bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Messages per second, on average.
    #[schemars(range(min = 1, max = 100000))]
    pub messages_per_second: u32,
    /// The most messages sent at once after a quiet spell. Defaults to
    /// `messagesPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<u32>,
}

/// How long to keep trying a message that fails for a retryable reason.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts before a retryable failure becomes final (Failed); also
    /// the most attempts that controller restarts may cut off before the
    /// message ends Unknown (reason Interrupted) instead of being sent again
    /// (for a bulk message: cut-offs of one batch in a row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// Seconds after the message's creation after which it is no longer
    /// tried (Failed, reason DeadlineExceeded), whatever it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2592000))]
    pub deadline_seconds: Option<u32>,
}

/// An email service's HTTP API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.mailtrap) || self.provider == 'Mailtrap'").message("mailtrap options belong to provider Mailtrap"))]
#[x_kube(validation = Rule::new("!has(self.postmark) || self.provider == 'Postmark'").message("postmark options belong to provider Postmark"))]
#[x_kube(validation = Rule::new("!has(self.mailgun) || self.provider == 'Mailgun'").message("mailgun options belong to provider Mailgun"))]
#[x_kube(validation = Rule::new("!has(self.sendgrid) || self.provider == 'SendGrid'").message("sendgrid options belong to provider SendGrid"))]
#[x_kube(validation = Rule::new("self.provider != 'Mailgun' || has(self.mailgun)").message("provider Mailgun needs mailgun.domain"))]
#[x_kube(validation = Rule::new("!has(self.testMode) || !self.testMode || self.provider != 'Mailtrap' || (has(self.mailtrap) && has(self.mailtrap.sandboxInboxId))").message("Mailtrap's test mode is its sandbox: set mailtrap.sandboxInboxId"))]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// The email service.
    pub provider: ApiProvider,
    /// The Secret key, in the provider's namespace, that holds the API key
    /// (Mailtrap API token, Resend API key, Postmark server token, Mailgun
    /// private API key, SendGrid API key).
    pub secret_ref: ApiKeyRef,
    /// Overrides the service's base URL (`https://host[:port][/path]`), for
    /// regional hosts, proxies and tests. Defaults to the service's own. Only
    /// hosts the cluster operator allows (the controller's
    /// `--allowed-endpoint-hosts`) are used; any other makes the provider
    /// not Ready (InvalidSpec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub endpoint: Option<String>,
    /// Send in the service's test mode: the request is checked as a real
    /// one, and nothing is delivered. Postmark: the server token
    /// `POSTMARK_API_TEST`; Mailgun: `o:testmode=yes`; SendGrid:
    /// `mail_settings.sandbox_mode`; Resend: every recipient becomes
    /// `delivered@resend.dev` (the originals in `X-Original-To`); Mailtrap:
    /// its sandbox (`mailtrap.sandboxInboxId`). The provider's
    /// `status.testMode` says so, and its messages are Sent with reason
    /// TestMode, never mistaken for delivered mail.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_mode: bool,
    /// Refuse to send until the service counts the sending domain verified
    /// (the `DomainVerified` condition True): the provider is not Ready
    /// (reason DomainNotVerified) and its messages wait. Unset, an
    /// unverified domain is a warning only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_verified_domain: bool,
    /// Seconds to wait for the service to answer one request.
    #[serde(default = "default_api_timeout_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Mailtrap options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailtrap: Option<MailtrapOptions>,
    /// Postmark options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmark: Option<PostmarkOptions>,
    /// Mailgun options (required for Mailgun: the sending domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailgun: Option<MailgunOptions>,
    /// SendGrid options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendgrid: Option<SendGridOptions>,
}

fn default_api_timeout_seconds() -> u32 {
    30
}

/// The email services mailroom can send through.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiProvider {
    /// Mailtrap Email API (send.api.mailtrap.io, bulk or sandbox).
    Mailtrap,
    /// Resend (api.resend.com).
    Resend,
    /// Postmark (api.postmarkapp.com).
    Postmark,
    /// Mailgun (api.mailgun.net or api.eu.mailgun.net).
    Mailgun,
    /// Twilio SendGrid v3 (api.sendgrid.com or api.eu.sendgrid.com).
    SendGrid,
}

impl ApiSpec {
    /// Whether what this provider sends is never delivered: test mode, or
    /// a Mailtrap sandbox.
    pub fn delivers_nothing(&self) -> bool {
        self.test_mode
            || (self.provider == ApiProvider::Mailtrap
                && self
                    .mailtrap
                    .as_ref()
                    .is_some_and(|m| m.sandbox_inbox_id.is_some()))
    }
}

impl ApiProvider {
    /// The service's name as written in status and logs.
    pub fn name(self) -> &'static str {
        match self {
            ApiProvider::Mailtrap => "Mailtrap",
            ApiProvider::Resend => "Resend",
            ApiProvider::Postmark => "Postmark",
            ApiProvider::Mailgun => "Mailgun",
            ApiProvider::SendGrid => "SendGrid",
        }
    }
}

/// One key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApiKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it that holds the API key.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_key_key() -> String {
    "apiKey".into()
}

/// Mailtrap options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MailtrapOptions {
    /// `Transactional` (send.api.mailtrap.io, default) or `Bulk`
    /// (bulk.api.mailtrap.io).
    #[serde(default)]
    pub stream: MailtrapStream,
    /// Send to this sandbox inbox (sandbox.api.mailtrap.io) instead of
    /// delivering: for testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sandbox_inbox_id: Option<u64>,
}

/// A Mailtrap sending stream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MailtrapStream {
    /// Transactional mail.
    #[default]
    Transactional,
    /// Bulk (marketing) mail.
    Bulk,
}

/// Postmark options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostmarkOptions {
    /// The Secret key with the Postmark account token, read only to check
    /// the sending domain (`DomainVerified`): Postmark's domains API takes
    /// no server token. Unset, the domain is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_token_secret_ref: Option<ApiKeyRef>,
    /// The message stream, e.g. `outbound` (default) or a broadcast stream.
    #[serde(default = "default_postmark_stream")]
    #[schemars(length(min = 1, max = 100))]
    pub message_stream: String,
}

fn default_postmark_stream() -> String {
    "outbound".into()
}

/// Mailgun options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailgunOptions {
    /// The sending domain configured in Mailgun, e.g. `mg.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
    )]
    pub domain: String,
    /// `US` (api.mailgun.net, default) or `EU` (api.eu.mailgun.net).
    #[serde(default)]
    pub region: MailgunRegion,
}

/// A Mailgun region.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MailgunRegion {
    /// api.mailgun.net
    #[default]
    US,
    /// api.eu.mailgun.net
    EU,
}

/// SendGrid options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SendGridOptions {
    /// `Global` (api.sendgrid.com, default) or `EU` (api.eu.sendgrid.com,
    /// for EU regional subusers).
    #[serde(default)]
    pub region: SendGridRegion,
}

/// A SendGrid region.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendGridRegion {
    /// api.sendgrid.com
    #[default]
    Global,
    /// api.eu.sendgrid.com
    EU,
}

/// What the controller last found out about the provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailProviderStatus {
    /// The transport in use, e.g. `SMTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `Ready` says whether messages can be sent through this provider, and
    /// if not, why (reason SecretNotFound, AuthFailed, TLSFailed, Unreachable
    /// or InvalidSpec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the provider was last verified against the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// The DNS TXT record to publish for the DKIM public key (SMTP providers
    /// with `smtp.dkim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<super::dkim::DkimRecord>,
    /// What the provider did over the last hour, written by the leader at
    /// most every few seconds when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentActivity>,
    /// True when nothing this provider sends is delivered (`api.testMode`,
    /// or a Mailtrap sandbox).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_mode: bool,
    /// The last suppression import (`spec.suppressions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression_sync: Option<SyncStatus>,
    /// The sending domain as the service sees it (API providers): re-read
    /// every hour and when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<SendingDomain>,
    /// The webhook subscription the controller registered at the service
    /// (`spec.webhook.register`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<RegisteredWebhook>,
    /// The circuit breaker, while it is open: EmailRoutes pass the provider
    /// over until `openUntil`, then one message probes it. Absent when
    /// closed. Kept here so a new leader honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStatus>,
}

/// What the last suppression import found.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When it ended.
    pub synced_at: Time,
    /// Addresses read from the service.
    pub read: u32,
    /// EmailSuppressions it created (the rest existed already).
    pub created: u32,
    /// Whether it stopped at `maxImported`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
    /// Addresses deleted at the service (Mirror) since the controller
    /// started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirrored: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The sending domain as the service sees it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SendingDomain {
    /// The domain (Mailgun's sending domain, else `defaultFrom`'s).
    pub name: String,
    /// Whether the service counts it verified.
    pub verified: bool,
    /// The service's own word for its state, e.g. `pending`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// When it was read.
    pub checked_at: Time,
    /// Each DNS record the service wants (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<DomainRecord>,
}

/// One DNS record a service wants for the sending domain.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainRecord {
    /// What it is for: SPF, DKIM, ReturnPath, Tracking, DMARC, ...
    pub purpose: String,
    /// The record type: TXT, CNAME, MX.
    #[serde(rename = "type")]
    pub type_: String,
    /// The DNS name to publish it at.
    pub name: String,
    /// The value to publish.
    pub value: String,
    /// Whether the service found it in DNS (absent when it does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
}

/// A webhook subscription at the service, as the controller registered it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredWebhook {
    /// Its id at the service (Mailgun: its URL).
    pub id: String,
    /// Where the service posts events.
    pub url: String,
    /// When the controller last created or repaired it.
    pub registered_at: Time,
}

/// An open circuit breaker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// When it opened.
    pub opened_at: Time,
    /// Until when routes pass the provider over; after it, one message
    /// probes the provider (half-open).
    pub open_until: Time,
    /// How many sends in a row had failed for the provider's own reason.
    pub failures: u32,
    /// How many probes in a row failed since it first opened (each doubles
    /// the cool-down).
    #[serde(default)]
    pub failed_probes: u32,
}

/// A provider's messages over a recent window. Counted by the running
/// controller from its start (`since`): a restart starts again from zero.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentActivity {
    /// The window's length, in seconds (an hour).
    pub window_seconds: u32,
    /// Where the counts start: the window's start, or the controller's
    /// start when that is later.
    pub since: Time,
    /// Messages the server accepted.
    pub sent: u64,
    /// Messages that ended Failed or Unknown.
    pub failed: u64,
    /// Messages the service's events showed delivered (or opened, or
    /// clicked).
    pub delivered: u64,
    /// Messages that bounced for good, or the service dropped.
    pub bounced: u64,
    /// Messages marked as spam.
    pub complained: u64,
}
