//! SendGrid v3 (`POST /v3/mail/send`, `GET /v3/scopes`), per its OpenAPI spec
//! and mail-send error docs: Bearer auth, JSON, personalizations with a
//! non-empty `to`, unique addresses across to/cc/bcc, `from`, a subject, a
//! non-empty `content` with text/plain first, `reply_to` xor `reply_to_list`
//! (unique items, as `categories`),
//! at most 1000 recipients, reserved headers refused. Success: `202`, empty
//! body, `X-Message-Id`.

use serde_json::{Value, json};

use crate::check::{DISPOSITION_ATTACHMENTS, attachments, is_address, unknown_key};

use crate::{Answer, Config, Incoming, Service};

const FIELDS: &[&str] = &[
    "personalizations",
    "from",
    "reply_to",
    "reply_to_list",
    "subject",
    "content",
    "attachments",
    "template_id",
    "headers",
    "categories",
    "custom_args",
    "send_at",
    "batch_id",
    "asm",
    "ip_pool_name",
    "mail_settings",
    "tracking_settings",
];
const PERSONALIZATION_FIELDS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "from",
    "subject",
    "headers",
    "substitutions",
    "dynamic_template_data",
    "custom_args",
    "send_at",
];
const RESERVED_HEADERS: &[&str] = &[
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
];

fn bad(field: Option<&str>, message: &str) -> Answer {
    Answer::json(
        400,
        json!({"errors": [{"message": message, "field": field, "help": null}]}),
    )
}

fn email_object(value: &Value, field: &str) -> Result<String, Answer> {
    let invalid = || bad(Some(field), "Does not contain a valid address.");
    let object = value.as_object().ok_or_else(invalid)?;
    if unknown_key(object, &["email", "name"]).is_some() {
        return Err(bad(Some(field), "Unknown field in email object."));
    }
    let email = object
        .get("email")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    if !is_address(email) {
        return Err(invalid());
    }
    Ok(email.to_ascii_lowercase())
}

pub fn handle(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    match incoming.bearer() {
        None => {
            return Answer::json(
                401,
                json!({"errors": [{"field": null, "message": "authorization required", "help": null}]}),
            );
        }
        Some(key) if !config.sends_with(Service::SendGrid, key) => {
            return Answer::json(
                401,
                json!({"errors": [{"field": null, "message": "The provided authorization grant is invalid, expired, or revoked", "help": null}]}),
            );
        }
        Some(_) => {}
    }
    if incoming.method.as_str() == "GET" {
        return Answer::json(200, json!({"scopes": ["mail.send", "user.profile.read"]}));
    }
    if !incoming.is_json() {
        return Answer::json(
            415,
            json!({"errors": [{"field": null, "message": "Content-Type should be application/json."}]}),
        );
    }
    let Some(object) = body.as_object() else {
        return bad(None, "Bad Request");
    };
    if let Some(key) = unknown_key(object, FIELDS) {
        return bad(Some(key), "Unknown field.");
    }
    if let Err(answer) = object.get("from").map_or(Err(bad(Some("from"), "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.")), |f| email_object(f, "from")) {
        return answer;
    }
    let Some(personalizations) = object
        .get("personalizations")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
    else {
        return bad(
            Some("personalizations"),
            "The personalizations field is required and must have at least one personalization.",
        );
    };
    if personalizations.len() > 1000 {
        return bad(
            Some("personalizations"),
            "You may not have more than 1000 personalizations per API request.",
        );
    }
    let templated = object.contains_key("template_id");
    if let Some(id) = object.get("template_id") {
        let known = id
            .as_str()
            .is_some_and(|id| config.templates.iter().any(|t| t == id));
        if !known {
            return bad(
                Some("template_id"),
                "The template_id must be a valid GUID, you provided an invalid or unknown template id.",
            );
        }
    }
    let mut total = 0;
    for (i, p) in personalizations.iter().enumerate() {
        let Some(p) = p.as_object() else {
            return bad(
                Some("personalizations"),
                "Each personalization must be an object.",
            );
        };
        if let Some(key) = unknown_key(p, PERSONALIZATION_FIELDS) {
            return bad(
                Some(&format!("personalizations.{i}.{key}")),
                "Unknown field.",
            );
        }
        if p.get("to")
            .and_then(Value::as_array)
            .is_none_or(|to| to.is_empty())
        {
            return bad(
                Some(&format!("personalizations.{i}.to")),
                "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for field in ["to", "cc", "bcc"] {
            for (j, item) in p
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                match email_object(item, &format!("personalizations.{i}.{field}.{j}.email")) {
                    Ok(email) if !seen.insert(email.clone()) => {
                        return bad(
                            Some(&format!("personalizations.{i}")),
                            "Each email address in the personalization block should be unique between to, cc, and bcc. We found the first duplicate instance of [redacted] in the personalizations.0.to field.",
                        );
                    }
                    Ok(_) => total += 1,
                    Err(answer) => return answer,
                }
            }
        }
        if !templated && !object.contains_key("subject") && !p.contains_key("subject") {
            return bad(
                Some("subject"),
                "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
            );
        }
    }
    if total > 1000 {
        return bad(
            None,
            "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
        );
    }
    if object.contains_key("reply_to") && object.contains_key("reply_to_list") {
        return bad(
            Some("reply_to"),
            "The reply_to and reply_to_list fields cannot both be used.",
        );
    }
    if let Some(reply_to) = object.get("reply_to")
        && let Err(answer) = email_object(reply_to, "reply_to")
    {
        return answer;
    }
    if !templated {
        let content = object
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty());
        let Some(content) = content else {
            return bad(
                Some("content"),
                "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
            );
        };
        for (i, block) in content.iter().enumerate() {
            let ok = block
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
                && block
                    .get("value")
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty());
            if !ok {
                return bad(
                    Some(&format!("content.{i}")),
                    "The content value must be a string at least one character in length.",
                );
            }
        }
        let plain = content
            .iter()
            .position(|b| b.get("type").and_then(Value::as_str) == Some("text/plain"));
        if plain.is_some_and(|p| p != 0) {
            return bad(
                Some("content"),
                "If present, text/plain content must be first, followed by any other content.",
            );
        }
    }
    if let Some(categories) = object.get("categories") {
        let ok = categories.as_array().is_some_and(|list| {
            list.len() <= 10
                && list
                    .iter()
                    .all(|c| c.as_str().is_some_and(|c| !c.is_empty() && c.len() <= 255))
        });
        if !ok {
            return bad(
                Some("categories"),
                "You may not have more than 10 categories per request, each at most 255 characters.",
            );
        }
        if !unique(categories) {
            return bad(Some("categories"), "The categories must be unique.");
        }
    }
    if let Some(list) = object.get("reply_to_list") {
        let ok = list
            .as_array()
            .is_some_and(|l| !l.is_empty() && l.len() <= 1000);
        if !ok {
            return bad(
                Some("reply_to_list"),
                "The reply_to_list must have between 1 and 1000 items.",
            );
        }
        let emails: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["email"].clone())
            .collect();
        if !unique(&Value::from(emails)) {
            return bad(
                Some("reply_to_list"),
                "The reply_to_list items must be unique.",
            );
        }
    }
    if object
        .get("custom_args")
        .is_some_and(|a| !crate::check::string_map(a))
    {
        return bad(
            Some("custom_args"),
            "Invalid type. Expected: object of strings.",
        );
    }
    if let Some(headers) = object.get("headers")
        && let Err(answer) = check_headers(headers, "headers")
    {
        return answer;
    }
    for (i, p) in personalizations.iter().enumerate() {
        if let Some(headers) = p.get("headers")
            && let Err(answer) = check_headers(headers, &format!("personalizations.{i}.headers"))
        {
            return answer;
        }
    }
    if let Some(settings) = object.get("tracking_settings")
        && let Err(answer) = check_tracking(settings)
    {
        return answer;
    }
    if let Some(list) = object.get("attachments")
        && let Err(e) = attachments(list, "attachments", &DISPOSITION_ATTACHMENTS)
    {
        return bad(Some("attachments"), &e);
    }
    let sandbox = match object.get("mail_settings") {
        Some(settings) => match check_mail_settings(settings) {
            Ok(sandbox) => sandbox,
            Err(answer) => return answer,
        },
        None => false,
    };
    if sandbox {
        // Sandbox mode: checked, never delivered, 200 and no message id.
        return Answer::empty(200).delivering(0);
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
    Answer::empty(202)
        .header("x-message-id", id.clone())
        .accepted_id(id)
        .delivering(personalizations.len())
}

/// Custom headers: an object of strings, none of them reserved.
fn check_headers(headers: &Value, field: &str) -> Result<(), Answer> {
    let Some(map) = headers.as_object() else {
        return Err(bad(Some(field), "Invalid type. Expected: object."));
    };
    for (name, value) in map {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(bad(
                Some(field),
                &format!("The header {name} is reserved and cannot be set."),
            ));
        }
        if !value.is_string() {
            return Err(bad(
                Some(field),
                "Invalid type. Expected: string, given: other.",
            ));
        }
    }
    Ok(())
}

/// `tracking_settings` as the v3 mail-send schema has it: known settings,
/// each an object of its documented fields, `enable` a boolean.
fn check_tracking(settings: &Value) -> Result<(), Answer> {
    const SETTINGS: &[(&str, &[&str])] = &[
        ("click_tracking", &["enable", "enable_text"]),
        ("open_tracking", &["enable", "substitution_tag"]),
        (
            "subscription_tracking",
            &["enable", "text", "html", "substitution_tag"],
        ),
        (
            "ganalytics",
            &[
                "enable",
                "utm_source",
                "utm_medium",
                "utm_term",
                "utm_content",
                "utm_campaign",
            ],
        ),
    ];
    let Some(map) = settings.as_object() else {
        return Err(bad(
            Some("tracking_settings"),
            "Invalid type. Expected: object.",
        ));
    };
    for (name, value) in map {
        let field = format!("tracking_settings.{name}");
        let Some((_, known)) = SETTINGS.iter().find(|(n, _)| n == name) else {
            return Err(bad(Some(&field), "Unknown field."));
        };
        let Some(setting) = value.as_object() else {
            return Err(bad(Some(&field), "Invalid type. Expected: object."));
        };
        if let Some(key) = unknown_key(setting, known) {
            return Err(bad(Some(&format!("{field}.{key}")), "Unknown field."));
        }
        for flag in ["enable", "enable_text"] {
            if setting.get(flag).is_some_and(|v| !v.is_boolean()) {
                return Err(bad(
                    Some(&format!("{field}.{flag}")),
                    "Invalid type. Expected: boolean, given: other.",
                ));
            }
        }
    }
    Ok(())
}

/// Whether a JSON array holds no item twice (the spec's `uniqueItems`).
fn unique(list: &Value) -> bool {
    let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .enumerate()
        .all(|(i, item)| !items[..i].contains(item))
}

/// `mail_settings` as the v3 mail-send schema has it (the settings this
/// fake knows: `sandbox_mode`, each `{enable: bool}`); whether sandbox mode
/// is on.
fn check_mail_settings(settings: &Value) -> Result<bool, Answer> {
    let Some(object) = settings.as_object() else {
        return Err(bad(
            Some("mail_settings"),
            "mail_settings must be an object",
        ));
    };
    let mut sandbox = false;
    for (name, setting) in object {
        match name.as_str() {
            "sandbox_mode" => match setting.get("enable") {
                Some(Value::Bool(on)) => sandbox = *on,
                _ => {
                    return Err(bad(
                        Some("mail_settings.sandbox_mode.enable"),
                        "The sandbox mode enable param should be a boolean value.",
                    ));
                }
            },
            "bypass_list_management"
            | "bypass_spam_management"
            | "bypass_bounce_management"
            | "bypass_unsubscribe_management"
            | "footer" => {}
            other => {
                return Err(bad(
                    Some("mail_settings"),
                    &format!("unknown mail setting: {other}"),
                ));
            }
        }
    }
    Ok(sandbox)
}
