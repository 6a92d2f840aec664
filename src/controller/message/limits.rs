//! The retry limits of one message: how many attempts, and until when. The
//! message's own, else its provider's, else the controller's.

use crate::api::EmailMessage;
use crate::api::EmailProvider;
use crate::api::provider::RetryPolicy;
use crate::controller::context::Settings;

/// The retry limits that apply to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Attempts (or, for a bulk message, tries of one batch) before giving up.
    pub max_attempts: u32,
    /// When attempts end; `None` when it lies past representable time.
    pub deadline: Option<jiff::Timestamp>,
}

impl Limits {
    /// The message's own limits, else the provider's, else the controller's.
    pub fn of(
        message: &EmailMessage,
        provider: Option<&EmailProvider>,
        settings: &Settings,
    ) -> Self {
        let own = message.spec.retry.as_ref();
        let inherited = provider.and_then(|p| p.spec.retry.as_ref());
        let pick =
            |f: fn(&RetryPolicy) -> Option<u32>| own.and_then(f).or_else(|| inherited.and_then(f));
        let max_attempts = pick(|r| r.max_attempts).unwrap_or(settings.max_attempts);
        let seconds = pick(|r| r.deadline_seconds).unwrap_or(settings.deadline_seconds);
        Self {
            max_attempts,
            deadline: deadline(message, seconds),
        }
    }

    /// Whether the deadline has passed at `now`.
    pub fn passed(&self, now: jiff::Timestamp) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// When a message's attempts end: `seconds` after its creation, or after
/// its sendAt when later. Checked: a sendAt near the end of representable
/// time has no reachable deadline (`None`).
pub fn deadline(message: &EmailMessage, seconds: u32) -> Option<jiff::Timestamp> {
    let created = message.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let created = created.max(message.spec.send_at.as_ref().map(|t| t.0));
    created.and_then(|c| {
        c.checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
            .ok()
    })
}
