//! Transports hand a composed email to a server. Every transport (SMTP today)
//! implements [`Transport`] and maps its failures into [`SendError`], so the
//! controller treats them all alike.

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
}

/// One configured way of sending, built from an EmailProvider and its Secrets.
#[async_trait]
pub trait Transport: Send + Sync {
    /// A short name for status and metrics, e.g. `SMTP`.
    fn name(&self) -> &'static str;

    /// Checks that the server can be reached and accepts the credentials,
    /// without sending anything.
    async fn verify(&self) -> Result<(), SendError>;

    /// Sends one email. `Ok` means the server accepted it.
    async fn send(&self, email: &Email) -> Result<Accepted, SendError>;
}
