//! The SMTP bounce mailbox, as pure as it can be: a POP3 session (`pop3`),
//! what a mail in the mailbox is (`report`, `fields`, and `prose` for
//! text-only bounces), how grave a failure is (`severity`), the message a
//! report is about (`locate`, through the envelope-sender token of
//! `delivery::token` or the quoted Message-ID) and whose each outcome is
//! (`route`), which mailbox is read next
//! (`schedule`, fair between tenants), and the `BouncesReady` state. The
//! leader's polling loop that drives them is `controller::mailbox_reader`;
//! what a report records goes through `delivery`.

#[cfg(test)]
mod corpus;
pub mod fields;
pub mod locate;
pub mod pop3;
pub mod prose;
pub mod report;
pub mod route;
pub mod schedule;
pub mod severity;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::ProviderId;
use crate::api::condition::{self, BOUNCES_READY, Reason};

/// What `BouncesReady` says for one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxState {
    /// Whether the mailbox was read.
    pub ready: bool,
    /// The reason.
    pub reason: Reason,
    /// What happened, with the counts so far.
    pub message: String,
}

/// The bounce mailboxes' shared state: their last reading, and the soft
/// bounce counts (which the webhook receiver feeds too).
#[derive(Default)]
pub struct Bounces {
    states: Mutex<HashMap<ProviderId, MailboxState>>,
    /// Soft bounces by provider and address.
    pub soft: std::sync::Arc<crate::delivery::soft::SoftBounces>,
}

impl Bounces {
    /// The last state of `provider`'s mailbox.
    pub fn state(&self, provider: &ProviderId) -> Option<MailboxState> {
        self.lock().get(provider).cloned()
    }

    /// Records `state`, as written to the provider.
    pub fn set_state(&self, provider: &ProviderId, state: MailboxState) {
        self.lock().insert(provider.clone(), state);
    }

    /// Forgets providers that no longer have a mailbox.
    pub fn retain(&self, keep: impl Fn(&ProviderId) -> bool) {
        self.lock().retain(|p, _| keep(p));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProviderId, MailboxState>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets `BouncesReady` from `state`; removes it when the provider has no
/// mailbox; leaves it while the mailbox was not read yet.
pub fn report(
    conditions: &mut Vec<Condition>,
    state: Option<&MailboxState>,
    has_mailbox: bool,
    generation: Option<i64>,
) {
    if !has_mailbox {
        conditions.retain(|c| c.type_ != BOUNCES_READY);
        return;
    }
    if let Some(s) = state {
        condition::set(
            conditions,
            BOUNCES_READY,
            s.ready,
            s.reason,
            &s.message,
            generation,
        );
    }
}
