//! A message's identity for de-duplication: a SHA-256 of its namespace and
//! `spec.idempotencyKey`, or of its namespace, name and spec (less the
//! fields that only say how to send: retry, delivery policy, time to live).
//! The same object created again has the same identity; so the Message-ID
//! (SMTP) and the Resend Idempotency-Key are derived from it too.

use kube::ResourceExt;
use ring::digest::{SHA256, digest};

use crate::api::EmailMessage;

/// Spec fields that do not change what is sent, left out of the identity.
const HOW_TO_SEND: &[&str] = &[
    "ttlSecondsAfterFinished",
    "deliveryPolicy",
    "retry",
    "idempotencyKey",
];

/// 32 hex characters (128 bits of a SHA-256).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity(String);

impl Identity {
    /// The identity of `message`.
    pub fn of(message: &EmailMessage) -> Self {
        let namespace = message.namespace().unwrap_or_default();
        let mut input = format!("mailroom/1\0{namespace}\0");
        match &message.spec.idempotency_key {
            Some(key) => {
                input.push_str("key\0");
                input.push_str(key);
            }
            None => {
                input.push_str("spec\0");
                input.push_str(&message.name_any());
                input.push('\0');
                input.push_str(&canonical_spec(message));
            }
        }
        let hash = digest(&SHA256, input.as_bytes());
        Self(hex::encode(&hash.as_ref()[..16]))
    }

    /// Reads a stored identity; `None` unless 32 lowercase hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(text.to_string()))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 64 bits, which the in-memory index keeps.
    pub fn fingerprint(&self) -> u64 {
        u64::from_str_radix(&self.0[..16], 16).unwrap_or_default()
    }
}

/// The spec as JSON, without the fields that only say how to send.
fn canonical_spec(message: &EmailMessage) -> String {
    let Ok(mut value) = serde_json::to_value(&message.spec) else {
        return String::new();
    };
    if let Some(fields) = value.as_object_mut() {
        for field in HOW_TO_SEND {
            fields.remove(*field);
        }
    }
    value.to_string()
}

/// The key that every attempt of `message` sends with (Message-ID, Resend
/// Idempotency-Key): its identity, or, when a person asked to send an
/// already sent message again, its identity and UID, so the repeat is a new
/// email that neither the service nor the receiver drops.
pub fn send_key(message: &EmailMessage, again: bool) -> String {
    let identity = Identity::of(message);
    if again {
        format!(
            "{}.{}",
            identity.as_str(),
            message.uid().unwrap_or_default()
        )
    } else {
        identity.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, namespace: &str, spec: serde_json::Value) -> EmailMessage {
        let mut base = serde_json::json!({"providerRef": {"name": "p"}, "to": ["a@example.org"], "subject": "s", "text": "t"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        let mut message = EmailMessage::new(name, serde_json::from_value(base).expect("a spec"));
        message.metadata.namespace = Some(namespace.into());
        message.metadata.uid = Some(format!("uid-of-{name}"));
        message
    }

    #[test]
    fn the_same_object_created_again_has_the_same_identity() {
        let first = message("welcome", "team-a", serde_json::json!({}));
        let mut again = first.clone();
        again.metadata.uid = Some("another-uid".into());
        again.spec.ttl_seconds_after_finished = Some(60);
        assert_eq!(Identity::of(&first), Identity::of(&again));
        assert_eq!(Identity::of(&first).as_str().len(), 32);
    }

    #[test]
    fn name_namespace_spec_and_key_each_change_it() {
        let base = Identity::of(&message("welcome", "team-a", serde_json::json!({})));
        let others = [
            message("welcome-2", "team-a", serde_json::json!({})),
            message("welcome", "team-b", serde_json::json!({})),
            message("welcome", "team-a", serde_json::json!({"subject": "other"})),
            message(
                "welcome",
                "team-a",
                serde_json::json!({"idempotencyKey": "k1"}),
            ),
        ];
        for other in &others {
            assert_ne!(Identity::of(other), base, "{:?}", other.metadata.name);
        }
    }

    #[test]
    fn one_key_is_one_send_whatever_the_name() {
        let a = message(
            "order-1-a",
            "shop",
            serde_json::json!({"idempotencyKey": "order-1"}),
        );
        let b = message(
            "order-1-b",
            "shop",
            serde_json::json!({"idempotencyKey": "order-1", "subject": "x"}),
        );
        assert_eq!(Identity::of(&a), Identity::of(&b));
        assert_ne!(
            send_key(&a, true),
            send_key(&b, true),
            "a forced repeat is new"
        );
        assert_eq!(send_key(&a, false), Identity::of(&a).as_str());
    }

    #[test]
    fn only_well_formed_identities_parse() {
        let id = Identity::of(&message("m", "n", serde_json::json!({})));
        assert_eq!(Identity::parse(id.as_str()), Some(id.clone()));
        assert_ne!(id.fingerprint(), 0);
        for bad in ["", "xyz", &"A".repeat(32), &"0".repeat(31)] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }
}
