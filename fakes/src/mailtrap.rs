//! Mailtrap's sending API (`POST /api/send[/{inbox}]`), per its OpenAPI spec:
//! Bearer or Api-Token auth, JSON, `from` and address objects, at least one of
//! to/cc/bcc, a subject and a text or html body, `reply_to` as one object.
//! Success: one UUID per recipient in `message_ids`.

use serde_json::{Value, json};

use crate::check::{
    DISPOSITION_ATTACHMENTS, attachments, is_address, non_empty_str, string_map, unknown_key,
};
use crate::{Answer, Config, Incoming, Service};

const FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "text",
    "html",
    "headers",
    "attachments",
    "category",
    "custom_variables",
    "template_uuid",
    "template_variables",
];

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok() && id.len() == 36
}

fn bad(message: &str) -> Answer {
    Answer::json(400, json!({"success": false, "errors": [message]}))
}

fn address_object(value: &Value, field: &str) -> Result<(), String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("'{field}' must be an object with 'email'"))?;
    if let Some(key) = unknown_key(object, &["email", "name"]) {
        return Err(format!("'{field}.{key}' is not a permitted field"));
    }
    match object.get("email").and_then(Value::as_str) {
        Some(email) if is_address(email) => {}
        _ => return Err(format!("'{field}.email' is not a valid email address")),
    }
    match object.get("name") {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("'{field}.name' must be a string")),
    }
}

pub fn handle(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    let given = incoming.bearer().or_else(|| incoming.header("api-token"));
    if !given.is_some_and(|given| config.sends_with(Service::Mailtrap, given)) {
        return Answer::json(401, json!({"success": false, "errors": ["Unauthorized"]}));
    }
    if !incoming.is_json() {
        return bad("Content-Type must be application/json");
    }
    let Some(object) = body.as_object() else {
        return bad("request body must be a JSON object");
    };
    if let Some(key) = unknown_key(object, FIELDS) {
        return bad(&format!("'{key}' is not a permitted field"));
    }
    let Some(from) = object.get("from") else {
        return bad("'from' is required");
    };
    if let Err(e) = address_object(from, "from") {
        return bad(&e);
    }
    let mut recipients = 0;
    for field in ["to", "cc", "bcc"] {
        let Some(list) = object.get(field) else {
            continue;
        };
        let Some(list) = list.as_array() else {
            return bad(&format!("'{field}' must be an array"));
        };
        if list.len() > 1000 {
            return bad(&format!("'{field}' must have at most 1000 items"));
        }
        for (i, item) in list.iter().enumerate() {
            if let Err(e) = address_object(item, &format!("{field}[{i}]")) {
                return bad(&e);
            }
        }
        recipients += list.len();
    }
    if recipients == 0 {
        return bad("'to', 'cc' or 'bcc' address is required");
    }
    if let Some(reply_to) = object.get("reply_to")
        && let Err(e) = address_object(reply_to, "reply_to")
    {
        return bad(&e);
    }
    if let Some(template) = object.get("template_uuid") {
        // The EmailFromTemplate schema: no subject, body or category.
        for field in ["subject", "text", "html", "category"] {
            if object.contains_key(field) {
                return bad(&format!("'{field}' is not permitted with 'template_uuid'"));
            }
        }
        let Some(id) = template.as_str().filter(|id| is_uuid(id)) else {
            return bad("'template_uuid' must be a UUID");
        };
        if !config.templates.iter().any(|t| t == id) {
            return bad("template not found");
        }
        if object
            .get("template_variables")
            .is_some_and(|v| !v.is_object())
        {
            return bad("'template_variables' must be an object");
        }
    } else {
        if object.contains_key("template_variables") {
            return bad("'template_variables' needs 'template_uuid'");
        }
        if non_empty_str(object, "subject").is_none() {
            return bad("'subject' is required");
        }
        if non_empty_str(object, "text").is_none() && non_empty_str(object, "html").is_none() {
            return bad("must specify either text or html body");
        }
    }
    if let Some(headers) = object.get("headers")
        && !string_map(headers)
    {
        return bad("'headers' must be an object of strings");
    }
    if let Some(category) = object.get("category")
        && !category
            .as_str()
            .is_some_and(|c| !c.is_empty() && c.len() <= 255)
    {
        return bad("'category' must be a string of at most 255 characters");
    }
    if let Some(variables) = object.get("custom_variables")
        && !string_map(variables)
    {
        return bad("'custom_variables' must be an object of strings");
    }
    if let Some(list) = object.get("attachments")
        && let Err(e) = attachments(list, "attachments", &DISPOSITION_ATTACHMENTS)
    {
        return bad(&e);
    }
    let ids: Vec<String> = (0..recipients)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let first = ids[0].clone();
    // A sandbox inbox (`/api/send/{inbox_id}`) keeps the mail: nobody gets it.
    let sandbox = incoming.path.trim_matches('/').split('/').count() == 3;
    Answer::json(200, json!({"success": true, "message_ids": ids}))
        .accepted_id(first)
        .delivering(usize::from(!sandbox))
}
