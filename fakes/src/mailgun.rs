//! Mailgun (`POST /v3/{domain}/messages`, `GET /v4/domains/{name}`), per its
//! OpenAPI spec: HTTP basic auth `api:<key>` (401 `Forbidden`), multipart or
//! urlencoded form fields, required from/to/subject and a body, only known
//! fields and `h:`/`o:`/`v:`/`t:` options. Success: an id in angle brackets.

use base64::Engine;
use serde_json::{Value, json};

use crate::check::named_address;
use crate::{Answer, Config, Incoming, Service};

const FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "text",
    "html",
    "amp-html",
    "attachment",
    "inline",
    "template",
    "recipient-variables",
];

fn bad(message: &str) -> Answer {
    Answer::json(400, json!({"message": message}))
}

fn authorized(config: &Config, incoming: &Incoming<'_>) -> bool {
    basic_key(incoming).is_some_and(|key| config.sends_with(Service::Mailgun, &key))
}

/// The key of a Basic `api:<key>` Authorization header.
pub(crate) fn basic_key(incoming: &Incoming<'_>) -> Option<String> {
    let encoded = incoming
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(decoded)
        .ok()?
        .strip_prefix("api:")
        .map(str::to_string)
}

pub fn handle(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    if !authorized(config, incoming) {
        return Answer::text(401, "Forbidden");
    }
    let segments: Vec<&str> = incoming.path.trim_matches('/').split('/').collect();
    let domain = if incoming.method.as_str() == "GET" {
        segments[2]
    } else {
        segments[1]
    };
    if domain != config.mailgun_domain {
        return Answer::json(
            404,
            json!({"message": format!("Domain not found: {domain}")}),
        );
    }
    if incoming.method.as_str() == "GET" {
        return Answer::json(200, crate::domains::mailgun(config, domain));
    }
    let content_type = incoming.content_type();
    if !content_type.starts_with("multipart/form-data")
        && !content_type.starts_with("application/x-www-form-urlencoded")
    {
        return bad(
            "Content-Type must be multipart/form-data or application/x-www-form-urlencoded",
        );
    }
    let Some(fields) = body.as_array() else {
        return bad("could not parse the form");
    };
    let fields: Vec<(&str, &Value)> = fields
        .iter()
        .filter_map(|f| Some((f.get(0)?.as_str()?, f.get(1)?)))
        .collect();
    let values = |name: &str| {
        fields
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    for (name, _) in &fields {
        let option = ["h:", "o:", "v:", "t:"].iter().any(|p| name.starts_with(p));
        if !option && !FIELDS.contains(name) {
            return bad(&format!("unknown parameter '{name}'"));
        }
    }
    let from = values("from");
    match from.as_slice() {
        [one] if one.as_str().and_then(named_address).is_some() => {}
        [] => return bad("from parameter is missing"),
        _ => return bad("'from' parameter is not a valid address. please check documentation"),
    }
    if values("to").is_empty() {
        return bad("to parameter is missing");
    }
    for field in ["to", "cc", "bcc"] {
        for value in values(field) {
            let ok = value
                .as_str()
                .is_some_and(|v| v.split(',').all(|a| named_address(a).is_some()));
            if !ok {
                return bad(&format!(
                    "'{field}' parameter is not a valid address. please check documentation"
                ));
            }
        }
    }
    if values("subject").is_empty() && values("template").is_empty() {
        return bad("subject parameter is missing");
    }
    if ["text", "html", "amp-html", "template"]
        .iter()
        .all(|f| values(f).is_empty())
    {
        return bad(
            "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified",
        );
    }
    for field in ["attachment", "inline"] {
        if values(field).iter().any(|v| !v.is_object()) {
            return bad(&format!("'{field}' must be a file part"));
        }
    }
    if let Some(template) = values("template").first() {
        let known = template
            .as_str()
            .is_some_and(|t| config.templates.iter().any(|k| k == t));
        if !known {
            return Answer::json(404, json!({"message": "template not found"}));
        }
    }
    for variables in values("t:variables") {
        let object = variables
            .as_str()
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .is_some_and(|v| v.is_object());
        if !object {
            return bad("t:variables must be a JSON object");
        }
    }
    // With recipient-variables, each `to` address gets an email of its own.
    let to_count: usize = values("to")
        .iter()
        .filter_map(|v| v.as_str())
        .map(|v| v.split(',').count())
        .sum();
    let mut delivered = 1;
    if let Some(variables) = values("recipient-variables").first() {
        let Some(map) = variables
            .as_str()
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| v.as_object().cloned())
        else {
            return bad("recipient-variables must be a JSON object");
        };
        if to_count > 1000 {
            return bad("Too many recipients: at most 1000 with recipient-variables");
        }
        if map.values().any(|v| !v.is_object()) {
            return bad("recipient-variables values must be objects");
        }
        delivered = to_count;
    }
    // o:tracking-opens and o:testmode take yes/no/true/false;
    // o:tracking-clicks also htmlonly.
    for (option, allowed) in [
        ("o:testmode", &["yes", "no", "true", "false"][..]),
        ("o:tracking-opens", &["yes", "no", "true", "false"][..]),
        (
            "o:tracking-clicks",
            &["yes", "no", "true", "false", "htmlonly"][..],
        ),
    ] {
        let given = values(option);
        if given.len() > 1
            || given
                .iter()
                .any(|v| v.as_str().is_none_or(|v| !allowed.contains(&v)))
        {
            return bad(&format!("{option} must be one of {}", allowed.join(", ")));
        }
    }
    if values("o:tag").len() > 3 {
        return bad("Too many tags: a message can have at most 3 tags");
    }
    let options: usize = fields
        .iter()
        .filter(|(n, _)| ["h:", "o:", "v:", "t:"].iter().any(|p| n.starts_with(p)))
        .map(|(n, v)| n.len() + v.as_str().map_or(0, str::len))
        .sum();
    if options > 16 * 1024 {
        return bad(
            "Send options (parameters starting with o:, h:, v:, or t:) are limited to 16 KB total",
        );
    }
    let id = format!(
        "<{}.{}@{}>",
        chrono_like_stamp(),
        uuid::Uuid::new_v4().simple(),
        config.mailgun_domain
    );
    // Test mode: accepted, delivered to nobody.
    let test = values("o:testmode")
        .iter()
        .any(|v| matches!(v.as_str(), Some("yes" | "true")));
    Answer::json(200, json!({"id": id, "message": "Queued. Thank you."}))
        .accepted_id(id)
        .delivering(if test { 0 } else { delivered })
}

fn chrono_like_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
