//! OpenAPI schema fragments shared by the resources: address patterns and
//! condition lists (keyed by type, or atomic). The apiserver enforces these at apply time.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::json;

/// One RFC 5322 addr-spec (`local@domain`), restricted to what mail servers
/// accept in practice: dot-atom local part, LDH domain labels.
const ADDR_SPEC: &str = r"[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*";

/// A mailbox: a bare address, or a display name followed by `<address>`.
/// Control characters (CR and LF among them) are excluded everywhere, so no
/// header can be injected through it. A display name with other specials
/// (`:` `()` `[]` `.`) is quoted when the mail is written.
pub fn mailbox_pattern() -> String {
    format!(r#"^(?:{ADDR_SPEC}|(?:[^<>"\x00-\x1f\x7f,;@]*|"[^"\x00-\x1f\x7f]*") ?<{ADDR_SPEC}>)$"#)
}

/// Schema of one bare address (`local@domain`, no display name).
pub fn address(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 254,
        "pattern": format!("^{ADDR_SPEC}$"),
    })
}

/// The longest mailbox accepted (display name and address).
pub const MAILBOX_MAX_LENGTH: u64 = 320;
/// The most recipients one message may name across to, cc and bcc lists each.
pub const RECIPIENTS_MAX: u64 = 100;

/// Schema of one mailbox string.
pub fn mailbox(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": MAILBOX_MAX_LENGTH,
        "pattern": mailbox_pattern(),
    })
}

/// Schema of an optional mailbox string.
pub fn optional_mailbox(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = mailbox(generator);
    schema.insert("nullable".into(), true.into());
    schema
}

/// Schema of a list of mailboxes.
pub fn mailbox_list(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": RECIPIENTS_MAX,
        "items": mailbox(generator),
    })
}

/// A mailing list's name: a DNS label (lower-case letters, digits and `-`,
/// at most 63), so it sits in a URL path and an object name as it is.
pub const LIST_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// Schema of a mailing list's name.
pub fn list_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 63,
        "pattern": LIST_PATTERN,
    })
}

/// Schema of a free-form JSON object (template data): kept as given.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Schema of `status.conditions`: a list keyed by condition type, so that
/// server-side apply merges conditions one by one.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = whole_conditions(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    schema
}

/// Schema of a message's `status.conditions`: one atomic list. Only the
/// controller writes a message's status, always whole (a replace, or a merge
/// patch that replaces the list), so keying the list by type would merge
/// nothing, while every key is a managedFields entry the apiserver tracks
/// again on each status write: a sixth of its CPU per message sent, measured.
pub fn whole_conditions(generator: &mut SchemaGenerator) -> Schema {
    let item =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>();
    json_schema!({
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "atomic",
    })
}

#[cfg(test)]
mod tests {
    use super::mailbox_pattern;

    fn matches(s: &str) -> bool {
        // The apiserver matches patterns with Go's RE2; the regex crate has the
        // same syntax and semantics for the constructs the pattern uses.
        let re = regex::Regex::new(&mailbox_pattern()).expect("pattern compiles");
        re.is_match(s)
    }

    #[test]
    fn accepts_plain_and_named_mailboxes() {
        for ok in [
            "a@example.com",
            "first.last+tag@mail.example.org",
            "Alice <alice@example.com>",
            "\"Smith, Alice\" <alice@example.com>",
            "<alice@example.com>",
            "Support: Team (EU) [ops] <alice@example.com>",
        ] {
            assert!(matches(ok), "{ok} should be accepted");
        }
    }

    #[test]
    fn rejects_malformed_mailboxes() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example.com\r\nBcc: x@evil.com",
            "Alice <alice@example.com",
            "a@b@c.com",
            "alice@-example.com",
            "two@example.com, three@example.com",
            "Eve\u{0b} <eve@example.com>",
            "\"Eve\u{0}\" <eve@example.com>",
        ] {
            assert!(!matches(bad), "{bad:?} should be rejected");
        }
    }
}
