//! The one table that decides, for every transport, whether a failure is
//! worth another attempt. docs/delivery.md carries a copy, kept equal by a
//! unit test.

use super::FailureKind;

/// One row: what was observed, the kind it maps to, and why.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The observation, as written in the docs.
    pub signal: &'static str,
    /// The resulting kind.
    pub kind: FailureKind,
    /// Whether the server may have accepted the message anyway.
    pub maybe_delivered: bool,
    /// Why.
    pub meaning: &'static str,
}

const fn rule(
    signal: &'static str,
    kind: FailureKind,
    maybe_delivered: bool,
    meaning: &'static str,
) -> Rule {
    Rule {
        signal,
        kind,
        maybe_delivered,
        meaning,
    }
}

use FailureKind::{Auth, InvalidRequest, Rejected, Tls, Transient, Unreachable};

/// Every rule, most specific first. The first matching row wins.
pub const RULES: &[Rule] = &[
    rule(
        "SMTP 421",
        Unreachable,
        false,
        "service not available, closing the connection",
    ),
    rule(
        "SMTP 530, 534, 535, 538",
        Auth,
        false,
        "authentication required, too weak or refused",
    ),
    rule(
        "SMTP 5xx with enhanced code 5.7.8 or 5.7.0",
        Auth,
        false,
        "authentication credentials invalid",
    ),
    rule(
        "SMTP 552 or 5xx with enhanced code 5.2.2",
        Transient,
        false,
        "mailbox full: may clear later",
    ),
    rule(
        "SMTP 452 or 4xx with enhanced code 4.5.3 (too many recipients)",
        Rejected,
        false,
        "the server takes fewer recipients in one message: the same message would be refused again; send to fewer",
    ),
    rule(
        "SMTP 4xx",
        Transient,
        false,
        "temporary failure (greylisting, rate limit, busy)",
    ),
    rule(
        "SMTP 5xx",
        Rejected,
        false,
        "permanent failure (unknown user, policy, too big)",
    ),
    rule(
        "STARTTLS required but not offered",
        Tls,
        false,
        "never falls back to clear text",
    ),
    rule(
        "TLS handshake or certificate failure",
        Tls,
        false,
        "the server's certificate is not trusted, or TLS failed",
    ),
    rule(
        "no common AUTH mechanism",
        Auth,
        false,
        "the server offers none of the configured mechanism",
    ),
    rule(
        "connection refused, reset before sending, DNS failure",
        Unreachable,
        false,
        "the server was not reached",
    ),
    rule(
        "timeout or connection lost while sending",
        Unreachable,
        true,
        "the server may have the message",
    ),
    rule(
        "malformed server reply",
        Transient,
        true,
        "the reply could not be read",
    ),
    rule(
        "message refused by the client before sending",
        InvalidRequest,
        false,
        "the message cannot be expressed",
    ),
    rule(
        "HTTP 401, 403",
        Auth,
        false,
        "key refused, lacks permission, or unverified sender",
    ),
    rule(
        "HTTP 408, 429",
        Transient,
        false,
        "retried not before Retry-After / X-RateLimit-Reset / Mailgun's text",
    ),
    rule(
        "HTTP 409 Resend concurrent_idempotent_requests",
        Transient,
        false,
        "the first request is still in flight",
    ),
    rule(
        "HTTP 5xx, Postmark ErrorCode 100",
        Transient,
        false,
        "the service failed or is in maintenance",
    ),
    rule(
        "HTTP other 4xx",
        Rejected,
        false,
        "validation error, inactive recipient, too large",
    ),
    rule(
        "HTTP timeout waiting for the answer",
        Unreachable,
        true,
        "the service may have the message",
    ),
    rule(
        "HTTP connection failure before the request was sent",
        Unreachable,
        false,
        "the service was not reached",
    ),
];

fn find(signal: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.signal == signal)
        .unwrap_or(&RULES[RULES.len() - 1])
}

/// The rule for an SMTP reply code with its enhanced status code (`5.7.8`),
/// if the reply text starts with one.
pub fn smtp_reply(code: u16, text: &str) -> &'static Rule {
    let enhanced = text
        .split_whitespace()
        .next()
        .filter(|t| t.split('.').count() == 3)
        .unwrap_or("");
    match (code, enhanced) {
        (421, _) => find("SMTP 421"),
        (530 | 534 | 535 | 538, _) => find("SMTP 530, 534, 535, 538"),
        (500..=599, "5.7.8" | "5.7.0") => find("SMTP 5xx with enhanced code 5.7.8 or 5.7.0"),
        (552, _) | (500..=599, "5.2.2") => find("SMTP 552 or 5xx with enhanced code 5.2.2"),
        (452, _) | (400..=499, "4.5.3") if too_many_recipients(code, enhanced, text) => {
            find("SMTP 452 or 4xx with enhanced code 4.5.3 (too many recipients)")
        }
        (400..=499, _) => find("SMTP 4xx"),
        _ => find("SMTP 5xx"),
    }
}

/// Whether a 4xx reply says the message names too many recipients (4.5.3,
/// or a 452 that says so): 452 alone also means "insufficient storage",
/// which may clear.
fn too_many_recipients(code: u16, enhanced: &str, text: &str) -> bool {
    enhanced == "4.5.3" || (code == 452 && text.to_ascii_lowercase().contains("recipients"))
}

/// The rule for a failure without a reply, named by its signal.
pub fn signal(signal: &str) -> &'static Rule {
    find(signal)
}

/// The rule for an HTTP status, given whether the service marked the error
/// transient (Postmark 100, Resend's concurrent idempotent request) or not
/// about credentials (Resend's 403 validation_error).
pub fn http(status: u16, transient: bool, not_auth: bool) -> &'static Rule {
    match status {
        401 | 403 if !not_auth => find("HTTP 401, 403"),
        408 | 429 => find("HTTP 408, 429"),
        409 if transient => find("HTTP 409 Resend concurrent_idempotent_requests"),
        500..=599 => find("HTTP 5xx, Postmark ErrorCode 100"),
        _ if transient => find("HTTP 5xx, Postmark ErrorCode 100"),
        _ => find("HTTP other 4xx"),
    }
}

/// The table as markdown rows, as docs/delivery.md carries it.
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from(
        "| observed | kind | retried | may have been delivered | meaning |\n|---|---|---|---|---|\n",
    );
    for r in RULES {
        let retried = if super::SendError::new(r.kind, "").retryable() {
            "yes"
        } else {
            "no"
        };
        let maybe = if r.maybe_delivered { "yes" } else { "no" };
        out.push_str(&format!(
            "| {} | {:?} | {retried} | {maybe} | {} |\n",
            r.signal, r.kind, r.meaning
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_replies() {
        assert_eq!(smtp_reply(421, "4.3.2 shutting down").kind, Unreachable);
        assert_eq!(smtp_reply(452, "4.5.3 Too many recipients").kind, Rejected);
        assert_eq!(smtp_reply(452, "Too many recipients").kind, Rejected);
        assert_eq!(
            smtp_reply(452, "4.3.1 Insufficient system storage").kind,
            Transient
        );
        assert_eq!(smtp_reply(535, "5.7.8 Authentication failed").kind, Auth);
        assert_eq!(smtp_reply(554, "5.7.8 bad credentials").kind, Auth);
        assert_eq!(smtp_reply(552, "5.2.2 Mailbox full").kind, Transient);
        assert_eq!(smtp_reply(550, "5.2.2 over quota").kind, Transient);
        assert_eq!(smtp_reply(450, "4.2.0 greylisted").kind, Transient);
        assert_eq!(smtp_reply(550, "5.1.1 User unknown").kind, Rejected);
        assert_eq!(smtp_reply(554, "Transaction failed").kind, Rejected);
    }

    #[test]
    fn http_answers() {
        assert_eq!(http(401, false, false).kind, Auth);
        assert_eq!(http(403, false, true).kind, Rejected);
        assert_eq!(http(429, false, false).kind, Transient);
        assert_eq!(http(409, true, false).kind, Transient);
        assert_eq!(http(409, false, false).kind, Rejected);
        assert_eq!(http(503, false, false).kind, Transient);
        assert_eq!(http(422, true, false).kind, Transient);
        assert_eq!(http(422, false, false).kind, Rejected);
    }

    #[test]
    fn every_signal_used_in_code_exists() {
        for s in [
            "STARTTLS required but not offered",
            "TLS handshake or certificate failure",
            "no common AUTH mechanism",
            "connection refused, reset before sending, DNS failure",
            "timeout or connection lost while sending",
            "malformed server reply",
            "message refused by the client before sending",
            "HTTP timeout waiting for the answer",
            "HTTP connection failure before the request was sent",
        ] {
            assert_eq!(signal(s).signal, s);
        }
    }

    #[test]
    fn the_docs_carry_the_same_table() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/delivery.md"))
                .expect("docs/delivery.md");
        assert!(
            docs.contains(&markdown()),
            "docs/delivery.md must contain this table:\n{}",
            markdown()
        );
    }
}
