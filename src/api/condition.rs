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
/// `Valid` on an EmailTemplate: every part parses (and renders with its
/// `exampleData`).
pub const VALID: &str = "Valid";
/// `DomainVerified` on an API provider: whether the service counts its
/// sending domain verified.
pub const DOMAIN_VERIFIED: &str = "DomainVerified";
/// `SuppressionsSynced` on an API provider with `spec.suppressions`: the
/// last read of the service's suppression list.
pub const SUPPRESSIONS_SYNCED: &str = "SuppressionsSynced";
/// `BouncesReady` on an SMTP provider with `spec.smtp.bounces`: its bounce
/// mailbox can be read.
pub const BOUNCES_READY: &str = "BouncesReady";
/// `Warning` on an EmailMessage: it is sent, but something about it harms
/// delivery (a bulk message without one-click unsubscribe).
pub const WARNING: &str = "Warning";
/// `Degraded` on a provider: True while its circuit breaker is open (too
/// many sends in a row failed for the provider's own reasons); routes pass
/// it over until the cool-down ends.
pub const DEGRADED: &str = "Degraded";

/// The reasons mailroom puts on conditions and in `lastError.reason`. Each
/// is written to status as its name (`TlsFailed` as "TLSFailed"), so status
/// reads exactly as before the type existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The provider connected, negotiated TLS and authenticated.
    Verified,
    /// The configuration is complete, but the service has no call that
    /// checks credentials without sending: the first send will tell.
    Configured,
    /// A referenced Secret (or one of its keys) does not exist.
    SecretNotFound,
    /// A referenced ConfigMap (or one of its keys) does not exist.
    ConfigMapNotFound,
    /// The server refused the credentials.
    AuthFailed,
    /// TLS could not be established as the spec demands.
    TlsFailed,
    /// The server could not be reached or did not answer in time.
    Unreachable,
    /// The spec is valid for the schema but cannot be used.
    InvalidSpec,
    /// The provider named by the message does not exist.
    ProviderNotFound,
    /// The message's namespace may not use the ClusterEmailProvider it names.
    Denied,
    /// The provider exists but is not Ready.
    ProviderNotReady,
    /// The message has not been sent yet and waits for nothing in particular.
    Pending,
    /// A send attempt is under way.
    Sending,
    /// The server accepted the message.
    Accepted,
    /// A bulk message: some recipients were accepted, some failed.
    PartiallyAccepted,
    /// The message itself is unusable (an address or header the server
    /// would refuse); it will never be sent.
    InvalidRequest,
    /// The server refused the message permanently.
    Rejected,
    /// The server or network failed in a way that may pass; retried.
    TransientFailure,
    /// The template parses.
    Parsed,
    /// The template does not parse.
    InvalidTemplate,
    /// Verification: the service answered 404, so what the provider names
    /// there (a Mailgun domain, a server) does not exist.
    NotFound,
    /// Verification: the service answered 405 to its documented lookup.
    MethodNotAllowed,
    /// Verification: the service refused the lookup with another 4xx.
    Refused,
    /// A Secret or ConfigMap key an attachment names does not exist (yet).
    AttachmentNotFound,
    /// An attachment names a Secret that has not opted in to being attached
    /// (label `mailroom.dev/attachable: "true"`): nothing is sent.
    AttachmentNotAllowed,
    /// The EmailTemplate named by the message does not exist.
    TemplateNotFound,
    /// The service reported the message delivered (or opened or clicked).
    Delivered,
    /// Delivery is delayed or soft-bounced; the service keeps trying.
    Deferred,
    /// The recipient's server refused the message for good.
    Bounced,
    /// The service dropped the message after accepting it.
    Dropped,
    /// The recipient marked the message as spam.
    Complained,
    /// The message waits for its `sendAt` time.
    Scheduled,
    /// The provider is suspended (spec.suspend).
    Suspended,
    /// The provider's rate limit holds the message back for a moment.
    RateLimited,
    /// The message's deadline passed before it could be sent.
    DeadlineExceeded,
    /// Under AtMostOnce, an attempt may or may not have reached the server.
    OutcomeUnknown,
    /// The message was claimed but the controller stopped before the result
    /// was recorded; it is sent again (at-least-once).
    Interrupted,
    /// The same message (same identity) was sent before, within its
    /// provider's deduplication window: not sent again.
    AlreadySent,
    /// A recipient is on the provider's suppression list (an
    /// EmailSuppression): nothing is sent to it.
    Suppressed,
    /// The bounce mailbox was read.
    MailboxRead,
    /// A bulk message goes out without one-click unsubscribe (neither it
    /// nor its provider sets `unsubscribe`).
    UnsubscribeMissing,
    /// A message's hosted unsubscribe cannot be written: the controller has
    /// no unsubscribe key Secret, or cannot read or make it.
    UnsubscribeUnavailable,
    /// The service counts the provider's sending domain verified.
    DomainVerified,
    /// The service knows the sending domain but does not count it
    /// verified: records are missing from DNS (`status.domain.records`).
    DomainNotVerified,
    /// The service does not know the sending domain.
    DomainNotFound,
    /// The sending domain could not be checked: no `defaultFrom`, a key
    /// that may not read domains, Postmark without an account token, or
    /// the service unavailable.
    DomainNotChecked,
    /// A dry run: everything was checked and nothing was sent.
    DryRun,
    /// The message was accepted in the provider's test mode (or a Mailtrap
    /// sandbox): nothing was delivered.
    TestMode,
    /// The service's suppression list was read into EmailSuppressions.
    Synced,
    /// The service's suppression list could not be read, or some addresses
    /// not written.
    SyncFailed,
    /// The controller registered the provider's webhook at the service
    /// (`webhook.register`) and holds its key.
    Registered,
    /// Registering the provider's webhook at the service failed: the
    /// message says why (no public URL, a key without the scope, the
    /// service's refusal, a Secret that is not mailroom's).
    RegistrationFailed,
    /// A message's attempt through one provider of its route certainly did
    /// not deliver: it goes on through the next.
    FailedOver,
    /// No provider of a message's route can take it now.
    NoProviderAvailable,
    /// The EmailRoute the message names does not exist.
    RouteNotFound,
    /// A provider's circuit breaker opened after consecutive failures.
    BreakerOpen,
    /// A provider's circuit breaker is closed: sends go through.
    BreakerClosed,
    /// The namespace used its quota on the provider for this hour or day.
    QuotaExceeded,
    /// The namespace's sends through the provider are held for its bounce
    /// or complaint rate until a person releases them.
    ReputationHold,
    /// The sender is not one the provider allows the namespace.
    SenderNotAllowed,
    /// A recipient is not one the provider allows the namespace.
    RecipientNotAllowed,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 61] = [
        Reason::Verified,
        Reason::Configured,
        Reason::SecretNotFound,
        Reason::ConfigMapNotFound,
        Reason::AuthFailed,
        Reason::TlsFailed,
        Reason::Unreachable,
        Reason::InvalidSpec,
        Reason::ProviderNotFound,
        Reason::Denied,
        Reason::ProviderNotReady,
        Reason::Pending,
        Reason::Sending,
        Reason::Accepted,
        Reason::PartiallyAccepted,
        Reason::InvalidRequest,
        Reason::Rejected,
        Reason::TransientFailure,
        Reason::Parsed,
        Reason::InvalidTemplate,
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::Refused,
        Reason::AttachmentNotFound,
        Reason::AttachmentNotAllowed,
        Reason::TemplateNotFound,
        Reason::Delivered,
        Reason::Deferred,
        Reason::Bounced,
        Reason::Dropped,
        Reason::Complained,
        Reason::Scheduled,
        Reason::Suspended,
        Reason::RateLimited,
        Reason::DeadlineExceeded,
        Reason::OutcomeUnknown,
        Reason::Interrupted,
        Reason::AlreadySent,
        Reason::Suppressed,
        Reason::MailboxRead,
        Reason::UnsubscribeMissing,
        Reason::UnsubscribeUnavailable,
        Reason::Registered,
        Reason::RegistrationFailed,
        Reason::DryRun,
        Reason::TestMode,
        Reason::Synced,
        Reason::SyncFailed,
        Reason::DomainVerified,
        Reason::DomainNotVerified,
        Reason::DomainNotFound,
        Reason::DomainNotChecked,
        Reason::FailedOver,
        Reason::NoProviderAvailable,
        Reason::RouteNotFound,
        Reason::BreakerOpen,
        Reason::BreakerClosed,
        Reason::QuotaExceeded,
        Reason::ReputationHold,
        Reason::SenderNotAllowed,
        Reason::RecipientNotAllowed,
    ];

    /// The reason as written to status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Verified => "Verified",
            Reason::Configured => "Configured",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::ConfigMapNotFound => "ConfigMapNotFound",
            Reason::AuthFailed => "AuthFailed",
            Reason::TlsFailed => "TLSFailed",
            Reason::Unreachable => "Unreachable",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ProviderNotFound => "ProviderNotFound",
            Reason::Denied => "Denied",
            Reason::ProviderNotReady => "ProviderNotReady",
            Reason::Pending => "Pending",
            Reason::Sending => "Sending",
            Reason::Accepted => "Accepted",
            Reason::PartiallyAccepted => "PartiallyAccepted",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::Rejected => "Rejected",
            Reason::TransientFailure => "TransientFailure",
            Reason::Parsed => "Parsed",
            Reason::InvalidTemplate => "InvalidTemplate",
            Reason::NotFound => "NotFound",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Refused => "Refused",
            Reason::AttachmentNotFound => "AttachmentNotFound",
            Reason::AttachmentNotAllowed => "AttachmentNotAllowed",
            Reason::TemplateNotFound => "TemplateNotFound",
            Reason::Delivered => "Delivered",
            Reason::Deferred => "Deferred",
            Reason::Bounced => "Bounced",
            Reason::Dropped => "Dropped",
            Reason::Complained => "Complained",
            Reason::Scheduled => "Scheduled",
            Reason::Suspended => "Suspended",
            Reason::RateLimited => "RateLimited",
            Reason::DeadlineExceeded => "DeadlineExceeded",
            Reason::OutcomeUnknown => "OutcomeUnknown",
            Reason::Interrupted => "Interrupted",
            Reason::AlreadySent => "AlreadySent",
            Reason::Suppressed => "Suppressed",
            Reason::MailboxRead => "MailboxRead",
            Reason::UnsubscribeMissing => "UnsubscribeMissing",
            Reason::UnsubscribeUnavailable => "UnsubscribeUnavailable",
            Reason::Registered => "Registered",
            Reason::DryRun => "DryRun",
            Reason::TestMode => "TestMode",
            Reason::Synced => "Synced",
            Reason::SyncFailed => "SyncFailed",
            Reason::RegistrationFailed => "RegistrationFailed",
            Reason::DomainVerified => "DomainVerified",
            Reason::DomainNotVerified => "DomainNotVerified",
            Reason::DomainNotFound => "DomainNotFound",
            Reason::DomainNotChecked => "DomainNotChecked",
            Reason::FailedOver => "FailedOver",
            Reason::NoProviderAvailable => "NoProviderAvailable",
            Reason::RouteNotFound => "RouteNotFound",
            Reason::BreakerOpen => "BreakerOpen",
            Reason::BreakerClosed => "BreakerClosed",
            Reason::QuotaExceeded => "QuotaExceeded",
            Reason::ReputationHold => "ReputationHold",
            Reason::SenderNotAllowed => "SenderNotAllowed",
            Reason::RecipientNotAllowed => "RecipientNotAllowed",
        }
    }

    /// The reason `text` names, if it is one of mailroom's.
    pub fn parse(text: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_string()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

/// Sets condition `type_` in `conditions`, replacing an existing one of the same
/// type. The transition time only moves when the status value changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: Reason,
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
    reason: Reason,
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
        reason: reason.into(),
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
    fn every_reason_reads_back_as_itself_and_none_is_written_twice() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert!(seen.insert(reason.as_str()), "{reason} twice");
            assert_eq!(serde_json::json!(reason), reason.as_str());
        }
        assert_eq!(Reason::TlsFailed.as_str(), "TLSFailed");
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }

    #[test]
    fn transition_time_only_moves_when_status_changes() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            READY,
            false,
            Reason::Unreachable,
            "down",
            Some(1),
        );
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set(
            &mut conditions,
            READY,
            false,
            Reason::AuthFailed,
            "bad",
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].reason, Reason::AuthFailed);
        set(
            &mut conditions,
            READY,
            true,
            Reason::Verified,
            "ok",
            Some(2),
        );
        assert_ne!(conditions[0].last_transition_time, first);
    }
}
