//! Mailtrap Email API: `POST /api/send` on the transactional, bulk or
//! sandbox host (`/api/send/{inbox_id}`), JSON with `{email, name}` objects,
//! `Authorization: Bearer`. Success: `{"success": true, "message_ids": [...]}`
//! with one id per recipient (To, Cc, Bcc order).

use reqwest::Method;
use serde_json::{Map, Value};

use super::Target;
use super::wire::{self, Body, ErrorDetail, Request};
use crate::compose::Email;
use crate::transport::{Accepted, FailureKind, SendError};

pub fn request(target: &Target, email: &Email) -> Result<Request, SendError> {
    let list = |l: &[lettre::message::Mailbox]| {
        Value::from(l.iter().map(wire::mailbox_object).collect::<Vec<_>>())
    };
    let mut body = Map::new();
    body.insert("from".into(), wire::mailbox_object(&email.from));
    if !email.to.is_empty() {
        body.insert("to".into(), list(&email.to));
    }
    if !email.cc.is_empty() {
        body.insert("cc".into(), list(&email.cc));
    }
    if !email.bcc.is_empty() {
        body.insert("bcc".into(), list(&email.bcc));
    }
    match email.reply_to.as_slice() {
        [] => {}
        [one] => {
            body.insert("reply_to".into(), wire::mailbox_object(one));
        }
        _ => {
            return Err(SendError::new(
                FailureKind::InvalidRequest,
                "spec.replyTo: Mailtrap accepts a single reply-to address",
            ));
        }
    }
    match &email.stored_template {
        Some(template) => {
            wire::no_subject_with_template(email, "Mailtrap")?;
            if !is_uuid(&template.id) {
                let text = "spec.providerTemplate.id: Mailtrap template ids are UUIDs";
                return Err(SendError::new(FailureKind::InvalidRequest, text));
            }
            if !email.tags.is_empty() {
                let text = "spec.tags: Mailtrap takes no category with a template";
                return Err(SendError::new(FailureKind::InvalidRequest, text));
            }
            body.insert("template_uuid".into(), template.id.clone().into());
            body.insert("template_variables".into(), template.data.clone());
            wire::insert_common(&mut body, email, false);
        }
        None => {
            if email.subject.is_empty() {
                return Err(SendError::new(
                    FailureKind::InvalidRequest,
                    "spec.subject: Mailtrap requires a subject",
                ));
            }
            wire::insert_common(&mut body, email, true);
            // Mailtrap takes one category: the first tag.
            if let Some(tag) = email.tags.first() {
                body.insert("category".into(), tag.clone().into());
            }
        }
    }
    if !email.echoed().is_empty() {
        body.insert("custom_variables".into(), wire::metadata_object(email));
    }
    if !email.attachments.is_empty() {
        let keys = &wire::DISPOSITION_ATTACHMENT_KEYS;
        body.insert("attachments".into(), wire::attachments_json(email, keys));
    }
    let inbox = target
        .spec
        .mailtrap
        .as_ref()
        .and_then(|m| m.sandbox_inbox_id);
    let url = match inbox {
        Some(id) => format!("{}/api/send/{id}", target.base),
        None => format!("{}/api/send", target.base),
    };
    Ok(Request::new(Method::POST, url)
        .header("Authorization", format!("Bearer {}", target.key))
        .with_body(Body::Json(Value::Object(body))))
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

pub fn accepted(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let ids: Vec<String> = value
        .get("message_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut accepted = Accepted::new(ids.first().cloned(), status, "accepted");
    accepted.all_ids = ids;
    Ok(accepted)
}

pub fn error(body: &[u8]) -> ErrorDetail {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = match value.get("errors") {
        Some(Value::Array(errors)) => errors
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; "),
        Some(Value::String(error)) => error.clone(),
        _ => wire::undocumented(body),
    };
    ErrorDetail {
        message,
        ..ErrorDetail::default()
    }
}
