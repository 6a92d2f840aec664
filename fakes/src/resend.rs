//! Resend (`POST /emails`), per its OpenAPI spec and error table: Bearer auth
//! (401 missing_api_key, 403 invalid_api_key), JSON, required from/to/subject,
//! `Name <address>` strings, at most 50 `to`, and `Idempotency-Key`: a
//! repeated key with the same body returns the first id without sending
//! again; with another body it is a 409.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::check::{AttachmentRules, attachments, named_address, string_map, unknown_key};

const ATTACHMENTS: AttachmentRules = AttachmentRules {
    content: "content",
    filename: "filename",
    content_type: "content_type",
    content_type_required: false,
    disposition: None,
    content_id: "content_id",
    cid_prefix: "",
    content_alternative: Some("path"),
};
use crate::{Answer, Config, Incoming, Service};

const FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "html",
    "text",
    "headers",
    "attachments",
    "tags",
    "scheduled_at",
    "template",
    "topic_id",
];

fn error(status: u16, name: &str, message: &str) -> Answer {
    Answer::json(
        status,
        json!({"statusCode": status, "name": name, "message": message}),
    )
}

/// Checks a `string | [string]` address field.
fn addresses(value: &Value, field: &str, max: usize) -> Result<usize, Answer> {
    let list: Vec<&Value> = match value {
        Value::String(_) => vec![value],
        Value::Array(items) => items.iter().collect(),
        _ => {
            return Err(error(
                422,
                "validation_error",
                &format!("`{field}` must be a string or an array of strings"),
            ));
        }
    };
    if list.len() > max {
        return Err(error(
            422,
            "validation_error",
            &format!("Too many recipients in `{field}`: the maximum is {max}."),
        ));
    }
    for item in &list {
        if item.as_str().and_then(named_address).is_none() {
            return Err(error(
                422,
                "validation_error",
                &format!(
                    "Invalid `{field}` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."
                ),
            ));
        }
    }
    Ok(list.len())
}

pub fn handle(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    let Some(given) = incoming.bearer() else {
        return error(
            401,
            "missing_api_key",
            "Missing API key in the authorization header. Include the following header 'Authorization: Bearer YOUR_API_KEY' in the request.",
        );
    };
    if !config.sends_with(Service::Resend, given) {
        return error(403, "invalid_api_key", "API key is invalid");
    }
    if let Some(key) = incoming.header("idempotency-key")
        && (key.is_empty() || key.len() > 256)
    {
        return error(
            400,
            "invalid_idempotency_key",
            "The key must be between 1-256 chars.",
        );
    }
    if !incoming.is_json() {
        return error(
            422,
            "validation_error",
            "Invalid content type: expected application/json",
        );
    }
    let Some(object) = body.as_object() else {
        return error(422, "validation_error", "Invalid JSON body");
    };
    if let Some(key) = unknown_key(object, FIELDS) {
        return error(422, "validation_error", &format!("Unknown field `{key}`"));
    }
    for field in ["from", "to", "subject"] {
        if !object.contains_key(field) {
            return error(
                422,
                "missing_required_field",
                &format!("Missing `{field}` field."),
            );
        }
    }
    if object
        .get("from")
        .and_then(Value::as_str)
        .and_then(named_address)
        .is_none()
    {
        return error(
            422,
            "invalid_from_address",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.",
        );
    }
    for (field, max) in [("to", 50), ("cc", 50), ("bcc", 50), ("reply_to", 50)] {
        if let Some(value) = object.get(field)
            && let Err(answer) = addresses(value, field, max)
        {
            return answer;
        }
    }
    if !object.get("subject").is_some_and(Value::is_string) {
        return error(422, "validation_error", "`subject` must be a string");
    }
    for field in ["html", "text"] {
        if object.get(field).is_some_and(|v| !v.is_string()) {
            return error(
                422,
                "validation_error",
                &format!("`{field}` must be a string"),
            );
        }
    }
    if !object.contains_key("html")
        && !object.contains_key("text")
        && !object.contains_key("template")
    {
        return error(422, "validation_error", "Missing `html` or `text` field.");
    }
    if let Some(template) = object.get("template") {
        if object.contains_key("html") || object.contains_key("text") {
            return error(
                422,
                "validation_error",
                "`html` and `text` cannot be used with `template`.",
            );
        }
        let valid = template.as_object().is_some_and(|t| {
            unknown_key(t, &["id", "variables"]).is_none()
                && t.get("id").and_then(Value::as_str).is_some()
                && t.get("variables").is_none_or(|v| {
                    v.as_object()
                        .is_some_and(|v| v.values().all(|x| x.is_string() || x.is_number()))
                })
        });
        if !valid {
            return error(
                422,
                "validation_error",
                "`template` must be {id, variables} with string or number variables.",
            );
        }
        let id = template["id"].as_str().unwrap_or_default();
        if !config.templates.iter().any(|t| t == id) {
            return error(404, "not_found", "Template not found");
        }
    }
    if let Some(headers) = object.get("headers")
        && !string_map(headers)
    {
        return error(
            422,
            "validation_error",
            "`headers` must be an object of strings",
        );
    }
    if let Some(tags) = object.get("tags") {
        let valid = |v: &Value| {
            v.as_str().is_some_and(|s| {
                !s.is_empty()
                    && s.len() <= 256
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        };
        let ok = tags.as_array().is_some_and(|list| {
            list.iter().all(|t| {
                t.as_object().is_some_and(|o| {
                    unknown_key(o, &["name", "value"]).is_none()
                        && o.get("name").is_some_and(valid)
                        && o.get("value").is_some_and(valid)
                })
            })
        });
        if !ok {
            return error(
                422,
                "validation_error",
                "Tags should only contain ASCII letters, numbers, underscores, or dashes.",
            );
        }
    }
    if let Some(list) = object.get("attachments")
        && let Err(e) = attachments(list, "attachments", &ATTACHMENTS)
    {
        return error(422, "invalid_attachment", &e);
    }
    let id = uuid::Uuid::new_v4().to_string();
    // Resend's test addresses (`@resend.dev`) are accepted and delivered to
    // nobody.
    let to_test = object.get("to").is_some_and(|to| {
        let all: Vec<&str> = match to {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        !all.is_empty()
            && all
                .iter()
                .all(|a| a.trim_end_matches('>').ends_with("@resend.dev"))
    });
    Answer::json(200, json!({"id": id}))
        .accepted_id(id)
        .delivering(usize::from(!to_test))
}

/// Applies idempotency to an answer: the first accepted request with a key is
/// remembered; the same key and body later returns its id without a new
/// send; another body with the key is refused.
pub fn idempotent(
    seen: &mut HashMap<String, (Value, String)>,
    incoming: &Incoming<'_>,
    body: &Value,
    answer: Answer,
) -> Answer {
    let Some(key) = incoming.header("idempotency-key").map(str::to_string) else {
        return answer;
    };
    match seen.get(&key) {
        Some((first, id)) if first == body => Answer::json(200, json!({"id": id})),
        Some(_) => error(
            409,
            "invalid_idempotent_request",
            "Same idempotency key used with a different request payload. Change your idempotency key or payload.",
        ),
        None => {
            if let Some(id) = &answer.id {
                seen.insert(key, (body.clone(), id.clone()));
            }
            answer
        }
    }
}
