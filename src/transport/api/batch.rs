//! Batch sends of a bulk message's emails (one recipient each) through each
//! service's batch form: Mailtrap `POST /api/batch` (500), Resend
//! `POST /emails/batch` (100, permissive validation, one Idempotency-Key per
//! batch), Postmark `POST /email/batch` or `/email/batchWithTemplates` (500),
//! and, when every email has the same content, SendGrid personalizations
//! (1000) and Mailgun `recipient-variables` (1000). Each request is built
//! from the service's single-send request, so both say the same thing.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::wire::{self, Body, ErrorDetail, Request};
use super::{Target, mailgun, mailtrap, postmark, resend, sendgrid};
use crate::api::origin;
use crate::api::provider::ApiProvider;
use crate::compose::Email;
use crate::transport::{Accepted, BatchOutcome, FailureKind, SendError};

/// The most emails one batch request of `provider` carries.
pub fn size(provider: ApiProvider) -> usize {
    match provider {
        ApiProvider::Resend => 100,
        ApiProvider::Mailtrap | ApiProvider::Postmark => 500,
        ApiProvider::SendGrid | ApiProvider::Mailgun => 1000,
    }
}

/// The batch request for `emails`, or `None` when the service has no batch
/// form that fits them (SendGrid and Mailgun with differing content): then
/// they are sent one by one.
pub fn request(
    provider: ApiProvider,
    target: &Target,
    emails: &[Email],
) -> Result<Option<Request>, SendError> {
    let Some(first) = emails.first() else {
        return Ok(None);
    };
    // Each email's request, built (and held to the service's limits) as if
    // it went alone.
    let bodies = || -> Result<Vec<Value>, SendError> {
        emails
            .iter()
            .map(|e| super::request(provider, target, e).map(|r| json_body(&r)))
            .collect()
    };
    let request = match provider {
        ApiProvider::Mailtrap => {
            let single = mailtrap::request(target, first)?;
            let url = single.url.replacen("/api/send", "/api/batch", 1);
            Request {
                url,
                body: Body::Json(json!({ "requests": bodies()? })),
                ..single
            }
        }
        ApiProvider::Resend => resend_batch(target, first, bodies()?)?,
        ApiProvider::Postmark => postmark_batch(target, first, bodies)?,
        ApiProvider::SendGrid if same_content(emails) => {
            sendgrid_batch(super::request(provider, target, first)?, emails)
        }
        ApiProvider::Mailgun
            if same_content(emails) && same_template_data(emails) && same_headers(emails) =>
        {
            mailgun_batch(super::request(provider, target, first)?, emails)
        }
        ApiProvider::SendGrid | ApiProvider::Mailgun => return Ok(None),
    };
    Ok(Some(request))
}

/// Resend `POST /emails/batch`: the emails as an array, one
/// Idempotency-Key for the batch, permissive validation.
fn resend_batch(target: &Target, first: &Email, bodies: Vec<Value>) -> Result<Request, SendError> {
    let single = resend::request(target, first)?;
    let mut request = Request {
        url: format!("{}/emails/batch", target.base),
        body: Body::Json(Value::from(bodies)),
        ..single
    };
    request
        .headers
        .retain(|(name, _)| name != "Idempotency-Key");
    Ok(request
        .header(
            "Idempotency-Key",
            format!("{}/batch", resend::idempotency_key(first)),
        )
        .header("x-batch-validation", "permissive"))
}

/// Postmark `POST /email/batch` (an array), or `/email/batchWithTemplates`
/// (`{Messages: [...]}`) for stored templates.
fn postmark_batch(
    target: &Target,
    first: &Email,
    bodies: impl FnOnce() -> Result<Vec<Value>, SendError>,
) -> Result<Request, SendError> {
    let single = postmark::request(target, first)?;
    let (url, body) = if single.url.ends_with("/withTemplate") {
        (
            format!("{}/email/batchWithTemplates", target.base),
            json!({ "Messages": bodies()? }),
        )
    } else {
        (
            format!("{}/email/batch", target.base),
            Value::from(bodies()?),
        )
    };
    Ok(Request {
        url,
        body: Body::Json(body),
        ..single
    })
}

/// SendGrid: the first email's request with one personalization per email,
/// each with its recipient's index, template data and headers.
fn sendgrid_batch(mut single: Request, emails: &[Email]) -> Request {
    let personalizations: Vec<Value> = emails.iter().map(personalization).collect();
    if let Body::Json(body) = &mut single.body {
        if let Some(body) = body.as_object_mut() {
            body.remove("headers");
        }
        body["personalizations"] = Value::from(personalizations);
        if let Some(args) = body.get_mut("custom_args").and_then(Value::as_object_mut) {
            args.remove(origin::RECIPIENT);
        }
    }
    single
}

/// One email's SendGrid personalization.
fn personalization(email: &Email) -> Value {
    let mut p = json!({ "to": [wire::mailbox_object(&email.to[0])] });
    // Each recipient's index, where its webhooks echo it.
    if let Some(index) = email.origin.as_ref().and_then(|o| o.recipient) {
        p["custom_args"] = json!({ origin::RECIPIENT: index.to_string() });
    }
    if let Some(t) = &email.stored_template {
        p["dynamic_template_data"] = t.data.clone();
    }
    // Each recipient's own headers (its unsubscribe URL).
    if !email.headers.is_empty() {
        let headers: serde_json::Map<String, Value> = email
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        p["headers"] = Value::Object(headers);
    }
    p
}

/// Mailgun: the first email's request sent to every recipient, with
/// `recipient-variables` so each gets an email of their own.
fn mailgun_batch(mut single: Request, emails: &[Email]) -> Request {
    if let Body::Form(fields, _) = &mut single.body {
        // One request for every recipient: the receiver finds each one's
        // index by its address instead.
        let index_field = format!("v:{}", origin::RECIPIENT);
        fields.retain(|(name, _)| name != "to" && *name != index_field);
        let mut variables = serde_json::Map::new();
        for e in emails {
            let address = e.to[0].email.to_string();
            fields.push(("to".into(), wire::mailbox_text(&e.to[0])));
            variables.insert(address, json!({}));
        }
        fields.push((
            "recipient-variables".into(),
            Value::Object(variables).to_string(),
        ));
    }
    single
}

fn json_body(request: &Request) -> Value {
    match &request.body {
        Body::Json(value) => value.clone(),
        _ => Value::Null,
    }
}

/// Whether the emails differ only in their recipient (and stored template
/// data and headers, which SendGrid carries per personalization).
fn same_content(emails: &[Email]) -> bool {
    let template = |e: &Email| {
        e.stored_template
            .as_ref()
            .map(|t| (t.id.clone(), t.version.clone()))
    };
    emails.iter().all(|e| e.to.len() == 1)
        && emails.windows(2).all(|pair| {
            let (a, b) = (&pair[0], &pair[1]);
            (&a.subject, &a.text, &a.html) == (&b.subject, &b.text, &b.html)
                && template(a) == template(b)
        })
}

/// Whether the emails carry the same headers (Mailgun's one request has one
/// set of `h:` fields; a per-recipient unsubscribe URL makes them differ).
fn same_headers(emails: &[Email]) -> bool {
    emails
        .windows(2)
        .all(|pair| pair[0].headers == pair[1].headers)
}

fn same_template_data(emails: &[Email]) -> bool {
    emails
        .windows(2)
        .all(|pair| pair[0].stored_template == pair[1].stored_template)
}

/// The result of each email from a batch's 2xx answer, in order. An answer
/// that accounts for fewer emails than were sent (Mailtrap's `responses`,
/// Postmark's array) leaves the rest with an unknown outcome: the batch
/// stops there, and the delivery policy decides (never an invented failure).
pub fn outcome(
    provider: ApiProvider,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    count: usize,
) -> BatchOutcome {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let answered = match provider {
        ApiProvider::Mailtrap => value["responses"].as_array().map_or(0, Vec::len),
        ApiProvider::Postmark => value.as_array().map_or(0, Vec::len),
        _ => count,
    }
    .min(count);
    let results = results(provider, status, headers, body, answered);
    let stopped = (answered < count).then(|| {
        let mut error = SendError::new(
            FailureKind::Transient,
            format!(
                "{} answered for {answered} of the {count} emails of the batch: whether the rest were sent is unknown",
                provider.name()
            ),
        );
        error.maybe_delivered = true;
        error
    });
    BatchOutcome { results, stopped }
}

/// The result of each of the first `count` emails of a batch's answer.
fn results(
    provider: ApiProvider,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    count: usize,
) -> Vec<Result<Accepted, SendError>> {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    match provider {
        ApiProvider::Mailtrap => (0..count)
            .map(|i| {
                let item = &value["responses"][i];
                if item["success"] == json!(true) {
                    let id = item["message_ids"][0].as_str().map(str::to_string);
                    Ok(Accepted::new(id, status, "accepted"))
                } else {
                    Err(item_error(
                        provider,
                        mailtrap::error(item.to_string().as_bytes()),
                    ))
                }
            })
            .collect(),
        ApiProvider::Resend => {
            let failed: std::collections::HashMap<u64, String> = value["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let message = e["message"].as_str().unwrap_or("refused").to_string();
                    Some((e["index"].as_u64()?, message))
                })
                .collect();
            let mut ids = value["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d["id"].as_str().map(str::to_string));
            (0..count as u64)
                .map(|i| match failed.get(&i) {
                    Some(message) => Err(item_error(
                        provider,
                        ErrorDetail {
                            code: Some("validation_error".into()),
                            message: message.clone(),
                            ..ErrorDetail::default()
                        },
                    )),
                    None => Ok(Accepted::new(ids.next().flatten(), status, "accepted")),
                })
                .collect()
        }
        ApiProvider::Postmark => (0..count)
            .map(|i| {
                let item = &value[i];
                if item["ErrorCode"] == json!(0) {
                    postmark::accepted(status, item.to_string().as_bytes())
                } else {
                    Err(item_error(
                        provider,
                        postmark::error(item.to_string().as_bytes()),
                    ))
                }
            })
            .collect(),
        ApiProvider::SendGrid => (0..count)
            .map(|_| sendgrid::accepted(status, headers))
            .collect(),
        ApiProvider::Mailgun => (0..count)
            .map(|_| mailgun::accepted(status, body))
            .collect(),
    }
}

/// One item's refusal inside a batch the service accepted as a whole.
fn item_error(provider: ApiProvider, detail: ErrorDetail) -> SendError {
    wire::classify(provider, 422, &HeaderMap::new(), detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_answer_leaves_the_rest_unknown_never_failed() {
        let body = serde_json::json!({"success": true, "errors": [], "responses": [
            {"success": true, "message_ids": ["id-1"]},
            {"success": false, "errors": ["'to' address is invalid"]}
        ]});
        let body = body.to_string();
        let short = outcome(
            ApiProvider::Mailtrap,
            200,
            &HeaderMap::new(),
            body.as_bytes(),
            4,
        );
        assert_eq!(short.results.len(), 2, "only the items answered");
        assert!(short.results[0].is_ok());
        assert!(short.results[1].is_err(), "a refusal the answer states");
        let stopped = short.stopped.expect("the rest is unknown");
        assert!(stopped.maybe_delivered, "{}", stopped.message);
        assert!(
            stopped.message.contains("2 of the 4"),
            "{}",
            stopped.message
        );

        let whole =
            serde_json::json!([{"ErrorCode": 0, "MessageID": "a", "Message": "OK"}]).to_string();
        let postmark = outcome(
            ApiProvider::Postmark,
            200,
            &HeaderMap::new(),
            whole.as_bytes(),
            1,
        );
        assert!(postmark.stopped.is_none() && postmark.results.len() == 1);
    }
}
