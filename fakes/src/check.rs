//! Checks shared by the fakes: reading the body (JSON or form fields), the
//! address syntax the services accept, and known-field lists.

use serde_json::{Map, Value, json};

use crate::Incoming;

/// The body as recorded: parsed JSON, form fields as `[[name, value]]`, or the
/// raw text as a JSON string when it is neither.
pub async fn body_for_record(incoming: &Incoming<'_>) -> Value {
    let content_type = incoming.content_type();
    if incoming.raw.is_empty() {
        return Value::Null;
    }
    if content_type.starts_with("multipart/form-data") {
        return multipart_fields(&content_type, incoming.raw)
            .await
            .unwrap_or(Value::Null);
    }
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let fields: Vec<Value> = form_urlencoded::parse(incoming.raw)
            .map(|(k, v)| json!([k.to_string(), v.to_string()]))
            .collect();
        return Value::from(fields);
    }
    serde_json::from_slice(incoming.raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(incoming.raw).into()))
}

async fn multipart_fields(content_type: &str, raw: &[u8]) -> Option<Value> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let data = bytes::Bytes::copy_from_slice(raw);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(data) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(str::to_string) {
            Some(file_name) => {
                let content_type = field.content_type().map(|m| m.to_string());
                let bytes = field.bytes().await.unwrap_or_default();
                let content = {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                };
                fields.push(json!([name, {"filename": file_name, "contentType": content_type, "size": bytes.len(), "content": content}]));
            }
            None => fields.push(json!([name, field.text().await.unwrap_or_default()])),
        }
    }
    Some(Value::from(fields))
}

/// A plain address (`local@domain`) as the services validate it.
pub fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain_ok = domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// `address` or `Name <address>`, the string form Resend, Postmark and
/// Mailgun take. Returns the address part when valid.
pub fn named_address(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.contains(['\r', '\n']) {
        return None;
    }
    let address = match (s.rfind('<'), s.ends_with('>')) {
        (Some(open), true) => &s[open + 1..s.len() - 1],
        (None, false) => s,
        _ => return None,
    };
    is_address(address).then_some(address)
}

/// The first key of `object` not in `allowed`.
pub fn unknown_key<'a>(object: &'a Map<String, Value>, allowed: &[&str]) -> Option<&'a str> {
    object
        .keys()
        .map(String::as_str)
        .find(|k| !allowed.contains(k))
}

/// A string field that is present and not empty.
pub fn non_empty_str<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether every value of an object is a string.
pub fn string_map(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
}

/// A service's attachment object: its key names and what it requires.
pub struct AttachmentRules {
    /// The base64 content key (always required).
    pub content: &'static str,
    /// The file name key (always required).
    pub filename: &'static str,
    /// The MIME type key.
    pub content_type: &'static str,
    /// Whether the type is required.
    pub content_type_required: bool,
    /// The disposition key (`attachment` | `inline`), where there is one.
    pub disposition: Option<&'static str>,
    /// The content id key.
    pub content_id: &'static str,
    /// What a content id must start with (Postmark: `cid:`).
    pub cid_prefix: &'static str,
    /// A key that may stand in for the content (Resend's remote `path`).
    pub content_alternative: Option<&'static str>,
}

/// The attachment object Mailtrap and SendGrid share.
pub const DISPOSITION_ATTACHMENTS: AttachmentRules = AttachmentRules {
    content: "content",
    filename: "filename",
    content_type: "type",
    content_type_required: false,
    disposition: Some("disposition"),
    content_id: "content_id",
    cid_prefix: "",
    content_alternative: None,
};

/// The first problem with an attachments array, as the service words it
/// closely enough for a test: unknown keys, missing or non-base64 content,
/// a missing file name or type, a bad disposition, an inline part without an id.
pub fn attachments(value: &Value, field: &str, rules: &AttachmentRules) -> Result<(), String> {
    use base64::Engine;
    let list = value
        .as_array()
        .ok_or_else(|| format!("'{field}' must be an array"))?;
    for (i, item) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let object = item
            .as_object()
            .ok_or_else(|| format!("'{at}' must be an object"))?;
        let mut allowed = vec![
            rules.content,
            rules.filename,
            rules.content_type,
            rules.content_id,
        ];
        allowed.extend(rules.disposition);
        allowed.extend(rules.content_alternative);
        if let Some(key) = unknown_key(object, &allowed) {
            return Err(format!("'{at}.{key}' is not a permitted field"));
        }
        let alternative = rules
            .content_alternative
            .and_then(|key| non_empty_str(object, key));
        match non_empty_str(object, rules.content) {
            Some(content) => {
                if base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .is_err()
                {
                    return Err(format!("'{at}.{}' must be base64-encoded", rules.content));
                }
            }
            None if alternative.is_some() => {}
            None => return Err(format!("'{at}.{}' is required", rules.content)),
        }
        if non_empty_str(object, rules.filename).is_none() {
            return Err(format!("'{at}.{}' is required", rules.filename));
        }
        match object.get(rules.content_type) {
            None if rules.content_type_required => {
                return Err(format!("'{at}.{}' is required", rules.content_type));
            }
            None => {}
            Some(Value::String(t)) if t.contains('/') => {}
            Some(_) => return Err(format!("'{at}.{}' must be a MIME type", rules.content_type)),
        }
        let id = object.get(rules.content_id);
        if let Some(id) = id
            && !id.as_str().is_some_and(|id| {
                id.len() > rules.cid_prefix.len() && id.starts_with(rules.cid_prefix)
            })
        {
            return Err(format!(
                "'{at}.{}' must be a string starting with '{}'",
                rules.content_id, rules.cid_prefix
            ));
        }
        if let Some(key) = rules.disposition {
            match object.get(key).map(|d| d.as_str()) {
                None | Some(Some("attachment")) => {}
                Some(Some("inline")) if id.is_some() => {}
                Some(Some("inline")) => {
                    return Err(format!(
                        "'{at}.{}' is required when '{key}' is inline",
                        rules.content_id
                    ));
                }
                Some(_) => return Err(format!("'{at}.{key}' must be attachment or inline")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(is_address("a.b+c@example.org"));
        assert!(!is_address("a..b@example.org"));
        assert!(!is_address("a@localhost"));
        assert_eq!(
            named_address("Alice <alice@example.org>"),
            Some("alice@example.org")
        );
        assert_eq!(
            named_address("alice@example.org"),
            Some("alice@example.org")
        );
        assert_eq!(named_address("Alice <alice@example.org"), None);
        assert_eq!(named_address("a@example.org\r\nBcc: x@example.org"), None);
    }
}
