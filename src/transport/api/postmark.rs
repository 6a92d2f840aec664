//! Postmark: `POST /email`, PascalCase JSON with comma-separated recipient
//! strings, `X-Postmark-Server-Token`, and `Accept: application/json`.
//! Success: `{"MessageID": "<uuid>", "ErrorCode": 0, ...}`. Verification:
//! `GET /server` (authenticated, sends nothing).

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::Target;
use super::wire::{self, Body, ErrorDetail, Request};
use crate::compose::Email;
use crate::transport::{Accepted, SendError};

fn authenticated(request: Request, target: &Target) -> Request {
    request
        .header("X-Postmark-Server-Token", target.key.clone())
        .header("Accept", "application/json")
}

pub fn verify(target: &Target) -> Request {
    authenticated(
        Request::new(Method::GET, format!("{}/server", target.base)),
        target,
    )
}

pub fn request(target: &Target, email: &Email) -> Result<Request, SendError> {
    let mut body = Map::new();
    body.insert("From".into(), json!(wire::mailbox_text(&email.from)));
    for (field, list) in [
        ("To", &email.to),
        ("Cc", &email.cc),
        ("Bcc", &email.bcc),
        ("ReplyTo", &email.reply_to),
    ] {
        if !list.is_empty() {
            body.insert(field.into(), json!(wire::mailbox_list_text(list)));
        }
    }
    let path = match &email.stored_template {
        Some(template) => {
            wire::no_subject_with_template(email, "Postmark")?;
            // A number is a TemplateId; anything else is an alias.
            match template.id.parse::<u64>() {
                Ok(id) => body.insert("TemplateId".into(), json!(id)),
                Err(_) => body.insert("TemplateAlias".into(), json!(template.id)),
            };
            body.insert("TemplateModel".into(), template.data.clone());
            "email/withTemplate"
        }
        None => {
            body.insert("Subject".into(), json!(email.subject));
            if let Some(text) = &email.text {
                body.insert("TextBody".into(), json!(text));
            }
            if let Some(html) = &email.html {
                body.insert("HtmlBody".into(), json!(html));
            }
            "email"
        }
    };
    if !email.headers.is_empty() {
        let headers: Vec<Value> = email
            .headers
            .iter()
            .map(|(k, v)| json!({"Name": k, "Value": v}))
            .collect();
        body.insert("Headers".into(), Value::from(headers));
    }
    if let Some(opens) = email.tracking.opens {
        body.insert("TrackOpens".into(), json!(opens));
    }
    if let Some(clicks) = email.tracking.clicks {
        let links = if clicks { "HtmlAndText" } else { "None" };
        body.insert("TrackLinks".into(), json!(links));
    }
    // Postmark takes one Tag: the first.
    if let Some(tag) = email.tags.first() {
        body.insert("Tag".into(), json!(tag));
    }
    if !email.echoed().is_empty() {
        body.insert("Metadata".into(), wire::metadata_object(email));
    }
    if !email.attachments.is_empty() {
        // Postmark wants the `cid:` prefix on an inline image's ContentID.
        let keys = wire::AttachmentKeys {
            content: "Content",
            filename: "Name",
            content_type: "ContentType",
            disposition: None,
            content_id: "ContentID",
            cid_prefix: "cid:",
        };
        body.insert("Attachments".into(), wire::attachments_json(email, &keys));
    }
    let stream = target
        .spec
        .postmark
        .as_ref()
        .map_or("outbound", |p| p.message_stream.as_str());
    body.insert("MessageStream".into(), json!(stream));
    Ok(authenticated(
        Request::new(Method::POST, format!("{}/{path}", target.base)),
        target,
    )
    .with_body(Body::Json(Value::Object(body))))
}

pub fn accepted(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let id = value
        .get("MessageID")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = value
        .get("Message")
        .and_then(Value::as_str)
        .unwrap_or("OK")
        .to_string();
    Ok(Accepted::new(id, status, message))
}

pub fn error(body: &[u8]) -> ErrorDetail {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let code = value.get("ErrorCode").and_then(Value::as_i64);
    let message = value
        .get("Message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| wire::undocumented(body));
    ErrorDetail {
        code: code.map(|c| c.to_string()),
        message,
        // 100: maintenance; 429: rate limited under a 422.
        transient: matches!(code, Some(100 | 429)),
        not_auth: false,
        retry_after: None,
    }
}
