//! Sent once per intent: before a message's first attempt, the ledger is
//! asked whether the same message (its identity: namespace, name and spec,
//! or its idempotency key) was sent within its provider's window. If it
//! was, the message ends Sent with reason AlreadySent, naming the original
//! send. `mailroom.dev/retry=true` skips the question.

use kube::ResourceExt;

use super::gate::Stop;
use crate::api::EmailMessage;
use crate::api::message::RETRY_ANNOTATION;
use crate::controller::context::Context;
use crate::controller::error::Error;

/// `Some` when `message` must not be sent because it was sent before.
pub async fn check(ctx: &Context, message: &EmailMessage) -> Result<Option<Stop>, Error> {
    let attempted = message.status.as_ref().is_some_and(|s| s.attempts > 0);
    if attempted || message.annotations().contains_key(RETRY_ANNOTATION) {
        return Ok(None);
    }
    let entry = ctx.ledger.lookup(&ctx.client, message).await?;
    Ok(entry.map(|entry| Stop::AlreadySent(Box::new(entry))))
}
