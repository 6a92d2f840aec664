//! The message an email came from, as mailroom writes it into the metadata
//! each service echoes in its delivery webhooks (Mailtrap
//! `custom_variables`, Resend `tags`, Postmark `Metadata`, Mailgun `v:`
//! variables, SendGrid `custom_args`), and reads it back from an event. The
//! receiver so finds the message of an event without any index.
//!
//! Keys: `mailroom-ns`, `mailroom-name` (with `mailroom-name-2` to `-4`
//! when the name is longer than 80 characters, Postmark's longest value),
//! `mailroom-uid` and, for one recipient of a bulk message, `mailroom-rcpt`
//! (its index in `spec.recipients`). Every key is at most 20 characters
//! and uses only letters, digits and `-`, and values are written with `_`
//! for `.` (Resend allows neither `.` nor `/`; Kubernetes names never hold
//! `_`), so one form fits every service.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::EmailMessage;

/// The prefix of every key mailroom writes; refused in `spec.metadata`.
pub const PREFIX: &str = "mailroom-";
const NAMESPACE: &str = "mailroom-ns";
const NAME: &str = "mailroom-name";
const UID: &str = "mailroom-uid";
/// The key of a bulk recipient's index.
pub const RECIPIENT: &str = "mailroom-rcpt";
/// The longest value written (Postmark's limit).
const MAX_VALUE_CHARS: usize = 80;
/// Name parts at most: 4 x 80 covers the 253 characters of a name.
const MAX_NAME_PARTS: usize = 4;

/// Which message (and which of a bulk message's recipients) an email is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The message's namespace.
    pub namespace: String,
    /// The message's name.
    pub name: String,
    /// The message's UID (a message re-created under the same name has
    /// another).
    pub uid: String,
    /// The index in `spec.recipients`, for one email of a bulk message.
    pub recipient: Option<u32>,
}

fn encode(value: &str) -> String {
    value.replace('.', "_")
}

fn decode(value: &str) -> String {
    value.replace('_', ".")
}

fn name_key(part: usize) -> String {
    match part {
        0 => NAME.to_string(),
        n => format!("{NAME}-{}", n + 1),
    }
}

impl Origin {
    /// The origin of `message` (of its recipient `recipient`, for bulk).
    pub fn of(message: &EmailMessage, recipient: Option<u32>) -> Self {
        Self {
            namespace: message.namespace().unwrap_or_default(),
            name: message.name_any(),
            uid: message.uid().unwrap_or_default(),
            recipient,
        }
    }

    /// The metadata entries, in key order.
    pub fn entries(&self) -> Vec<(String, String)> {
        let name = encode(&self.name);
        let chars: Vec<char> = name.chars().collect();
        let mut entries = vec![(NAMESPACE.to_string(), encode(&self.namespace))];
        for (part, chunk) in chars
            .chunks(MAX_VALUE_CHARS)
            .take(MAX_NAME_PARTS)
            .enumerate()
        {
            entries.push((name_key(part), chunk.iter().collect()));
        }
        if let Some(index) = self.recipient {
            entries.push((RECIPIENT.to_string(), index.to_string()));
        }
        entries.push((UID.to_string(), self.uid.clone()));
        entries.sort();
        entries
    }

    /// Reads an origin from the echoed metadata `get` gives by key. `None`
    /// when it holds none (an email sent by another tool, or before
    /// mailroom wrote its origin) or only part of one.
    pub fn read<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let namespace = decode(get(NAMESPACE)?);
        let mut name = String::new();
        for part in 0..MAX_NAME_PARTS {
            match get(&name_key(part)) {
                Some(chunk) => name.push_str(&decode(chunk)),
                None => break,
            }
        }
        let uid = get(UID)?.to_string();
        // Only what Kubernetes could have named: anything else (a forged
        // or mangled echo) names no message, rather than a request the
        // apiserver refuses, which the service would retry forever.
        let dns = |s: &str, max: usize, extra: &str| {
            (1..=max).contains(&s.len())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
        };
        let uid_ok = (1..=64).contains(&uid.len())
            && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !dns(&namespace, 63, "-") || !dns(&name, 253, "-.") || !uid_ok {
            return None;
        }
        let recipient = match get(RECIPIENT) {
            Some(index) => Some(index.parse().ok()?),
            None => None,
        };
        Some(Self {
            namespace,
            name,
            uid,
            recipient,
        })
    }

    /// Reads an origin from a JSON object of strings.
    pub fn from_json(object: Option<&serde_json::Value>) -> Option<Self> {
        let object = object?.as_object()?;
        Self::read(|key| object.get(key)?.as_str())
    }

    /// Reads an origin from a map.
    pub fn from_map(map: &BTreeMap<String, String>) -> Option<Self> {
        Self::read(|key| map.get(key).map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(name: &str, recipient: Option<u32>) -> Origin {
        Origin {
            namespace: "team-a".into(),
            name: name.into(),
            uid: "0b6f6a3e-4a57-4e39-9f5d-0c3d6c0e2f41".into(),
            recipient,
        }
    }

    #[test]
    fn an_origin_reads_back_as_written() {
        for o in [
            origin("welcome.mail-1", None),
            origin("bulk", Some(41)),
            origin(&format!("{}.x", "n".repeat(251)), Some(0)),
        ] {
            let map: BTreeMap<_, _> = o.entries().into_iter().collect();
            assert_eq!(Origin::from_map(&map), Some(o.clone()));
        }
    }

    #[test]
    fn every_entry_fits_every_service() {
        let long = origin(&"a.b".repeat(84), Some(9999));
        for (key, value) in long.entries() {
            assert!(key.len() <= 20 && key.starts_with(PREFIX), "{key}");
            assert!(value.chars().count() <= MAX_VALUE_CHARS, "{key}");
            let resend = |s: &str| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            };
            assert!(resend(&key) && resend(&value), "{key}={value}");
        }
        assert!(long.entries().len() <= 7);
    }

    #[test]
    fn partial_or_foreign_metadata_is_no_origin() {
        let mut map: BTreeMap<_, _> = origin("m", None).entries().into_iter().collect();
        map.remove(UID);
        assert_eq!(Origin::from_map(&map), None);
        assert_eq!(
            Origin::from_json(Some(&serde_json::json!({"order": "1"}))),
            None
        );
        let mut bad_index: BTreeMap<_, _> = origin("m", Some(1)).entries().into_iter().collect();
        bad_index.insert(RECIPIENT.into(), "x".into());
        assert_eq!(Origin::from_map(&bad_index), None);
        for (key, forged) in [
            (NAME, "../secrets"),
            (NAME, "UPPER"),
            (NAMESPACE, "a/b"),
            (UID, "u id"),
        ] {
            let mut map: BTreeMap<_, _> = origin("m", None).entries().into_iter().collect();
            map.insert(key.into(), forged.into());
            assert_eq!(Origin::from_map(&map), None, "{key}={forged}");
        }
    }
}
