//! Finds the message a report is about: by the token in the envelope
//! sender it was returned to (anywhere in the report: its `To`,
//! `Delivered-To`, `X-Postfix-Sender`, ARF `Original-Mail-From`, the quoted
//! `Return-Path`), else by the quoted Message-ID. Both carry the message's
//! identity; the ledger gives its namespace and name. A token made with
//! another key is another provider's: that report is left alone.

use kube::api::Api;
use kube::{Client, ResourceExt};

use super::report::Report;
use crate::api::{EmailMessage, ProviderId};
use crate::delivery::token::{self, BounceAddress, TokenKey};
use crate::ledger::{Identity, Ledger};

/// The most token-shaped strings tried in one report.
const MAX_TOKENS: usize = 8;

/// How a report was tied to its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A token with this provider's tag.
    Token,
    /// Only the quoted Message-ID: the reported recipients must be the
    /// message's.
    MessageId,
}

/// The message a report is about.
#[derive(Debug)]
pub enum Located {
    /// The message as it is now.
    Found {
        /// The message.
        message: Box<EmailMessage>,
        /// Its bulk recipient, from the token.
        recipient: Option<u32>,
        /// How it was found.
        evidence: Evidence,
    },
    /// The message was sent (its token is valid) but no longer exists.
    Gone,
    /// The ledger has no record of it (yet: a bounce can overtake the
    /// record of the send); tried again on later polls.
    NotRecorded,
    /// It carries only tokens of another key: another provider's.
    Foreign,
    /// Nothing in it names a message this controller sent.
    Unmatched,
}

/// Why a lookup could not be finished (the report is tried again later).
#[derive(Debug, thiserror::Error)]
#[error("finding the message of a bounce: {0}")]
pub struct LookupFailed(String);

/// Finds the message of `report` (`text`: the whole report, lossily).
pub async fn locate(
    client: &Client,
    ledger: &Ledger,
    provider: &ProviderId,
    key: &TokenKey,
    address: &BounceAddress,
    text: &str,
    report: &Report,
) -> Result<Located, LookupFailed> {
    let tokens = address.tokens_in(text, MAX_TOKENS);
    let (identity, recipient, evidence) = if tokens.is_empty() {
        let Some(identity) = report
            .original_message_id
            .as_deref()
            .and_then(identity_in_message_id)
        else {
            return Ok(Located::Unmatched);
        };
        (identity, None, Evidence::MessageId)
    } else {
        match tokens.iter().find_map(|t| token::read(key, t)) {
            Some(t) => (t.identity, t.recipient, Evidence::Token),
            None => return Ok(Located::Foreign),
        }
    };
    let found = ledger
        .find_identity(client, &identity)
        .await
        .map_err(|e| LookupFailed(e.to_string()))?;
    let Some((namespace, entry)) = found else {
        return Ok(Located::NotRecorded);
    };
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), &namespace);
    let message = api
        .get_opt(&entry.name)
        .await
        .map_err(|e| LookupFailed(e.to_string()))?;
    let Some(message) = message.filter(|m| Identity::of(m) == identity) else {
        return Ok(match evidence {
            Evidence::Token => Located::Gone,
            Evidence::MessageId => Located::Unmatched,
        });
    };
    if !provider.may_have_sent(&message) {
        return Ok(Located::Foreign);
    }
    tracing::debug!(
        namespace,
        name = message.name_any(),
        ?evidence,
        "bounce matched"
    );
    Ok(Located::Found {
        message: Box::new(message),
        recipient,
        evidence,
    })
}

/// The identity in a Message-ID mailroom wrote: `<identity[.uid]@domain>`.
pub fn identity_in_message_id(message_id: &str) -> Option<Identity> {
    let inner = message_id.trim().trim_start_matches('<');
    let local = inner.split('@').next()?;
    Identity::parse(&local.get(..32)?.to_ascii_lowercase())
        .filter(|_| local.len() == 32 || local.as_bytes().get(32) == Some(&b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mailroom_message_ids_name_an_identity() {
        let id = "0123456789abcdef0123456789abcdef";
        assert!(identity_in_message_id(&format!("<{id}@example.com>")).is_some());
        assert!(identity_in_message_id(&format!("<{id}.5f2c-uid@example.com>")).is_some());
        assert!(identity_in_message_id(&format!("<{id}ff@example.com>")).is_none());
        assert!(identity_in_message_id("<CAF=abc@mail.gmail.com>").is_none());
    }
}
