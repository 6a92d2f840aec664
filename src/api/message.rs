//! `EmailMessage`: what to send. One email, immutable once created; its status
//! records the outcome (sent and accepted, or failed and why).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Header names a message may not set in `headers`: they are built from the
/// spec's own fields or by the transport, or they change where the mail goes,
/// how its MIME tree is read, or what it claims about its own authentication
/// and path; setting them would let a message say one thing and do another.
pub const RESERVED_HEADERS: &[&str] = &[
    // The message's own fields, and its identity.
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "date",
    // Routing and receipts.
    "return-path",
    "delivered-to",
    "envelope-to",
    "x-original-to",
    "apparently-to",
    "errors-to",
    "disposition-notification-to",
    "return-receipt-to",
    // The MIME tree.
    "mime-version",
    // Authentication and the path the mail took.
    "received",
    "received-spf",
    "dkim-signature",
    "domainkey-signature",
    "authentication-results",
    // Written from spec.unsubscribe, and signed with DKIM.
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// Header name prefixes a message may not use, for the same reasons:
/// `Content-*` (the MIME tree), `Resent-*` (re-routing), `ARC-*`
/// (authentication chains) and `X-Mailroom-*` (mailroom's own).
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["content-", "resent-", "arc-", "x-mailroom-"];

/// Whether `name` is a header a message may not set.
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
}

/// The CEL rule that refuses reserved headers at apply time, built from the
/// same lists as [`is_reserved_header`].
fn reserved_headers_rule() -> String {
    let names = RESERVED_HEADERS
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let prefixes = RESERVED_HEADER_PREFIXES
        .iter()
        .map(|p| format!(" && !name.lowerAscii().startsWith('{p}')"))
        .collect::<String>();
    format!("self.all(name, !(name.lowerAscii() in [{names}]){prefixes})")
}

/// Text without control characters (tab allowed): no line breaks, no NUL,
/// VT, FF or escape sequences in a header.
pub const NO_CONTROLS: &str = r"^[^\x00-\x08\x0a-\x1f\x7f]*$";

impl EmailMessageSpec {
    /// Who the message goes to, in a few words: the first of to, cc and bcc
    /// (a bcc shown as such), or the first of recipients, each with how many
    /// more there are.
    pub fn recipient_summary(&self) -> Option<String> {
        let listed = self.to.len() + self.cc.len() + self.bcc.len();
        let (first, total) = match (self.to.first().or(self.cc.first()), self.bcc.first()) {
            (Some(first), _) => (first.clone(), listed),
            (None, Some(hidden)) => (format!("bcc {hidden}"), listed),
            (None, None) => (self.recipients.first()?.to.clone(), self.recipients.len()),
        };
        Some(match total {
            0 | 1 => first,
            n => format!("{first} (+{})", n - 1),
        })
    }
}

/// One email to send. The spec cannot change after creation: to send again,
/// create a new EmailMessage.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailroom.dev",
    version = "v1alpha1",
    kind = "EmailMessage",
    namespaced,
    status = "EmailMessageStatus",
    shortname = "email",
    doc = "One email to send through an EmailProvider; its status records whether the server accepted it.",
    category = "mailroom",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerRef.name"}"#,
    printcolumn = r#"{"name":"To","type":"string","jsonPath":".status.recipient"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Sent\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new EmailMessage to send again"))]
#[x_kube(validation = Rule::new("size(self.to) + size(self.cc) + size(self.bcc) > 0 || (has(self.recipients) && size(self.recipients) > 0)").message("at least one recipient is required in to, cc or bcc (or recipients)"))]
#[x_kube(validation = Rule::new("size(self.to) + size(self.cc) + size(self.bcc) <= 100").message("to, cc and bcc together may name at most 100 recipients (for more, use recipients: one email each)"))]
#[x_kube(validation = Rule::new("!has(self.recipients) || size(self.recipients) == 0 || size(self.to) + size(self.cc) + size(self.bcc) == 0").message("recipients sends one email to each: leave to, cc and bcc empty"))]
#[x_kube(validation = Rule::new("!has(self.recipients) || size(self.recipients) == 0 || !has(self.attachments) || size(self.attachments) == 0").message("attachments cannot be combined with recipients"))]
#[x_kube(validation = Rule::new("has(self.text) || has(self.html) || has(self.templateRef) || has(self.providerTemplate)").message("a body is required: set text, html or both, a templateRef or a providerTemplate"))]
#[x_kube(validation = Rule::new("(has(self.text) ? size(self.text) : 0) + (has(self.html) ? size(self.html) : 0) <= 1048576").message("text and html together may hold at most 1 MiB (1048576 characters): the message and its status must fit in one etcd object"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || (!has(self.text) && !has(self.html) && self.subject == '')").message("templateRef supplies the subject and body: leave subject, text and html unset"))]
#[x_kube(validation = Rule::new("!has(self.providerTemplate) || (!has(self.text) && !has(self.html) && !has(self.templateRef))").message("providerTemplate supplies the body: leave text, html and templateRef unset"))]
#[x_kube(validation = Rule::new("has(self.templateRef) || has(self.providerTemplate) || self.subject != ''").message("a subject is required (or a templateRef or providerTemplate)"))]
#[x_kube(validation = Rule::new("!has(self.data) || has(self.templateRef) || has(self.providerTemplate) || has(self.unsubscribe) || (has(self.recipients) && size(self.recipients) > 0)").message("data is only used with a templateRef, a providerTemplate, an unsubscribe URL or recipients (for the provider's unsubscribe URL)"))]
#[serde(rename_all = "camelCase")]
pub struct EmailMessageSpec {
    /// What sends this message: an EmailProvider in the same namespace
    /// (the default kind), a ClusterEmailProvider, or an EmailRoute in the
    /// same namespace (providers in order, with failover).
    pub provider_ref: ProviderRef,

    /// The sender, as `address` or `Display Name <address>`. Defaults to the
    /// provider's `defaultFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_mailbox")]
    pub from: Option<String>,

    /// Primary recipients, each `address` or `Display Name <address>`.
    #[serde(default)]
    #[schemars(schema_with = "schema::mailbox_list")]
    pub to: Vec<String>,

    /// Carbon-copy recipients, visible to every recipient.
    #[serde(default)]
    #[schemars(schema_with = "schema::mailbox_list")]
    pub cc: Vec<String>,

    /// Blind carbon-copy recipients: they receive the message but appear in
    /// no header.
    #[serde(default)]
    #[schemars(schema_with = "schema::mailbox_list")]
    pub bcc: Vec<String>,

    /// Where replies should go, if not to the sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::mailbox_list")]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s == r))").message("replyTo addresses must be unique"))]
    pub reply_to: Vec<String>,

    /// The subject line. It may not contain line breaks or other control
    /// characters. Leave it unset with a templateRef.
    #[serde(default)]
    #[schemars(length(max = 998), regex(pattern = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"))]
    pub subject: String,

    /// An EmailTemplate, in the same namespace, that supplies the subject and
    /// body, rendered with `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,

    /// A template stored at the email service, rendered there with `data`
    /// instead of a body: Mailtrap `template_uuid`, Postmark `TemplateAlias`
    /// (or `TemplateId` when the id is a number), SendGrid `template_id`,
    /// Mailgun `template`, Resend `template.id`. Not for SMTP providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_template: Option<ProviderTemplate>,

    /// The values the template (templateRef or providerTemplate) and the
    /// unsubscribe URL refer to, e.g. `{name: Alice, items: [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub data: Option<serde_json::Value>,

    /// The plain-text body. With `html` too, the message is sent as
    /// multipart/alternative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1048576))]
    pub text: Option<String>,

    /// The HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1048576))]
    pub html: Option<String>,

    /// Extra headers, name to value (for example `X-Campaign: spring`). Names
    /// are header tokens; values may not contain line breaks or other control
    /// characters. Refused: headers the message's own fields set (From, To,
    /// Cc, Bcc, Reply-To, Subject, Message-ID, Date, Sender), routing and
    /// receipt headers (Return-Path, Delivered-To, Envelope-To, X-Original-To,
    /// Apparently-To, Errors-To, Disposition-Notification-To,
    /// Return-Receipt-To, Resent-*), MIME headers (MIME-Version, Content-*),
    /// trace and authentication headers (Received, Received-SPF,
    /// DKIM-Signature, DomainKey-Signature, ARC-*, Authentication-Results)
    /// List-Unsubscribe and List-Unsubscribe-Post (set `unsubscribe`) and
    /// X-Mailroom-*.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50, "additionalProperties" = {"type": "string", "maxLength": 998}))]
    #[x_kube(validation = Rule::new("self.all(name, name.matches('^[!#-\\'*+.0-9A-Z^-z|~-]{1,76}$'))").message("header names must be 1-76 token characters (letters, digits, and !#$%&'*+.^_`|~-)"))]
    #[x_kube(validation = Rule::new(reserved_headers_rule()).message("headers may not set the message's own fields (From, Sender, To, Cc, Bcc, Reply-To, Subject, Message-ID, Date), routing or receipt headers (Return-Path, Delivered-To, Disposition-Notification-To, ...), MIME headers (MIME-Version, Content-*), Resent-*, trace or authentication headers (Received, DKIM-Signature, ARC-*, Authentication-Results), List-Unsubscribe* (set unsubscribe) or X-Mailroom-*"))]
    #[x_kube(validation = Rule::new("self.all(name, !self[name].contains('\\r') && !self[name].contains('\\n'))").message("header values may not contain CR or LF"))]
    #[x_kube(validation = Rule::new(format!("self.all(name, self[name].matches('{NO_CONTROLS}'))")).message("header values may not contain control characters"))]
    pub headers: BTreeMap<String, String>,

    /// What to do when the controller stops after claiming an attempt and
    /// before recording its result, so nobody knows whether the server took
    /// it. `AtLeastOnce` (default) sends again: a duplicate is possible in
    /// that window only. `AtMostOnce` ends in phase Unknown instead; annotate
    /// the message `mailroom.dev/retry=true` to send it again. Idempotent
    /// services (Resend) always send again: they drop the repeat themselves.
    #[serde(default)]
    pub delivery_policy: DeliveryPolicy,

    /// Overrides the provider's retry limits for this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::api::provider::RetryPolicy>,

    /// Send no earlier than this time (RFC 3339, e.g. `2026-12-01T09:00:00Z`),
    /// before 2100. Until then the message waits (reason Scheduled). Its
    /// retry deadline counts from this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self < timestamp('2100-01-01T00:00:00Z')").message("sendAt must be before 2100-01-01T00:00:00Z"))]
    pub send_at: Option<Time>,

    /// Delete the message this many seconds after it finished (Sent, Failed
    /// or Unknown), so workloads that create many do not fill etcd. Defaults
    /// to the provider's. Do not set it on messages a GitOps tool manages: it
    /// would create the message again, and a re-created object is a new
    /// message that is sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<u32>,

    /// What makes two messages one send. Unset, a message is the same send
    /// as an earlier one in this namespace with the same name and spec:
    /// created again (re-applied from Git, restored from a backup) it is not
    /// sent again but marked Sent, reason AlreadySent. Set, the key alone
    /// decides, whatever the name: one send per order number, say; a new key
    /// sends the same content again. Printable ASCII without spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[!-~]+$"))]
    pub idempotency_key: Option<String>,

    /// Do everything but send: the provider, template, attachments,
    /// suppression lists, quotas and the service's own limits are checked
    /// as for a real send, and what would be sent is written into
    /// `status.dryRun`; the phase becomes DryRun. Nothing is claimed,
    /// nothing reaches the server, the ledger records nothing: the same
    /// manifest with `dryRun` removed is a new message and sends. A
    /// `sendAt` in the future is noted, not waited for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// Send even to addresses on the provider's suppression list (they
    /// bounced for good or complained). For mail a recipient asked for and
    /// must get, such as a password reset; sending to such addresses
    /// repeatedly harms the sender's reputation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_suppression: bool,

    /// Tags for the service's reporting, each 1-64 letters, digits, `_` or
    /// `-`, no repeats: Mailtrap `category` (the first), Resend `tags`,
    /// Postmark `Tag` (the first), Mailgun `o:tag` (up to 3), SendGrid
    /// `categories`, and an `X-Tags` header over SMTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10),
        inner(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))
    )]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u == t))").message("tags must be unique"))]
    pub tags: Vec<String>,

    /// Key/value metadata that the service echoes in its delivery events:
    /// Mailtrap `custom_variables`, Resend `tags`, Postmark `Metadata`,
    /// Mailgun `v:` variables, SendGrid `custom_args`, and an
    /// `X-Mailroom-Metadata` header over SMTP. Keys are 1-64 letters, digits,
    /// `_` or `-`; values at most 256 characters without line breaks. Keys
    /// starting with `mailroom-` are mailroom's own: over the APIs it sends
    /// the message's namespace, name and UID beside these (see
    /// docs/architecture.md), which count toward Postmark's 10 fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20, "additionalProperties" = {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"}))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9_-]{1,64}$'))").message("metadata keys must be 1-64 letters, digits, _ or -"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('mailroom-'))").message("metadata keys starting with mailroom- are mailroom's own (they name the message in delivery events)"))]
    pub metadata: BTreeMap<String, String>,

    /// One-click unsubscribe for this message's emails (RFC 2369 and 8058
    /// headers). A bulk message without it takes the provider's
    /// `unsubscribe`; with neither, it is sent with a `Warning` condition
    /// (reason UnsubscribeMissing), since Gmail and Yahoo require it of bulk
    /// senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<super::deliverability::Unsubscribe>,

    /// The mailing list this message belongs to (a name of lower-case
    /// letters, digits and `-`). An address that unsubscribed from the list
    /// (an EmailSuppression with reason Unsubscribed for it, in this
    /// namespace) is skipped, even with `ignoreSuppression`. Unset: the list
    /// of the unsubscribe in effect (this message's, else, for a bulk
    /// message, the provider's), else none: a message with no list and no
    /// unsubscribe headers is transactional and reaches addresses that
    /// unsubscribed from lists. With a list, a single message takes the
    /// provider's `unsubscribe` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::list_name")]
    pub list: Option<String>,

    /// Open and click tracking for this message, over the provider's
    /// `tracking` setting by setting. Only Postmark, Mailgun and SendGrid
    /// take it per message; SMTP servers do not track, and Mailtrap and
    /// Resend set tracking per sending domain in their dashboards. Naming
    /// such a provider, the message is refused at apply by mailroom's
    /// admission policy (when the provider already exists), otherwise it
    /// fails with InvalidRequest naming this field before anything is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<super::deliverability::Tracking>,

    /// Sends one email to each entry instead of one email to `to`, `cc` and
    /// `bcc` (which stay empty): a bulk send. With a template (templateRef
    /// or providerTemplate), each is rendered with its own `data` laid over
    /// the message's. Sent through the service's batch endpoint where it
    /// has one, over pooled connections for SMTP; status.bulk counts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub recipients: Vec<Recipient>,

    /// Files sent with the message, read from Secret or ConfigMap keys in the
    /// message's namespace when it is sent. One with a `contentId` is inline:
    /// the html body shows it as `<img src="cid:ID">`. Their total size may
    /// not pass the provider's `maxAttachmentBytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.filename == a.filename))").message("attachment filenames must be unique"))]
    pub attachments: Vec<Attachment>,
}

/// One recipient of a bulk message, and the values for its email.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    /// The recipient, `address` or `Display Name <address>`.
    #[schemars(schema_with = "schema::mailbox")]
    pub to: String,
    /// Values for this recipient's email, laid over the message's `data`
    /// (top-level keys replace the message's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub data: Option<serde_json::Value>,
}

/// A file sent with a message: its name, its type, and where its bytes are.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("set exactly one of secretKeyRef or configMapKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The file name the recipient sees, e.g. `invoice.pdf`. No line breaks,
    /// quotes, slashes or backslashes.
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r#"^[^\x00-\x1f\x7f"/\\]+$"#)
    )]
    pub filename: String,

    /// The MIME type, e.g. `application/pdf`. Defaults to the type the file
    /// name's extension implies, else `application/octet-stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 127),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
    )]
    pub content_type: Option<String>,

    /// Makes the attachment inline, shown where the html body says
    /// `<img src="cid:ID">`. Letters, digits, `.`, `_`, `-` and one `@`.
    /// Mailgun names inline parts by file name, so there the file is sent
    /// under this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9._-]+(@[A-Za-z0-9._-]+)?$")
    )]
    pub content_id: Option<String>,

    /// A key of a Secret in the message's namespace holding the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<crate::api::provider::KeyRef>,

    /// A key of a ConfigMap in the message's namespace holding the file
    /// (`data` for text, `binaryData` for bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<crate::api::provider::KeyRef>,
}

/// What an interrupted attempt leads to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryPolicy {
    /// Send again: never lost, duplicated only if the controller dies between
    /// the server's acceptance and the status write.
    #[default]
    AtLeastOnce,
    /// Never send twice: an interrupted or ambiguous attempt ends Unknown.
    AtMostOnce,
}

/// The annotation a person sets to send an Unknown message again.
pub const RETRY_ANNOTATION: &str = "mailroom.dev/retry";

/// A reference to an EmailTemplate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TemplateRef {
    /// Name of the EmailTemplate in the message's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A template stored at the email service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTemplate {
    /// The service's id for the template: a UUID (Mailtrap), an alias or a
    /// numeric id (Postmark), `d-...` (SendGrid), a name (Mailgun), an id
    /// or alias (Resend).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^\s]+$"))]
    pub id: String,
    /// The template version to use (Mailgun `t:version`); the active one
    /// when unset. Other services always use their active version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\s]+$"))]
    pub version: Option<String>,
}

/// A reference to the provider that sends a message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderRef {
    /// `EmailProvider` (default), in the message's namespace,
    /// `ClusterEmailProvider`, cluster-wide, if it allows this namespace, or
    /// (on a message's providerRef only) `EmailRoute`, in the message's
    /// namespace.
    #[serde(default, skip_serializing_if = "ProviderKind::is_default")]
    pub kind: ProviderKind,
    /// Name of the provider.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What a dry run found: the email that would have gone out.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DryRunResult {
    /// The provider it would have gone through (`Kind/name`).
    pub provider: String,
    /// The sender.
    pub from: String,
    /// The subject (a bulk message's first recipient's).
    pub subject: String,
    /// The recipients it would have reached (at most 20; a bulk message's
    /// count is in `recipients`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// How many recipients it would have reached.
    pub recipients: u32,
    /// Recipients it would have skipped, and why (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// The email's size in bytes, as the service counts it (a bulk
    /// message's first email).
    pub size_bytes: u64,
    /// The headers it would carry beside the standard ones (at most 30).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The attachments, by file name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// What would have held it back at send time (a future `sendAt`, a
    /// quota, a reputation hold), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_wait: Option<String>,
}

/// Which kind of provider a message names.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// An EmailProvider in the message's namespace.
    #[default]
    EmailProvider,
    /// A cluster-scoped ClusterEmailProvider.
    ClusterEmailProvider,
    /// An EmailRoute in the message's namespace: an ordered list of
    /// providers (on a message only; see `kubectl explain emailroute`).
    EmailRoute,
}

impl ProviderRef {
    /// The kind's name, as a sentence names it (`EmailProvider`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ProviderKind::EmailProvider => "EmailProvider",
            ProviderKind::ClusterEmailProvider => "ClusterEmailProvider",
            ProviderKind::EmailRoute => "EmailRoute",
        }
    }
}

impl ProviderKind {
    /// Whether this is the default kind (left out when written).
    pub fn is_default(&self) -> bool {
        *self == ProviderKind::EmailProvider
    }
}

/// Where a message is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not sent yet: waiting for its provider, or for the next attempt.
    Pending,
    /// Claimed by the controller; an attempt is under way.
    Sending,
    /// The server accepted the message. It is never sent again.
    Sent,
    /// The message will not be sent: it was refused, or it is invalid.
    Failed,
    /// An attempt was interrupted or ended ambiguously under AtMostOnce: the
    /// server may or may not have it. Annotate `mailroom.dev/retry=true` to
    /// send again.
    Unknown,
    /// Sent, and the service reported it delivered to the recipient's
    /// server (or opened or clicked, which imply it).
    Delivered,
    /// Sent, but the service reported a hard bounce or dropped it: it will
    /// not reach the recipient. The `Delivered` condition says why.
    Bounced,
    /// Delivered, and the recipient marked it as spam.
    Complained,
    /// A dry run (`spec.dryRun`): checked as for a send, nothing sent;
    /// `status.dryRun` shows what would have been.
    DryRun,
}

impl Phase {
    /// Whether the message has reached an end state.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Sent
                | Phase::Failed
                | Phase::Unknown
                | Phase::Delivered
                | Phase::Bounced
                | Phase::Complained
                | Phase::DryRun
        )
    }

    /// Whether the server accepted the message (Sent, or a later delivery
    /// outcome).
    pub fn was_sent(self) -> bool {
        self.delivery_rank().is_some()
    }

    /// Orders the phases a sent message goes through by delivery events;
    /// a message only ever moves up. `None` for phases before or without a
    /// send.
    pub fn delivery_rank(self) -> Option<u8> {
        match self {
            Phase::Sent => Some(0),
            Phase::Delivered => Some(1),
            Phase::Bounced => Some(2),
            Phase::Complained => Some(3),
            Phase::Pending | Phase::Sending | Phase::Failed | Phase::Unknown | Phase::DryRun => {
                None
            }
        }
    }
}

/// The outcome of sending, as the controller observed it.
///
/// A message the controller has not yet seen reads `observedGeneration: 0`
/// (a schema default), so GitOps tools that compare it with the generation
/// (kstatus: Flux, kpt) wait for the send instead of calling a new message
/// current.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct EmailMessageStatus {
    /// Pending, Sending, Sent, Failed or Unknown; after Sent, the
    /// service's delivery events may move it on to Delivered, Bounced or
    /// Complained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Who the message goes to, for `kubectl get`: the first of to, cc and
    /// bcc, or the first of recipients for a bulk message (with how many
    /// more). Written with the controller's first status write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// How many send attempts have been started.
    #[serde(default)]
    pub attempts: u32,
    /// The Message-ID header of the email (SMTP), derived from the message's
    /// identity (namespace, name and spec, or spec.idempotencyKey), so every
    /// attempt, and the same message created again, carries the same one and
    /// receivers can drop duplicates. HTTP APIs set their own Message-ID; see
    /// providerMessageId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The id the server gave the accepted message: for SMTP, the queue id
    /// from its 250 reply where it gives one, else the Message-ID; for an
    /// HTTP API, the service's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// The server's last reply to the message (SMTP code and text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_reply: Option<ServerReply>,
    /// When the server accepted the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_time: Option<Time>,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt is due, while a retryable failure waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// Every id the service gave, where it gives one per recipient (Mailtrap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_message_ids: Vec<String>,
    /// The progress of a bulk message (one with `recipients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkStatus>,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// The provider of the latest attempt: the one that sent the message
    /// once it is Sent (for a message naming an EmailRoute, the route's
    /// provider it went out through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderRef>,
    /// Where the provider's recipient guard sent the email instead of its
    /// recipients (`spec.tenants[].recipients.redirectTo`, for staging
    /// namespaces): it reached this address alone, not the recipients in
    /// the spec (listed in its X-Original-To header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirected_to: Option<String>,
    /// For a dry run (`spec.dryRun`): what would have been sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunResult>,
    /// For a message naming an EmailRoute: each provider it was attempted
    /// through, in the order first tried, with how it went (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub provider_attempts: Vec<ProviderAttempt>,
    /// The latest delivery events the service reported through its
    /// webhook (at most 20, oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub delivery_events: Vec<DeliveryEvent>,
    /// `Sent` tells whether the message was accepted, and if not, why;
    /// `Delivered`, once the service reports it, whether it arrived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::whole_conditions")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// How far a bulk message has got.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BulkStatus {
    /// How many recipients the message has.
    pub total: u32,
    /// How many of them the server accepted.
    pub sent: u32,
    /// How many failed for good.
    pub failed: u32,
    /// How many have been handled, in order: the next batch starts here.
    pub next: u32,
    /// How many times in a row the current batch stopped on a failure of
    /// the server or network, or was cut off by a controller restart
    /// before its result was recorded; reset when one goes through.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// The first failures (at most 20): who, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RecipientFailure>,
    /// How many recipients the service's delivery events showed delivered
    /// (and not bounced or complained since).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delivered: u32,
    /// How many recipients bounced for good (or the service dropped).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bounced: u32,
    /// How many recipients marked the email as spam.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub complained: u32,
    /// What the delivery events said of each recipient, one character per
    /// entry of spec.recipients in order: `-` nothing yet, `D` delivered,
    /// `B` bounced, `C` complained. Each recipient moves forward only, so
    /// an event repeated changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10000))]
    pub outcomes: Option<String>,
    /// The first recipients that bounced or complained (at most 20): who,
    /// and what the service said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<RecipientFailure>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One delivery event a service reported about the message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryEvent {
    /// The service's id for the event (made from the record's fields for
    /// Postmark, which gives none); a repeat of an id changes nothing.
    #[schemars(length(max = 512))]
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub type_: DeliveryEventType,
    /// When it happened, as the service reports it.
    pub time: Time,
    /// The recipient it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Hard (permanent) or Soft (temporary), for bounces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceKind>,
    /// The service's explanation: the bounce or failure reason, the
    /// receiving server's reply, or the link clicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub detail: Option<String>,
}

/// The kinds of delivery events mailroom records.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryEventType {
    /// The recipient's server accepted it.
    Delivered,
    /// Delivery is delayed; the service keeps trying.
    Deferred,
    /// The recipient's server refused it (see `bounce`).
    Bounced,
    /// The recipient marked it as spam.
    Complained,
    /// The recipient opened it.
    Opened,
    /// The recipient clicked a link.
    Clicked,
    /// The recipient unsubscribed.
    Unsubscribed,
    /// The service dropped it after accepting it (suppressed address,
    /// quota, policy): it was never delivered.
    Failed,
}

/// Whether a bounce is permanent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceKind {
    /// Permanent: the address does not take mail.
    Hard,
    /// Temporary: a full mailbox, a block, a delay.
    Soft,
}

/// Why one recipient of a bulk message was not sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecipientFailure {
    /// The recipient.
    pub to: String,
    /// A machine-readable reason, e.g. Rejected or InvalidRequest.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// A server's reply.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerReply {
    /// The reply code (SMTP) or HTTP status.
    pub code: u16,
    /// The reply text.
    pub message: String,
}

/// Why an attempt failed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// A machine-readable reason, e.g. Rejected, InvalidRequest, TransientFailure.
    pub reason: String,
    /// What happened, in words, naming the field or the server's reply.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The SMTP reply code or HTTP status, where the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The service's own error code or name (e.g. Postmark `406`, Resend
    /// `validation_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// Whether the server may have the message despite the failure (a
    /// timeout or a connection lost after it was handed over). Such a
    /// message is never moved to another provider of its route.
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_have_been_delivered: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What one provider of a message's route did with it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderAttempt {
    /// The provider.
    pub provider: ProviderRef,
    /// How many attempts went through it.
    pub attempts: u32,
    /// Why its last attempt failed, if it did (a condition reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub last_reason: Option<String>,
    /// True when its last attempt certainly did not deliver and the message
    /// moved on to the next provider of the route; cleared when every
    /// provider has been tried and a new round starts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passed_over: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> EmailMessageSpec {
        let mut base =
            serde_json::json!({"providerRef": {"name": "p"}, "subject": "s", "text": "t"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), value.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("a spec")
    }

    #[test]
    fn the_recipient_summary_names_the_first_and_counts_the_rest() {
        let one = spec(serde_json::json!({"to": ["Alice <a@example.org>"]}));
        assert_eq!(
            one.recipient_summary().as_deref(),
            Some("Alice <a@example.org>")
        );
        let three = spec(
            serde_json::json!({"to": ["a@example.org"], "cc": ["c@example.org"], "bcc": ["b@example.org"]}),
        );
        assert_eq!(
            three.recipient_summary().as_deref(),
            Some("a@example.org (+2)")
        );
        let hidden = spec(serde_json::json!({"bcc": ["b@example.org"]}));
        assert_eq!(
            hidden.recipient_summary().as_deref(),
            Some("bcc b@example.org")
        );
        let bulk = spec(
            serde_json::json!({"recipients": [{"to": "first@example.org"}, {"to": "second@example.org"}]}),
        );
        assert_eq!(
            bulk.recipient_summary().as_deref(),
            Some("first@example.org (+1)")
        );
    }
}
