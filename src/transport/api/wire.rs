//! Shared pieces of the HTTP APIs: the request shape the service modules
//! build, mailbox encodings, Retry-After, and the one table that turns an
//! HTTP answer into a [`SendError`].

use std::time::{Duration, SystemTime};

use lettre::message::Mailbox;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use crate::api::provider::ApiProvider;
use crate::compose::Email;
use crate::transport::{SendError, classify};

/// A request to a service, built by its module.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or POST.
    pub method: Method,
    /// The full URL.
    pub url: String,
    /// Headers besides the body's Content-Type.
    pub headers: Vec<(String, String)>,
    /// HTTP basic credentials (Mailgun).
    pub basic_auth: Option<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Request {
    /// A request with no body and no headers yet.
    pub fn new(method: Method, url: String) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            basic_auth: None,
            body: Body::None,
        }
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    None,
    /// `application/json`.
    Json(Value),
    /// `multipart/form-data`: text fields in order (a name may repeat), then
    /// file parts.
    Form(Vec<(String, String)>, Vec<FilePart>),
}

/// A file part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePart {
    /// The form field name, e.g. `attachment`.
    pub field: String,
    /// The part's file name.
    pub filename: String,
    /// The part's Content-Type.
    pub content_type: String,
    /// The file.
    pub content: Vec<u8>,
}

/// A service's own description of an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorDetail {
    /// Its error code or name.
    pub code: Option<String>,
    /// Its message.
    pub message: String,
    /// Whether the service says this is worth retrying (e.g. Postmark
    /// ErrorCode 100, maintenance) regardless of the HTTP status.
    pub transient: bool,
    /// Whether the service says this is not about credentials even though
    /// the status is 401/403 (e.g. Resend's 403 for an unverified domain).
    pub not_auth: bool,
    /// A retry delay the service put in the body (Mailgun's text).
    pub retry_after: Option<Duration>,
}

/// `{"email": ..., "name": ...}` (name only when set).
pub fn mailbox_object(m: &Mailbox) -> Value {
    match &m.name {
        Some(name) => json!({"email": m.email.to_string(), "name": name}),
        None => json!({"email": m.email.to_string()}),
    }
}

/// `Name <address>` or the bare address, as header-style text.
pub fn mailbox_text(m: &Mailbox) -> String {
    m.to_string()
}

/// Header-style mailboxes joined with `, `.
pub fn mailbox_list_text(list: &[Mailbox]) -> String {
    list.iter().map(mailbox_text).collect::<Vec<_>>().join(", ")
}

/// The string at `key` of a JSON body, if there is one.
pub fn json_str(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Inserts `subject` (when set), `text`, `html` and `headers` (as a
/// name→value object) under those names: the common shape of Mailtrap,
/// Resend and SendGrid.
pub fn insert_common(body: &mut Map<String, Value>, email: &Email, with_bodies: bool) {
    if !email.subject.is_empty() {
        body.insert("subject".into(), json!(email.subject));
    }
    if with_bodies {
        if let Some(text) = &email.text {
            body.insert("text".into(), json!(text));
        }
        if let Some(html) = &email.html {
            body.insert("html".into(), json!(html));
        }
    }
    if !email.headers.is_empty() {
        let headers = email
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        body.insert("headers".into(), Value::Object(headers));
    }
}

/// The attachments as JSON objects, with the service's own key names for the
/// base64 content, file name, type, disposition and content id (`None` where
/// the service has no such key). An inline attachment's id is written as
/// `cid_prefix` + id.
pub struct AttachmentKeys {
    /// The base64 content.
    pub content: &'static str,
    /// The file name.
    pub filename: &'static str,
    /// The MIME type.
    pub content_type: &'static str,
    /// `attachment` or `inline`, where the service has such a key.
    pub disposition: Option<&'static str>,
    /// The inline content id.
    pub content_id: &'static str,
    /// What the service wants before the id (Postmark: `cid:`).
    pub cid_prefix: &'static str,
}

/// The attachment object Mailtrap and SendGrid share: `content`, `filename`,
/// `type`, `disposition` (`attachment` | `inline`) and `content_id`.
pub const DISPOSITION_ATTACHMENT_KEYS: AttachmentKeys = AttachmentKeys {
    content: "content",
    filename: "filename",
    content_type: "type",
    disposition: Some("disposition"),
    content_id: "content_id",
    cid_prefix: "",
};

/// `email`'s attachments in the JSON shape `keys` names.
pub fn attachments_json(email: &Email, keys: &AttachmentKeys) -> Value {
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    Value::from(
        email
            .attachments
            .iter()
            .map(|a| {
                let mut object = Map::new();
                object.insert(keys.content.into(), json!(encode(&a.content)));
                object.insert(keys.filename.into(), json!(a.filename));
                object.insert(keys.content_type.into(), json!(a.content_type));
                if let Some(key) = keys.disposition {
                    let disposition = if a.is_inline() {
                        "inline"
                    } else {
                        "attachment"
                    };
                    object.insert(key.into(), json!(disposition));
                }
                if let Some(id) = &a.content_id {
                    object.insert(
                        keys.content_id.into(),
                        json!(format!("{}{id}", keys.cid_prefix)),
                    );
                }
                Value::Object(object)
            })
            .collect::<Vec<_>>(),
    )
}

/// Refuses a subject next to a stored template of a service whose template
/// supplies it (Mailtrap, Postmark): the message would say one thing and send
/// another.
pub fn no_subject_with_template(email: &Email, service: &str) -> Result<(), SendError> {
    if email.stored_template.is_some() && !email.subject.is_empty() {
        let text =
            format!("spec.subject: a {service} template supplies the subject; leave it unset");
        return Err(SendError::new(
            crate::transport::FailureKind::InvalidRequest,
            text,
        ));
    }
    Ok(())
}

/// The metadata the service echoes (the message's own and its origin) as
/// a JSON object of strings.
pub fn metadata_object(email: &Email) -> Value {
    Value::Object(
        email
            .echoed()
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
    )
}

/// What is said of an answer that is not in the service's documented error
/// form: its size only, never its text. An endpoint may answer anything,
/// including what must not reach a status a tenant can read.
pub fn undocumented(body: &[u8]) -> String {
    format!(
        "an answer not in the service's documented error form ({} bytes)",
        body.len()
    )
}

/// A service's documented error text, cut to a length fit for status, with
/// control characters replaced.
pub fn bounded(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}...", &clean[..cut]),
        None => clean,
    }
}

/// The most characters of a service's error text kept in status.
pub const MAX_ERROR_CHARS: usize = 300;

/// `Retry-After` as seconds or an HTTP date, or SendGrid's
/// `X-RateLimit-Reset` (epoch seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(value) = headers.get("retry-after").and_then(|v| v.to_str().ok()) {
        if let Ok(seconds) = value.trim().parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let Ok(when) = httpdate::parse_http_date(value) {
            return Some(when.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    let reset = headers
        .get("x-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    // Checked: the number is the server's, and may be anything.
    let reset = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(reset))?;
    Some(reset.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Classifies an HTTP answer through the shared table
/// ([`crate::transport::classify`]).
pub fn classify(
    provider: ApiProvider,
    status: u16,
    headers: &HeaderMap,
    detail: ErrorDetail,
) -> SendError {
    let rule = classify::http(status, detail.transient, detail.not_auth);
    let code = detail
        .code
        .as_deref()
        .map(|c| bounded(&c.chars().take(64).collect::<String>()));
    let shown = code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
    let text = format!(
        "{} answered {status}{shown}: {}",
        provider.name(),
        bounded(&detail.message)
    );
    let mut error = SendError::new(rule.kind, text).with_code(status);
    error.provider_code = code;
    error.retry_after = retry_after(headers).or(detail.retry_after);
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after_seconds_and_rate_limit_reset() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let mut headers = HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("now")
            .as_secs()
            + 30;
        headers.insert(
            "x-ratelimit-reset",
            reset.to_string().parse().expect("value"),
        );
        let wait = retry_after(&headers).expect("reset");
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn a_rate_limit_reset_past_the_end_of_time_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-reset",
            u64::MAX.to_string().parse().expect("value"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn classifies_statuses() {
        use crate::transport::FailureKind;
        let h = HeaderMap::new();
        let d = ErrorDetail::default;
        assert_eq!(
            classify(ApiProvider::Resend, 401, &h, d()).kind,
            FailureKind::Auth
        );
        assert_eq!(
            classify(ApiProvider::Resend, 429, &h, d()).kind,
            FailureKind::Transient
        );
        assert_eq!(
            classify(ApiProvider::Resend, 503, &h, d()).kind,
            FailureKind::Transient
        );
        assert_eq!(
            classify(ApiProvider::Resend, 422, &h, d()).kind,
            FailureKind::Rejected
        );
        let not_auth = ErrorDetail {
            not_auth: true,
            ..d()
        };
        assert_eq!(
            classify(ApiProvider::Resend, 403, &h, not_auth).kind,
            FailureKind::Rejected
        );
        let maintenance = ErrorDetail {
            transient: true,
            ..d()
        };
        assert_eq!(
            classify(ApiProvider::Postmark, 422, &h, maintenance).kind,
            FailureKind::Transient
        );
    }
}
