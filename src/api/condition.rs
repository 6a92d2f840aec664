//! Status conditions: the condition types and reasons mailroom writes, and a
//! helper that sets a condition while keeping its transition time stable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `Ready` on an EmailProvider: it was verified and can send.
pub const READY: &str = "Ready";
/// `Sent` on an EmailMessage: the server accepted it (or why not yet).
pub const SENT: &str = "Sent";
/// `Delivered` on an EmailMessage: what the service's delivery events say.
pub const DELIVERED: &str = "Delivered";
/// `WebhookReady` on a provider with `spec.webhook`: its key can be used.
pub const WEBHOOK_READY: &str = "WebhookReady";

/// The reasons mailroom puts on conditions and in `lastError.reason`.
pub mod reason {
    /// The provider connected, negotiated TLS and authenticated.
    pub const VERIFIED: &str = "Verified";
    /// The configuration is complete, but the service has no call that
    /// checks credentials without sending: the first send will tell.
    pub const CONFIGURED: &str = "Configured";
    /// A referenced Secret (or one of its keys) does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A referenced ConfigMap (or one of its keys) does not exist.
    pub const CONFIG_MAP_NOT_FOUND: &str = "ConfigMapNotFound";
    /// The server refused the credentials.
    pub const AUTH_FAILED: &str = "AuthFailed";
    /// TLS could not be established as the spec demands.
    pub const TLS_FAILED: &str = "TLSFailed";
    /// The server could not be reached or did not answer in time.
    pub const UNREACHABLE: &str = "Unreachable";
    /// The spec is valid for the schema but cannot be used.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The provider named by the message does not exist.
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    /// The message's namespace may not use the ClusterEmailProvider it names.
    pub const DENIED: &str = "Denied";
    /// The provider exists but is not Ready.
    pub const PROVIDER_NOT_READY: &str = "ProviderNotReady";
    /// The message has not been sent yet and waits for nothing in particular.
    pub const PENDING: &str = "Pending";
    /// A send attempt is under way.
    pub const SENDING: &str = "Sending";
    /// The server accepted the message.
    pub const ACCEPTED: &str = "Accepted";
    /// A bulk message: some recipients were accepted, some failed.
    pub const PARTIALLY_ACCEPTED: &str = "PartiallyAccepted";
    /// The message itself is unusable (an address or header the server
    /// would refuse); it will never be sent.
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// The server refused the message permanently.
    pub const REJECTED: &str = "Rejected";
    /// The server or network failed in a way that may pass; retried.
    pub const TRANSIENT_FAILURE: &str = "TransientFailure";
    /// The template parses.
    pub const PARSED: &str = "Parsed";
    /// The template does not parse.
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    /// Verification: the service answered 404, so what the provider names
    /// there (a Mailgun domain, a server) does not exist.
    pub const NOT_FOUND: &str = "NotFound";
    /// Verification: the service answered 405 to its documented lookup.
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
    /// Verification: the service refused the lookup with another 4xx.
    pub const REFUSED: &str = "Refused";
    /// A Secret or ConfigMap key an attachment names does not exist (yet).
    pub const ATTACHMENT_NOT_FOUND: &str = "AttachmentNotFound";
    /// An attachment names a Secret that has not opted in to being attached
    /// (label `mailroom.dev/attachable: "true"`): nothing is sent.
    pub const ATTACHMENT_NOT_ALLOWED: &str = "AttachmentNotAllowed";
    /// The EmailTemplate named by the message does not exist.
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// The service reported the message delivered (or opened or clicked).
    pub const DELIVERED: &str = "Delivered";
    /// Delivery is delayed or soft-bounced; the service keeps trying.
    pub const DEFERRED: &str = "Deferred";
    /// The recipient's server refused the message for good.
    pub const BOUNCED: &str = "Bounced";
    /// The service dropped the message after accepting it.
    pub const DROPPED: &str = "Dropped";
    /// The recipient marked the message as spam.
    pub const COMPLAINED: &str = "Complained";
    /// The message waits for its `sendAt` time.
    pub const SCHEDULED: &str = "Scheduled";
    /// The provider is suspended (spec.suspend).
    pub const SUSPENDED: &str = "Suspended";
    /// The provider's rate limit holds the message back for a moment.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// The message's deadline passed before it could be sent.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// Under AtMostOnce, an attempt may or may not have reached the server.
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    /// The message was claimed but the controller stopped before the result
    /// was recorded; it is sent again (at-least-once).
    pub const INTERRUPTED: &str = "Interrupted";
}

/// Sets condition `type_` in `conditions`, replacing an existing one of the same
/// type. The transition time only moves when the status value changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" };
    set_status(
        conditions,
        type_,
        status,
        reason,
        message,
        observed_generation,
    );
}

/// Like [`set`], with the status spelled out: `True`, `False` or `Unknown`.
pub fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) {
    let status = status.to_string();
    let now = Time(jiff::Timestamp::now());
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether two condition lists say the same thing, ignoring transition times.
pub fn same_meaning(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            find(b, &x.type_).is_some_and(|y| {
                x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_only_moves_when_status_changes() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            READY,
            false,
            reason::UNREACHABLE,
            "down",
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set(
            &mut conditions,
            READY,
            false,
            reason::AUTH_FAILED,
            "bad",
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].reason, reason::AUTH_FAILED);
        set(
            &mut conditions,
            READY,
            true,
            reason::VERIFIED,
            "ok",
            Some(2),
        );
        assert_ne!(conditions[0].last_transition_time, first);
    }
}
