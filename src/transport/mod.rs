//! Transports hand a composed email to a server. Every transport (SMTP today)
//! implements [`Transport`] and maps its failures into [`SendError`], so the
//! controller treats them all alike.

pub mod api;
pub mod classify;
pub mod error;
pub mod smtp;

use async_trait::async_trait;

pub use error::{FailureKind, SendError};

use crate::compose::Email;

/// What a server said when it accepted a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The server's own id for the message, where it gives one (an SMTP queue
    /// id, or an API's message id).
    pub provider_message_id: Option<String>,
    /// The reply code (SMTP) or HTTP status.
    pub code: u16,
    /// The reply text.
    pub message: String,
    /// Every id the service gave, where it gives one per recipient.
    pub all_ids: Vec<String>,
}

/// What verification established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The server was contacted and accepted the credentials.
    Verified,
    /// The service has no call that checks credentials without sending; the
    /// configuration is complete, and the first send will tell.
    Unverifiable,
}

impl Accepted {
    /// An accepted message with the service's id (if any) and reply.
    pub fn new(provider_message_id: Option<String>, code: u16, message: impl Into<String>) -> Self {
        Self {
            provider_message_id,
            code,
            message: message.into(),
            all_ids: Vec::new(),
        }
    }
}

/// One configured way of sending, built from an EmailProvider and its Secrets.
#[async_trait]
pub trait Transport: Send + Sync {
    /// A short name for status and metrics, e.g. `SMTP`.
    fn name(&self) -> &'static str;

    /// Whether the email carries the Message-ID mailroom derives (SMTP), or
    /// the service sets its own (HTTP APIs).
    fn sets_message_id(&self) -> bool {
        false
    }

    /// Whether the service drops a repeated attempt of the same message by
    /// itself (Resend's Idempotency-Key), so re-sending can never duplicate.
    fn idempotent(&self) -> bool {
        false
    }

    /// Whether the service keeps templates of its own that a message can
    /// name (`providerTemplate`): the HTTP APIs do, SMTP servers do not.
    fn stores_templates(&self) -> bool {
        false
    }

    /// Checks that the server can be reached and accepts the credentials,
    /// without sending anything.
    async fn verify(&self) -> Result<Verification, SendError>;

    /// Sends one email. `Ok` means the server accepted it.
    async fn send(&self, email: &Email) -> Result<Accepted, SendError>;
}
