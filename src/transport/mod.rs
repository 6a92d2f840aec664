//! Transports hand a composed email to a server. Every transport (SMTP, and the five services' HTTP APIs)
//! implements [`Transport`] and maps its failures into [`SendError`], so the
//! controller treats them all alike.

pub mod api;
pub mod classify;
pub mod dkim;
pub mod error;
pub mod smtp;
pub mod smtp_connections;

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

/// What a batch send did: one result per email handled, in order, and the
/// failure that stopped it before the rest. The emails after the results
/// were not sent and are tried again later.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// The result of each email handled, in the order given.
    pub results: Vec<Result<Accepted, SendError>>,
    /// Why the batch stopped early (the server, the network or the
    /// credentials failed), if it did.
    pub stopped: Option<SendError>,
}

impl BatchOutcome {
    /// Every email of a batch refused for one reason that belongs to the
    /// emails themselves (the request was invalid or rejected), or the whole
    /// batch stopped for any other reason.
    pub fn whole(count: usize, error: SendError) -> Self {
        if error.is_message_failure() {
            Self {
                results: (0..count).map(|_| Err(error.clone())).collect(),
                stopped: None,
            }
        } else {
            Self {
                results: Vec::new(),
                stopped: Some(error),
            }
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

    /// How many emails of a bulk message go in one batch: the service's
    /// batch limit, or for SMTP how many are sent (over the pooled
    /// connections) between two status writes.
    fn batch_size(&self) -> usize {
        50
    }

    /// The most bytes one batch request may carry (emails counted as
    /// `api::limits::email_bytes` counts them), where the service has such a
    /// limit: a bulk message puts fewer emails in a batch to stay under it.
    fn batch_bytes(&self) -> Option<usize> {
        None
    }

    /// The most sends this transport carries at once now, where it has such
    /// a limit (an SMTP pool's connections): the provider holds no more send
    /// slots, so no message is claimed only to wait for a connection.
    fn connection_limit(&self) -> Option<usize> {
        None
    }

    /// Notes that a message waits because the provider holds as many send
    /// slots as `connection_limit` allows: a pool may open more.
    fn connection_wanted(&self) {}

    /// Sends emails that are each complete (one recipient each). By default
    /// one after another; a refusal of one email is its own result, while a
    /// failure of the server, network or credentials stops the batch there.
    async fn send_batch(&self, emails: &[Email]) -> BatchOutcome {
        one_by_one(self, emails).await
    }
}

/// Sends `emails` one after another through `transport`, stopping at the
/// first failure that is not the email's own.
pub async fn one_by_one<T: Transport + ?Sized>(transport: &T, emails: &[Email]) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    for email in emails {
        match transport.send(email).await {
            Err(e) if !e.is_message_failure() => {
                outcome.stopped = Some(e);
                break;
            }
            result => outcome.results.push(result),
        }
    }
    outcome
}
