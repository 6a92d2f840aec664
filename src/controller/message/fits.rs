//! Whether a message's outcome can be recorded. etcd refuses a write larger
//! than its request limit (1.5 MiB by default), and every status write
//! stores the whole object again. A message so large that its status could
//! not be written must never be claimed and sent: its outcome would be
//! lost, and after a restart it would be sent again. So such a message is
//! refused before the claim, while a small status (the refusal) still fits.

use crate::api::EmailMessage;

/// The largest object etcd stores: its default `--max-request-bytes`.
pub const OBJECT_LIMIT: usize = 1_572_864;

/// Room kept for the largest status a message can get (conditions, the
/// server's reply, the last error, 20 delivery events, bulk progress with
/// 20 failures, every message id of a batch).
pub const STATUS_ROOM: usize = 64 * 1024;

/// An annotation on the controller's cached copy only (never written): the
/// bytes of the stored object the cache dropped (managedFields, kubectl's
/// last-applied-configuration, which repeats the whole spec).
pub const DROPPED_BYTES: &str = "mailroom.dev/cache-dropped-bytes";

/// `Err` with why, naming the size, when `message` and its largest status
/// could pass the limit.
pub fn check(message: &EmailMessage) -> Result<(), String> {
    let mut spec_only = message.clone();
    spec_only.status = None;
    let dropped = spec_only
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove(DROPPED_BYTES))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let size = serde_json::to_vec(&spec_only)
        .map_or(usize::MAX, |bytes| bytes.len())
        .saturating_add(dropped);
    if size.saturating_add(STATUS_ROOM) <= OBJECT_LIMIT {
        return Ok(());
    }
    Err(format!(
        "spec: the message is {size} bytes; with room for its status ({} KiB) it would pass the {} bytes an object may have in etcd, so its outcome could not be recorded: make text, html, data or recipients smaller (at most {} bytes in all)",
        STATUS_ROOM / 1024,
        OBJECT_LIMIT,
        OBJECT_LIMIT - STATUS_ROOM
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> EmailMessage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "team"},
            "spec": {"providerRef": {"name": "p"}, "to": ["a@example.org"], "subject": "s", "text": text}
        }))
        .expect("a message")
    }

    #[test]
    fn a_message_fits_until_its_status_would_not() {
        assert!(check(&message("hello")).is_ok());
        let room = OBJECT_LIMIT - STATUS_ROOM;
        // '€' is three bytes: the limit is on bytes, not characters.
        let near = "€".repeat(room / 3);
        let error = check(&message(&near)).expect_err("too large with its status");
        assert!(error.contains("could not be recorded"), "{error}");
        assert!(check(&message(&"€".repeat(room / 3 - 200))).is_ok());
    }

    #[test]
    fn what_the_cache_dropped_counts() {
        let mut half = message(&"x".repeat(OBJECT_LIMIT / 2));
        assert!(check(&half).is_ok());
        half.metadata.annotations =
            Some([(DROPPED_BYTES.to_string(), (OBJECT_LIMIT / 2).to_string())].into());
        assert!(
            check(&half).is_err(),
            "kubectl's copy of the spec is stored too"
        );
    }
}
