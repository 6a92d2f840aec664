//! Resend: `POST /emails`, JSON, `Authorization: Bearer`, and an
//! `Idempotency-Key` derived from the message's identity, so neither a retry
//! after a crash nor the same message created again can send twice (within
//! Resend's key window). Success: `{"id": "<uuid>"}`.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Target;
use super::wire::{self, Body, ErrorDetail, Request};
use crate::compose::Email;
use crate::transport::{Accepted, FailureKind, SendError};

/// Resend template variables are strings or numbers.
fn check_variables(data: &Value) -> Result<(), SendError> {
    let Some(object) = data.as_object() else {
        let text = "spec.data: Resend template variables must be an object";
        return Err(SendError::new(FailureKind::InvalidRequest, text));
    };
    for (key, value) in object {
        if !(value.is_string() || value.is_number()) {
            let text = format!("spec.data.{key}: Resend template variables are strings or numbers");
            return Err(SendError::new(FailureKind::InvalidRequest, text));
        }
    }
    Ok(())
}

/// The Idempotency-Key of a message: the same for every attempt.
pub fn idempotency_key(email: &Email) -> String {
    format!("mailroom/{}", email.key)
}

pub fn request(target: &Target, email: &Email) -> Result<Request, SendError> {
    let list = |l: &[lettre::message::Mailbox]| {
        Value::from(l.iter().map(wire::mailbox_text).collect::<Vec<_>>())
    };
    let mut body = Map::new();
    body.insert("from".into(), json!(wire::mailbox_text(&email.from)));
    body.insert("to".into(), list(&email.to));
    if !email.cc.is_empty() {
        body.insert("cc".into(), list(&email.cc));
    }
    if !email.bcc.is_empty() {
        body.insert("bcc".into(), list(&email.bcc));
    }
    if !email.reply_to.is_empty() {
        body.insert("reply_to".into(), list(&email.reply_to));
    }
    match &email.stored_template {
        Some(template) => {
            if email.subject.is_empty() {
                let text = "spec.subject: Resend requires a subject, also with a template";
                return Err(SendError::new(FailureKind::InvalidRequest, text));
            }
            check_variables(&template.data)?;
            body.insert(
                "template".into(),
                json!({"id": template.id, "variables": template.data}),
            );
            wire::insert_common(&mut body, email, false);
        }
        None => wire::insert_common(&mut body, email, true),
    }
    let tags = tags(email)?;
    if !tags.is_empty() {
        body.insert("tags".into(), Value::from(tags));
    }
    if !email.attachments.is_empty() {
        let keys = wire::AttachmentKeys {
            content: "content",
            filename: "filename",
            content_type: "content_type",
            disposition: None,
            content_id: "content_id",
            cid_prefix: "",
        };
        body.insert("attachments".into(), wire::attachments_json(email, &keys));
    }
    if email.to.is_empty() {
        return Err(SendError::new(
            FailureKind::InvalidRequest,
            "spec.to: Resend requires at least one 'to' recipient",
        ));
    }
    if target.spec.test_mode {
        to_test_address(&mut body, email);
    }
    Ok(
        Request::new(Method::POST, format!("{}/emails", target.base))
            .header("Authorization", format!("Bearer {}", target.key))
            .header("Idempotency-Key", idempotency_key(email))
            .with_body(Body::Json(Value::Object(body))),
    )
}

/// Resend's test mode: every recipient becomes its test address
/// `delivered@resend.dev` (accepted, reported delivered, never sent on),
/// the original ones named in `X-Original-To`.
pub const TEST_ADDRESS: &str = "delivered@resend.dev";

fn to_test_address(body: &mut Map<String, Value>, email: &Email) {
    let originals = email.recipient_addresses();
    body.insert("to".into(), json!([TEST_ADDRESS]));
    body.remove("cc");
    body.remove("bcc");
    let headers = body
        .entry("headers")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(headers) = headers.as_object_mut() {
        headers.insert("X-Original-To".into(), json!(originals.join(", ")));
    }
}

/// Resend's `tags`: each tag as `{name: tag, value: "true"}` and each
/// metadata entry as `{name, value}`. Resend allows only ASCII letters,
/// digits, `_` and `-` in both.
fn tags(email: &Email) -> Result<Vec<Value>, SendError> {
    let allowed = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut out: Vec<Value> = email
        .tags
        .iter()
        .map(|t| json!({"name": t, "value": "true"}))
        .collect();
    for (key, value) in email.echoed() {
        if !allowed(&value) {
            return Err(SendError::new(
                FailureKind::InvalidRequest,
                format!(
                    "spec.metadata[{key}]: Resend allows only letters, digits, _ and - in tag values"
                ),
            ));
        }
        out.push(json!({"name": key, "value": value}));
    }
    Ok(out)
}

pub fn accepted(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    Ok(Accepted::new(
        wire::json_str(&value, "id"),
        status,
        "accepted",
    ))
}

pub fn error(body: &[u8]) -> ErrorDetail {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| wire::undocumented(body));
    ErrorDetail {
        transient: name.as_deref() == Some("concurrent_idempotent_requests"),
        not_auth: name.as_deref() == Some("validation_error"),
        code: name,
        message,
        retry_after: None,
    }
}
