//! When a failed attempt lets a message move on to the next provider of its
//! route, and when a failure counts against the provider's circuit breaker.
//! Pure, and table-tested: docs/delivery.md carries the same table.
//!
//! A message moves on only when the attempt certainly did not deliver: the
//! server was not reached, refused the connection, TLS or the credentials,
//! or answered with a refusal before taking the message. It never moves on
//! after an attempt that may have reached the server (a timeout or a
//! connection lost after the message was handed over, a 5xx from an API
//! that does not recognise a repeated request): a second provider could
//! then deliver it twice, so it stays with the same provider under the
//! message's delivery policy.

use std::time::Duration;

use super::gate::Sender;
use crate::transport::{FailureKind, SendError};

/// The longest Retry-After a message waits out on the same provider; a
/// service that asks for longer (a 429 or 408) is moved on from.
pub const RETRY_AFTER_BUDGET: Duration = Duration::from_secs(10);

/// Whether a message whose attempt through `sender` failed with `error`
/// may go on through another provider of its route.
pub fn moves_on(error: &SendError, sender: Sender) -> bool {
    if error.maybe_delivered {
        return false;
    }
    match error.kind {
        FailureKind::Auth | FailureKind::Tls | FailureKind::Unreachable => true,
        FailureKind::Rejected | FailureKind::InvalidRequest => false,
        FailureKind::Transient => transient_moves_on(error, sender),
    }
}

/// A transient failure: an SMTP server's 4xx refusal (it did not take the
/// message), an HTTP 408 or 429 past the Retry-After budget, a 5xx from a
/// service that drops repeated requests by itself (Resend: it has the key,
/// not the message, so nothing was sent).
fn transient_moves_on(error: &SendError, sender: Sender) -> bool {
    let Some(code) = error.code else {
        return false;
    };
    if sender.name == "smtp" {
        return (400..500).contains(&code);
    }
    match code {
        408 | 429 => error
            .retry_after
            .is_none_or(|wait| wait > RETRY_AFTER_BUDGET),
        500..=599 => sender.idempotent,
        _ => false,
    }
}

/// Whether `error` counts against the provider's circuit breaker: a failure
/// of the provider (its server, network, TLS, credentials, a 5xx, a rate
/// limit), certain or not. A refusal of the message itself says the
/// provider works.
pub fn counts_against_provider(error: &SendError) -> bool {
    match error.kind {
        FailureKind::Auth | FailureKind::Tls | FailureKind::Unreachable => true,
        FailureKind::Rejected | FailureKind::InvalidRequest => false,
        FailureKind::Transient => !mailbox_full(error),
    }
}

/// A full mailbox (SMTP 552, or a 5xx with the enhanced code 5.2.2) is the
/// recipient's trouble, not the provider's.
fn mailbox_full(error: &SendError) -> bool {
    match error.code {
        Some(552) => true,
        Some(500..=599) => error.message.contains("5.2.2"),
        _ => false,
    }
}

/// The table docs/delivery.md carries: each failure class, whether it
/// moves a message on, whether it counts against the breaker.
#[cfg(test)]
pub fn cases() -> Vec<(&'static str, SendError, Sender, bool, bool)> {
    use FailureKind::*;
    let smtp = Sender {
        name: "smtp",
        idempotent: false,
        stores_templates: false,
    };
    let api = Sender {
        name: "postmark",
        idempotent: false,
        stores_templates: true,
    };
    let resend = Sender {
        name: "resend",
        idempotent: true,
        stores_templates: true,
    };
    let e = |kind, code: Option<u16>, maybe: bool| {
        let mut error = SendError::new(kind, "x");
        error.code = code;
        error.maybe_delivered = maybe;
        error
    };
    let wait = |mut error: SendError, seconds| {
        error.retry_after = Some(Duration::from_secs(seconds));
        error
    };
    vec![
        (
            "connection refused, DNS failure (SMTP)",
            e(Unreachable, None, false),
            smtp,
            true,
            true,
        ),
        (
            "connection refused (HTTP API)",
            e(Unreachable, None, false),
            api,
            true,
            true,
        ),
        (
            "SMTP 421 service not available",
            e(Unreachable, Some(421), false),
            smtp,
            true,
            true,
        ),
        (
            "TLS handshake or certificate failure",
            e(Tls, None, false),
            smtp,
            true,
            true,
        ),
        (
            "SMTP 535 credentials refused",
            e(Auth, Some(535), false),
            smtp,
            true,
            true,
        ),
        (
            "HTTP 401, 403 key refused or revoked",
            e(Auth, Some(401), false),
            api,
            true,
            true,
        ),
        (
            "SMTP 4xx (greylisting, busy)",
            e(Transient, Some(451), false),
            smtp,
            true,
            true,
        ),
        (
            "HTTP 429 without Retry-After",
            e(Transient, Some(429), false),
            api,
            true,
            true,
        ),
        (
            "HTTP 429, Retry-After past 10 s",
            wait(e(Transient, Some(429), false), 60),
            api,
            true,
            true,
        ),
        (
            "HTTP 429, Retry-After within 10 s",
            wait(e(Transient, Some(429), false), 2),
            api,
            false,
            true,
        ),
        (
            "HTTP 5xx from Resend (Idempotency-Key)",
            e(Transient, Some(503), false),
            resend,
            true,
            true,
        ),
        (
            "HTTP 5xx from an API without idempotency",
            e(Transient, Some(500), false),
            api,
            false,
            true,
        ),
        (
            "timeout or connection lost while sending (SMTP)",
            e(Unreachable, None, true),
            smtp,
            false,
            true,
        ),
        (
            "HTTP timeout waiting for the answer",
            e(Unreachable, None, true),
            api,
            false,
            true,
        ),
        (
            "malformed server reply",
            e(Transient, None, true),
            smtp,
            false,
            true,
        ),
        (
            "SMTP 5xx refusal of the message",
            e(Rejected, Some(550), false),
            smtp,
            false,
            false,
        ),
        (
            "SMTP 552 mailbox full",
            e(Transient, Some(552), false),
            smtp,
            false,
            false,
        ),
        (
            "HTTP other 4xx (validation)",
            e(Rejected, Some(422), false),
            api,
            false,
            false,
        ),
        (
            "message refused before sending",
            e(InvalidRequest, None, false),
            api,
            false,
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_class_moves_on_only_when_nothing_was_delivered() {
        for (class, error, sender, moves, counts) in cases() {
            assert_eq!(moves_on(&error, sender), moves, "moves on: {class}");
            assert_eq!(
                counts_against_provider(&error),
                counts,
                "counts against the provider: {class}"
            );
            // Nothing that may have been delivered ever moves on.
            if error.maybe_delivered {
                assert!(!moves_on(&error, sender), "{class}");
            }
        }
    }

    #[test]
    fn the_docs_carry_the_same_table() {
        let mut table = String::from(
            "| failure | moves on to the next provider | counts against the breaker |\n|---|---|---|\n",
        );
        for (class, _, _, moves, counts) in cases() {
            let yes = |b: bool| if b { "yes" } else { "no" };
            table.push_str(&format!("| {class} | {} | {} |\n", yes(moves), yes(counts)));
        }
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/delivery.md"))
                .expect("docs/delivery.md");
        assert!(
            docs.contains(&table),
            "docs/delivery.md must contain this table:\n{table}"
        );
    }
}
