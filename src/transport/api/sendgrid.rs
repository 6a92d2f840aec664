//! SendGrid v3: `POST /v3/mail/send`, JSON with one personalization, `content`
//! with text/plain first, `Authorization: Bearer`. Success is `202` with an
//! empty body and the id in the `X-Message-Id` header. Verification:
//! `GET /v3/scopes`, which must include `mail.send`.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::Target;
use super::wire::{self, Body, ErrorDetail, Request};
use crate::compose::Email;
use crate::transport::{Accepted, FailureKind, SendError};

fn authenticated(request: Request, target: &Target) -> Request {
    request.header("Authorization", format!("Bearer {}", target.key))
}

pub fn verify(target: &Target) -> Request {
    authenticated(
        Request::new(Method::GET, format!("{}/v3/scopes", target.base)),
        target,
    )
}

/// Fails verification when the key cannot send mail.
pub fn check_scopes(body: &[u8]) -> Result<(), SendError> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let scopes = value
        .get("scopes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if scopes.iter().any(|s| s.as_str() == Some("mail.send")) {
        Ok(())
    } else {
        Err(SendError::new(
            FailureKind::Auth,
            "SendGrid: the API key lacks the mail.send scope",
        ))
    }
}

/// `tracking_settings` for what the email asks: `open_tracking.enable`,
/// and `click_tracking.enable` with `enable_text` (links in both bodies).
fn tracking_settings(email: &Email) -> Map<String, Value> {
    let mut settings = Map::new();
    if let Some(opens) = email.tracking.opens {
        settings.insert("open_tracking".into(), json!({"enable": opens}));
    }
    if let Some(clicks) = email.tracking.clicks {
        settings.insert(
            "click_tracking".into(),
            json!({"enable": clicks, "enable_text": clicks}),
        );
    }
    settings
}

pub fn request(target: &Target, email: &Email) -> Result<Request, SendError> {
    let list = |l: &[lettre::message::Mailbox]| {
        Value::from(l.iter().map(wire::mailbox_object).collect::<Vec<_>>())
    };
    if email.to.is_empty() {
        return Err(SendError::new(
            FailureKind::InvalidRequest,
            "spec.to: SendGrid requires at least one 'to' recipient",
        ));
    }
    let mut personalization = Map::new();
    personalization.insert("to".into(), list(&email.to));
    if !email.cc.is_empty() {
        personalization.insert("cc".into(), list(&email.cc));
    }
    if !email.bcc.is_empty() {
        personalization.insert("bcc".into(), list(&email.bcc));
    }
    let mut body = Map::new();
    if let Some(template) = &email.stored_template {
        if !template.id.starts_with("d-") {
            let text = "spec.providerTemplate.id: mailroom sends SendGrid dynamic templates, whose ids start with d-";
            return Err(SendError::new(FailureKind::InvalidRequest, text));
        }
        personalization.insert("dynamic_template_data".into(), template.data.clone());
        body.insert("template_id".into(), json!(template.id));
    }
    body.insert(
        "personalizations".into(),
        json!([Value::Object(personalization)]),
    );
    body.insert("from".into(), wire::mailbox_object(&email.from));
    match email.reply_to.as_slice() {
        [] => {}
        [one] => {
            body.insert("reply_to".into(), wire::mailbox_object(one));
        }
        many => {
            body.insert("reply_to_list".into(), list(many));
        }
    }
    wire::insert_common(&mut body, email, false);
    if !email.tags.is_empty() {
        body.insert("categories".into(), json!(email.tags));
    }
    if !email.echoed().is_empty() {
        body.insert("custom_args".into(), wire::metadata_object(email));
    }
    let tracking = tracking_settings(email);
    if !tracking.is_empty() {
        body.insert("tracking_settings".into(), Value::Object(tracking));
    }
    // Test mode: SendGrid's sandbox checks the request, delivers nothing
    // and answers 200 (not 202) without an X-Message-Id.
    if target.spec.test_mode {
        body.insert(
            "mail_settings".into(),
            json!({"sandbox_mode": {"enable": true}}),
        );
    }
    if !email.attachments.is_empty() {
        let keys = &wire::DISPOSITION_ATTACHMENT_KEYS;
        body.insert("attachments".into(), wire::attachments_json(email, keys));
    }
    let mut content = Vec::new();
    if let Some(text) = &email.text {
        content.push(json!({"type": "text/plain", "value": text}));
    }
    if let Some(html) = &email.html {
        content.push(json!({"type": "text/html", "value": html}));
    }
    if !content.is_empty() {
        body.insert("content".into(), Value::from(content));
    }
    Ok(authenticated(
        Request::new(Method::POST, format!("{}/v3/mail/send", target.base)),
        target,
    )
    .with_body(Body::Json(Value::Object(body))))
}

pub fn accepted(status: u16, headers: &HeaderMap) -> Result<Accepted, SendError> {
    let id = headers
        .get("x-message-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Accepted::new(id, status, "Accepted"))
}

pub fn error(body: &[u8]) -> ErrorDetail {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let errors = value
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let message = if errors.is_empty() {
        wire::undocumented(body)
    } else {
        errors
            .iter()
            .map(|e| {
                let text = e.get("message").and_then(Value::as_str).unwrap_or_default();
                match e.get("field").and_then(Value::as_str) {
                    Some(field) => format!("{field}: {text}"),
                    None => text.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    ErrorDetail {
        message,
        ..ErrorDetail::default()
    }
}
