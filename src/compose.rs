//! Turns an EmailMessage spec into a validated [`Email`]: parsed mailboxes, a
//! sender (the message's or the provider's default), safe extra headers and a
//! Message-ID derived from the message's identity (see `ledger::identity`).
//! Every error names the field.

use lettre::message::Mailbox;

use crate::api::message::{EmailMessageSpec, is_reserved_header};

/// An email ready for any transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    /// The sender.
    pub from: Mailbox,
    /// Primary recipients.
    pub to: Vec<Mailbox>,
    /// Carbon-copy recipients.
    pub cc: Vec<Mailbox>,
    /// Blind recipients: envelope only, never in a header.
    pub bcc: Vec<Mailbox>,
    /// Reply-To mailboxes.
    pub reply_to: Vec<Mailbox>,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body.
    pub html: Option<String>,
    /// Extra headers, in name order.
    pub headers: Vec<(String, String)>,
    /// The Message-ID header value, with angle brackets.
    pub message_id: String,
    /// The key derived from the message's identity: the same for every
    /// attempt and for the same message created again; the Message-ID's
    /// local part and the idempotency key.
    pub key: String,
    /// Tags for the service's reporting.
    pub tags: Vec<String>,
    /// Metadata the service echoes in its events, in key order.
    pub metadata: Vec<(String, String)>,
    /// The message (and bulk recipient) this email is, echoed back by the
    /// services' webhooks; set for sends, `None` in previews.
    pub origin: Option<crate::api::origin::Origin>,
    /// Files sent with the email, read when it is sent.
    pub attachments: Vec<Attachment>,
    /// A template stored at the service that supplies the body instead.
    pub stored_template: Option<StoredTemplate>,
    /// Open and click tracking asked of the service (empty: its default).
    pub tracking: crate::api::deliverability::Tracking,
    /// Where the provider's recipient guard sent the email instead of its
    /// recipients (kept in `X-Original-To`), if it did.
    pub redirected_to: Option<String>,
}

/// A template stored at the email service, and the values it is rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    /// The service's template id.
    pub id: String,
    /// The version, where the service picks one (Mailgun).
    pub version: Option<String>,
    /// The values, a JSON object.
    pub data: serde_json::Value,
}

/// A file sent with an email, its bytes already read.
#[derive(Clone, PartialEq)]
pub struct Attachment {
    /// The file name the recipient sees.
    pub filename: String,
    /// The MIME type, e.g. `image/png`.
    pub content_type: String,
    /// The file itself.
    pub content: Vec<u8>,
    /// Set for an inline attachment: the id the html refers to as `cid:ID`.
    pub content_id: Option<String>,
}

impl Attachment {
    /// Whether the html shows it (it has a content id) rather than it being
    /// a file to download.
    pub fn is_inline(&self) -> bool {
        self.content_id.is_some()
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("bytes", &self.content.len())
            .field("content_id", &self.content_id)
            .finish()
    }
}

/// Why a spec cannot be sent; it names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidMessage {
    /// The field path, e.g. `spec.to[1]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidMessage {
    InvalidMessage {
        field: field.into(),
        problem: problem.into(),
    }
}

fn mailbox(field: String, value: &str) -> Result<Mailbox, InvalidMessage> {
    if value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "control characters (line breaks among them) are not allowed in an address",
        ));
    }
    value
        .parse::<Mailbox>()
        .or_else(|e| quoted_name(value).ok_or(e))
        .map_err(|e| invalid(field, format!("{value:?} is not a valid address: {e}")))
}

/// `Name <address>` whose unquoted name holds specials (`:` `()` `[]` `.`)
/// that RFC 5322 allows only quoted: the name as given, written quoted.
fn quoted_name(value: &str) -> Option<Mailbox> {
    let (name, rest) = value.rsplit_once('<')?;
    let address = rest.strip_suffix('>')?.parse().ok()?;
    let name = name.trim();
    if name.starts_with('"') || name.contains(['"', '\\']) {
        return None;
    }
    Some(Mailbox::new(
        (!name.is_empty()).then(|| name.to_string()),
        address,
    ))
}

fn mailboxes(field: &str, values: &[String]) -> Result<Vec<Mailbox>, InvalidMessage> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| mailbox(format!("{field}[{i}]"), v))
        .collect()
}

/// The Message-ID for a message: stable across attempts and re-creations,
/// unique per identity, in the sender's domain.
pub fn message_id(key: &str, from: &Mailbox) -> String {
    format!("<{key}@{}>", from.email.domain())
}

/// Builds the email for `spec`. `default_from` is the provider's, used when
/// the spec has none; `key` is derived from the message's identity.
pub fn compose(
    spec: &EmailMessageSpec,
    default_from: Option<&str>,
    key: &str,
) -> Result<Email, InvalidMessage> {
    let from = match (&spec.from, default_from) {
        (Some(from), _) => mailbox("spec.from".into(), from)?,
        (None, Some(default)) => mailbox("spec.from (the provider's defaultFrom)".into(), default)?,
        (None, None) => {
            return Err(invalid(
                "spec.from",
                "not set, and the provider has no defaultFrom",
            ));
        }
    };
    let to = mailboxes("spec.to", &spec.to)?;
    let cc = mailboxes("spec.cc", &spec.cc)?;
    let bcc = mailboxes("spec.bcc", &spec.bcc)?;
    let reply_to = mailboxes("spec.replyTo", &spec.reply_to)?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(invalid(
            "spec.to",
            "at least one recipient is required in to, cc or bcc",
        ));
    }
    if spec.subject.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(
            "spec.subject",
            "control characters (line breaks among them) are not allowed",
        ));
    }
    let stored_template = spec.provider_template.as_ref().map(|t| StoredTemplate {
        id: t.id.clone(),
        version: t.version.clone(),
        data: spec
            .data
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
    });
    if spec.text.is_none() && spec.html.is_none() && stored_template.is_none() {
        return Err(invalid(
            "spec.text",
            "a body is required: set text, html or both",
        ));
    }
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (name, value) in &spec.headers {
        let field = format!("spec.headers[{name}]");
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || name.len() > 76 || !name.chars().all(token) {
            return Err(invalid(field, "not a valid header name"));
        }
        if is_reserved_header(name) {
            return Err(invalid(
                field,
                "this header may not be set: it is the message's own, or changes routing, MIME structure or authentication",
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(invalid(
                field,
                "control characters (line breaks among them) are not allowed in header values",
            ));
        }
        headers.push((name.clone(), value.clone()));
    }
    let message_id = message_id(key, &from);
    Ok(Email {
        from,
        to,
        cc,
        bcc,
        reply_to,
        subject: spec.subject.clone(),
        text: spec.text.clone(),
        html: spec.html.clone(),
        headers,
        message_id,
        key: key.to_string(),
        tags: spec.tags.clone(),
        metadata: spec
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        origin: None,
        attachments: Vec::new(),
        stored_template,
        tracking: Default::default(),
        redirected_to: None,
    })
}

impl Email {
    /// Every recipient's address: to, cc and bcc, in that order.
    pub fn recipient_addresses(&self) -> Vec<String> {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|m| m.email.to_string())
            .collect()
    }

    /// The metadata a service echoes in its webhooks: the message's own,
    /// then the origin mailroom routes events by.
    pub fn echoed(&self) -> Vec<(String, String)> {
        let mut entries = self.metadata.clone();
        if let Some(origin) = &self.origin {
            entries.extend(origin.entries());
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::message::ProviderRef;

    fn spec() -> EmailMessageSpec {
        EmailMessageSpec {
            provider_ref: ProviderRef {
                kind: Default::default(),
                name: "p".into(),
            },
            from: Some("Sender <sender@example.com>".into()),
            to: vec!["a@example.org".into()],
            cc: vec![],
            bcc: vec!["hidden@example.org".into()],
            reply_to: vec![],
            subject: "Hi".into(),
            text: Some("hello".into()),
            html: None,
            headers: Default::default(),
            delivery_policy: Default::default(),
            retry: None,
            send_at: None,
            template_ref: None,
            data: None,
            ttl_seconds_after_finished: None,
            idempotency_key: None,
            ignore_suppression: false,
            tags: vec![],
            metadata: Default::default(),
            attachments: vec![],
            provider_template: None,
            recipients: vec![],
            unsubscribe: None,
            list: None,
            dry_run: false,
            tracking: None,
        }
    }

    #[test]
    fn composes_with_a_stable_message_id_in_the_sender_domain() {
        let email = compose(&spec(), None, "1234-abcd").expect("valid");
        assert_eq!(email.message_id, "<1234-abcd@example.com>");
        assert_eq!(email.bcc[0].email.to_string(), "hidden@example.org");
    }

    #[test]
    fn falls_back_to_the_provider_default_sender() {
        let mut s = spec();
        s.from = None;
        let email = compose(&s, Some("Ops <ops@corp.example>"), "u").expect("valid");
        assert_eq!(email.from.email.to_string(), "ops@corp.example");
        let err = compose(&s, None, "u").expect_err("no sender");
        assert_eq!(err.field, "spec.from");
    }

    #[test]
    fn names_the_field_of_a_bad_address() {
        let mut s = spec();
        s.to = vec!["ok@example.org".into(), "a..b@example.org".into()];
        let err = compose(&s, None, "u").expect_err("bad address");
        assert_eq!(err.field, "spec.to[1]");
    }

    #[test]
    fn refuses_header_injection_and_reserved_headers() {
        let mut s = spec();
        s.headers
            .insert("X-Ok".into(), "fine\r\nBcc: evil@example.com".into());
        assert_eq!(
            compose(&s, None, "u").expect_err("CRLF").field,
            "spec.headers[X-Ok]"
        );
        let mut s = spec();
        s.headers.insert("BCC".into(), "evil@example.com".into());
        assert_eq!(
            compose(&s, None, "u").expect_err("reserved").field,
            "spec.headers[BCC]"
        );
        let mut s = spec();
        s.subject = "Hi\nBcc: evil@example.com".into();
        assert_eq!(
            compose(&s, None, "u").expect_err("subject").field,
            "spec.subject"
        );
        for header in [
            "Resent-Bcc",
            "received",
            "Content-Disposition",
            "X-Mailroom-Metadata",
        ] {
            let mut s = spec();
            s.headers.insert(header.into(), "x".into());
            assert!(compose(&s, None, "u").is_err(), "{header} is refused");
        }
        let mut s = spec();
        s.subject = "a\u{0b}b".into();
        assert!(compose(&s, None, "u").is_err(), "VT in the subject");
        let mut s = spec();
        s.headers.insert("X-A".into(), "a\u{0}b".into());
        assert!(compose(&s, None, "u").is_err(), "NUL in a header");
    }

    #[test]
    fn a_display_name_with_specials_is_quoted() {
        let mut s = spec();
        s.to = vec!["Support: Team (EU) [ops] <help@example.org>".into()];
        let email = compose(&s, None, "u").expect("quoted, not refused");
        assert_eq!(
            email.to[0].name.as_deref(),
            Some("Support: Team (EU) [ops]")
        );
        assert_eq!(
            email.to[0].to_string(),
            "\"Support: Team (EU) [ops]\" <help@example.org>"
        );
    }
}
