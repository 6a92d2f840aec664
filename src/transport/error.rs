//! The error every transport reports: what kind of failure it was, whether a
//! later attempt may succeed, and the server's own words.

use std::time::Duration;

use crate::api::condition::Reason;

/// What went wrong, in the terms the controller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server refused the credentials.
    Auth,
    /// TLS could not be established as required.
    Tls,
    /// The server could not be reached or stopped answering.
    Unreachable,
    /// The server refused this message for good (SMTP 5xx).
    Rejected,
    /// The server failed in a way that may pass (SMTP 4xx, a dropped connection).
    Transient,
    /// The message cannot be expressed or is refused before sending.
    InvalidRequest,
}

/// A failed verification or send.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The kind of failure.
    pub kind: FailureKind,
    /// The reply code (SMTP) or HTTP status, where the server gave one.
    pub code: Option<u16>,
    /// What happened, including the server's reply text. Never contains
    /// credentials.
    pub message: String,
    /// How long the server asked us to wait before trying again.
    pub retry_after: Option<Duration>,
    /// The service's own error code or name, for HTTP APIs.
    pub provider_code: Option<String>,
    /// Whether the server may have accepted the message despite the error
    /// (a timeout or dropped connection after the message was handed over).
    pub maybe_delivered: bool,
}

impl SendError {
    /// A new error of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            retry_after: None,
            provider_code: None,
            maybe_delivered: false,
        }
    }

    /// The same error with the server's reply code.
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    /// Whether another attempt of the same message may succeed.
    pub fn retryable(&self) -> bool {
        match self.kind {
            FailureKind::Auth
            | FailureKind::Tls
            | FailureKind::Unreachable
            | FailureKind::Transient => true,
            FailureKind::Rejected | FailureKind::InvalidRequest => false,
        }
    }

    /// The condition reason for this failure.
    pub fn reason(&self) -> Reason {
        match self.kind {
            FailureKind::Auth => Reason::AuthFailed,
            FailureKind::Tls => Reason::TlsFailed,
            FailureKind::Unreachable => Reason::Unreachable,
            FailureKind::Rejected => Reason::Rejected,
            FailureKind::Transient => Reason::TransientFailure,
            FailureKind::InvalidRequest => Reason::InvalidRequest,
        }
    }

    /// Whether the failure is the provider's (its server, TLS or credentials)
    /// rather than this message's.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Auth | FailureKind::Tls | FailureKind::Unreachable
        )
    }

    /// Whether the failure belongs to the message itself (refused, or
    /// invalid), so another message may still go through.
    pub fn is_message_failure(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Rejected | FailureKind::InvalidRequest
        )
    }
}
