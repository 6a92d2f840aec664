//! Postmark (`POST /email`, `GET /server`), per its docs and postmark.js
//! models: `X-Postmark-Server-Token` (401, ErrorCode 10), `Accept` and
//! `Content-Type` JSON, PascalCase fields, comma-separated recipient strings,
//! at most 50 recipients, a text or html body, Headers as `[{Name, Value}]`,
//! and 422 ErrorCode 406 for inactive recipients.

use serde_json::{Value, json};

use crate::check::{AttachmentRules, attachments, named_address, unknown_key};

const ATTACHMENTS: AttachmentRules = AttachmentRules {
    content: "Content",
    filename: "Name",
    content_type: "ContentType",
    content_type_required: true,
    disposition: None,
    content_id: "ContentID",
    cid_prefix: "cid:",
    content_alternative: None,
};

/// File types Postmark refuses as attachments (ErrorCode 411).
const FORBIDDEN_EXTENSIONS: &[&str] = &[
    "vbs", "exe", "bin", "bat", "chm", "com", "cpl", "crt", "hlp", "hta", "inf", "ins", "isp",
    "jse", "lnk", "mdb", "pcd", "pif", "reg", "scr", "sct", "shs", "vbe", "vba", "wsf", "wsh",
    "wsl", "msc", "msi", "msp", "mst",
];
use crate::{Answer, Config, Incoming, Service};

/// Fields both send endpoints take.
const COMMON_FIELDS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Bcc",
    "ReplyTo",
    "Tag",
    "Metadata",
    "Headers",
    "TrackOpens",
    "TrackLinks",
    "Attachments",
    "MessageStream",
];

/// `/email` only: the message's own subject and bodies.
const BODY_FIELDS: &[&str] = &["Subject", "HtmlBody", "TextBody"];

/// `/email/withTemplate` (TemplatedMessage) only: the body comes from the template.
const TEMPLATE_FIELDS: &[&str] = &["TemplateId", "TemplateAlias", "TemplateModel", "InlineCss"];

fn error(status: u16, code: i64, message: &str) -> Answer {
    Answer::json(status, json!({"ErrorCode": code, "Message": message}))
}

/// The addresses of a comma-separated recipient string, or an error message.
fn recipients<'a>(value: &'a Value, field: &str) -> Result<Vec<&'a str>, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("'{field}' must be a string of comma-separated addresses"))?;
    text.split(',')
        .map(|part| {
            named_address(part)
                .ok_or_else(|| format!("Invalid '{field}' address: '{}'.", part.trim()))
        })
        .collect()
}

/// The template of a TemplatedMessage: exactly one of TemplateId (a number)
/// and TemplateAlias, a known one (ErrorCode 1101 otherwise), and an object
/// TemplateModel.
fn template(config: &Config, object: &serde_json::Map<String, Value>) -> Result<(), Answer> {
    let id = match (object.get("TemplateId"), object.get("TemplateAlias")) {
        (Some(Value::Number(id)), None) => id.to_string(),
        (None, Some(Value::String(alias))) => alias.clone(),
        (Some(_), Some(_)) => {
            return Err(error(
                422,
                1123,
                "Use either TemplateId or TemplateAlias, not both.",
            ));
        }
        _ => {
            return Err(error(
                422,
                403,
                "Incompatible JSON: TemplateId must be a number or TemplateAlias a string.",
            ));
        }
    };
    if !config.templates.contains(&id) {
        return Err(error(422, 1101, "Template not found."));
    }
    if object.get("TemplateModel").is_some_and(|m| !m.is_object()) {
        return Err(error(
            422,
            403,
            "Incompatible JSON: TemplateModel must be an object.",
        ));
    }
    Ok(())
}

/// Postmark's test server token: requests are checked, nothing is delivered.
pub const TEST_TOKEN: &str = "POSTMARK_API_TEST";

pub fn handle(config: &Config, incoming: &Incoming<'_>, body: &Value) -> Answer {
    match incoming.header("x-postmark-server-token") {
        None => {
            return error(
                401,
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            );
        }
        Some(token) if !config.sends_with(Service::Postmark, token) => {
            return error(
                401,
                10,
                "The Server API token you provided is invalid. Please verify that you are using a valid token.",
            );
        }
        Some(_) => {}
    }
    if !incoming
        .header("accept")
        .is_some_and(|a| a.contains("application/json"))
    {
        return error(406, 0, "The 'Accept' header must be 'application/json'.");
    }
    if incoming.method.as_str() == "GET" {
        return Answer::json(
            200,
            json!({"ID": 1, "Name": "fake server", "DeliveryType": "Live", "InboundHash": ""}),
        );
    }
    if !incoming.is_json() {
        return error(422, 409, "JSON required.");
    }
    let Some(object) = body.as_object() else {
        return error(422, 402, "Invalid JSON.");
    };
    let templated = incoming.path.ends_with("/withTemplate");
    let own = if templated {
        TEMPLATE_FIELDS
    } else {
        BODY_FIELDS
    };
    if let Some(key) = unknown_key(object, &[COMMON_FIELDS, own].concat()) {
        return error(
            422,
            403,
            &format!("Incompatible JSON: unknown field '{key}'."),
        );
    }
    match object.get("From").and_then(Value::as_str) {
        Some(from) if named_address(from).is_some() => {}
        Some(_) => return error(422, 300, "Invalid 'From' address."),
        None => return error(422, 300, "Invalid 'From' address: missing."),
    }
    let Some(to) = object.get("To") else {
        return error(422, 300, "Invalid 'To' address: missing.");
    };
    let mut all = Vec::new();
    for (field, value) in [
        ("To", Some(to)),
        ("Cc", object.get("Cc")),
        ("Bcc", object.get("Bcc")),
    ] {
        let Some(value) = value else { continue };
        match recipients(value, field) {
            Ok(list) => all.extend(list),
            Err(message) => return error(422, 300, &message),
        }
    }
    if all.len() > 50 {
        return error(
            422,
            300,
            "You may not send to more than 50 recipients in one message (To, Cc and Bcc together).",
        );
    }
    if let Some(reply_to) = object.get("ReplyTo")
        && let Err(message) = recipients(reply_to, "ReplyTo")
    {
        return error(422, 300, &message);
    }
    if templated {
        if let Err(answer) = template(config, object) {
            return answer;
        }
    } else if !object.get("Subject").is_some_and(Value::is_string) {
        return error(422, 300, "'Subject' must be a string.");
    }
    let has = |k: &str| {
        object
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !templated && !has("TextBody") && !has("HtmlBody") {
        return error(
            422,
            300,
            "Provide either email TextBody or HtmlBody or both.",
        );
    }
    if let Some(headers) = object.get("Headers") {
        let ok = headers.as_array().is_some_and(|list| {
            list.iter().all(|h| {
                h.as_object().is_some_and(|o| {
                    unknown_key(o, &["Name", "Value"]).is_none()
                        && o.get("Name").is_some_and(Value::is_string)
                        && o.get("Value").is_some_and(Value::is_string)
                })
            })
        });
        if !ok {
            return error(
                422,
                403,
                "Incompatible JSON: 'Headers' must be a list of {Name, Value}.",
            );
        }
    }
    if object.get("TrackOpens").is_some_and(|t| !t.is_boolean()) {
        return error(
            422,
            403,
            "Incompatible JSON: 'TrackOpens' must be true or false.",
        );
    }
    let links = ["None", "HtmlAndText", "HtmlOnly", "TextOnly"];
    if object
        .get("TrackLinks")
        .is_some_and(|t| t.as_str().is_none_or(|t| !links.contains(&t)))
    {
        return error(
            422,
            403,
            "Incompatible JSON: 'TrackLinks' must be None, HtmlAndText, HtmlOnly or TextOnly.",
        );
    }
    if object
        .get("Tag")
        .is_some_and(|t| t.as_str().is_none_or(|t| t.len() > 1000))
    {
        return error(
            422,
            403,
            "Incompatible JSON: 'Tag' must be a string of at most 1000 characters.",
        );
    }
    if object
        .get("Metadata")
        .is_some_and(|m| !crate::check::string_map(m))
    {
        return error(
            422,
            403,
            "Incompatible JSON: 'Metadata' must be an object of strings.",
        );
    }
    if let Some(Value::Object(metadata)) = object.get("Metadata") {
        // Postmark's "Custom metadata": 10 fields, names up to 20
        // characters, values up to 80.
        let too_long = metadata.iter().any(|(k, v)| {
            k.chars().count() > 20 || v.as_str().is_some_and(|v| v.chars().count() > 80)
        });
        if metadata.len() > 10 || too_long {
            return error(
                422,
                300,
                "Invalid 'Metadata': at most 10 fields, names of up to 20 characters and values of up to 80.",
            );
        }
    }
    if let Some(list) = object.get("Attachments") {
        if let Err(e) = attachments(list, "Attachments", &ATTACHMENTS) {
            return error(422, 300, &format!("Invalid attachment: {e}"));
        }
        let forbidden = list.as_array().into_iter().flatten().find_map(|a| {
            let name = a.get("Name")?.as_str()?;
            let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
            FORBIDDEN_EXTENSIONS
                .contains(&extension.as_str())
                .then_some(name)
        });
        if let Some(name) = forbidden {
            return error(422, 411, &format!("Forbidden attachment type: {name}"));
        }
    }
    let inactive: Vec<&str> = all
        .iter()
        .copied()
        .filter(|a| config.inactive.iter().any(|i| i == a))
        .collect();
    if !inactive.is_empty() {
        let message = format!(
            "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {}. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression.",
            inactive.join(", ")
        );
        return error(422, 406, &message);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let to_text = to.as_str().unwrap_or_default();
    let test = incoming.header("x-postmark-server-token") == Some(TEST_TOKEN);
    let message = if test { "Test job accepted" } else { "OK" };
    Answer::json(200, json!({"To": to_text, "SubmittedAt": "2026-11-29T10:00:00.0000000-05:00", "MessageID": id, "ErrorCode": 0, "Message": message}))
        .accepted_id(id)
        .delivering(usize::from(!test))
}
