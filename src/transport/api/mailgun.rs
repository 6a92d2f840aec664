//! Mailgun: `POST /v3/{domain}/messages` as multipart/form-data, HTTP basic
//! auth `api:<key>`; reply-to and custom headers as `h:` fields. Success:
//! `{"id": "<...@domain>", "message": "Queued. Thank you."}`; the id is kept
//! without its angle brackets, as Mailgun's webhooks carry it. Verification:
//! `GET /v4/domains/{domain}` (the lookup the current reference lists).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::Target;
use super::wire::{self, Body, ErrorDetail, FilePart, Request};
use crate::compose::Email;
use crate::transport::{Accepted, FailureKind, SendError};

fn domain(target: &Target) -> Result<&str, SendError> {
    target
        .spec
        .mailgun
        .as_ref()
        .map(|m| m.domain.as_str())
        .ok_or_else(|| {
            SendError::new(
                FailureKind::InvalidRequest,
                "spec.api.mailgun.domain is required",
            )
        })
}

fn authenticated(mut request: Request, target: &Target) -> Request {
    request.basic_auth = Some(("api".into(), target.key.clone()));
    request
}

pub fn verify(target: &Target) -> Request {
    let domain = target
        .spec
        .mailgun
        .as_ref()
        .map(|m| m.domain.clone())
        .unwrap_or_default();
    authenticated(
        Request::new(Method::GET, format!("{}/v4/domains/{domain}", target.base)),
        target,
    )
}

pub fn request(target: &Target, email: &Email) -> Result<Request, SendError> {
    let mut fields: Vec<(String, String)> = vec![("from".into(), wire::mailbox_text(&email.from))];
    for (name, list) in [("to", &email.to), ("cc", &email.cc), ("bcc", &email.bcc)] {
        fields.extend(
            list.iter()
                .map(|m| (name.to_string(), wire::mailbox_text(m))),
        );
    }
    if email.to.is_empty() {
        return Err(SendError::new(
            FailureKind::InvalidRequest,
            "spec.to: Mailgun requires at least one 'to' recipient",
        ));
    }
    if !email.subject.is_empty() {
        fields.push(("subject".into(), email.subject.clone()));
    }
    if let Some(template) = &email.stored_template {
        fields.push(("template".into(), template.id.clone()));
        if let Some(version) = &template.version {
            fields.push(("t:version".into(), version.clone()));
        }
        fields.push(("t:variables".into(), template.data.to_string()));
    }
    if let Some(text) = &email.text {
        fields.push(("text".into(), text.clone()));
    }
    if let Some(html) = &email.html {
        fields.push(("html".into(), html.clone()));
    }
    if !email.reply_to.is_empty() {
        fields.push((
            "h:Reply-To".into(),
            wire::mailbox_list_text(&email.reply_to),
        ));
    }
    fields.extend(
        email
            .headers
            .iter()
            .map(|(k, v)| (format!("h:{k}"), v.clone())),
    );
    fields.extend(email.tags.iter().map(|t| ("o:tag".to_string(), t.clone())));
    let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
    if let Some(opens) = email.tracking.opens {
        fields.push(("o:tracking-opens".into(), yes_no(opens)));
    }
    if let Some(clicks) = email.tracking.clicks {
        fields.push(("o:tracking-clicks".into(), yes_no(clicks)));
    }
    // Test mode: Mailgun accepts the message and delivers nothing.
    if target.spec.test_mode {
        fields.push(("o:testmode".into(), "yes".into()));
    }
    fields.extend(
        email
            .echoed()
            .into_iter()
            .map(|(k, v)| (format!("v:{k}"), v)),
    );
    // Files are real file parts; Mailgun names an inline part's `cid:` by its
    // file name, so an inline part is sent under its content id.
    let files = email
        .attachments
        .iter()
        .map(|a| FilePart {
            field: if a.is_inline() {
                "inline"
            } else {
                "attachment"
            }
            .into(),
            filename: a.content_id.clone().unwrap_or_else(|| a.filename.clone()),
            content_type: a.content_type.clone(),
            content: a.content.clone(),
        })
        .collect();
    let url = format!("{}/v3/{}/messages", target.base, domain(target)?);
    Ok(authenticated(Request::new(Method::POST, url), target).with_body(Body::Form(fields, files)))
}

pub fn accepted(status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map(|id| id.trim_matches(['<', '>']).to_string());
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Queued")
        .to_string();
    Ok(Accepted::new(id, status, message))
}

pub fn error(body: &[u8]) -> ErrorDetail {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        Ok(Value::String(text)) => Some(text),
        _ => None,
    }
    // Mailgun documents plain-text answers ("Forbidden"); any other form is
    // described, not copied.
    .unwrap_or_else(|| match std::str::from_utf8(body) {
        Ok(text) if !text.trim_start().starts_with(['{', '[', '<']) => wire::bounded(text),
        _ => wire::undocumented(body),
    });
    ErrorDetail {
        retry_after: try_again_after(&message),
        message,
        ..ErrorDetail::default()
    }
}

/// The delay in Mailgun's 429 text: "... try again after 120 seconds".
fn try_again_after(message: &str) -> Option<Duration> {
    let rest = &message[message.find("try again after ")? + "try again after ".len()..];
    let seconds: String = rest.chars().take_while(char::is_ascii_digit).collect();
    seconds.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_delay_from_the_429_text() {
        let text = "Domain example.com is not allowed to send: account-requests-per-sec limit exceeded, try again after 120 seconds";
        assert_eq!(
            super::try_again_after(text),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(super::try_again_after("Forbidden"), None);
    }
}
