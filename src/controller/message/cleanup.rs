//! Deletes a finished message once its `ttlSecondsAfterFinished` (or its
//! provider's) has passed; otherwise leaves it, or looks again when due.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use tracing::info;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::clock::remaining;
use super::inputs::provider_of;
use crate::api::EmailMessage;
use crate::api::condition::{self, SENT};
use crate::controller::context::Context;
use crate::controller::error::Error;

/// Deletes `message` if its time to live has passed.
pub async fn clean_up(message: &EmailMessage, ctx: &Context) -> Result<Action, Error> {
    let (provider, _) = provider_of(message, ctx);
    let ttl = message
        .spec
        .ttl_seconds_after_finished
        .or_else(|| provider.and_then(|p| p.spec.ttl_seconds_after_finished));
    let Some(ttl) = ttl else {
        return Ok(Action::await_change());
    };
    let status = message.status.clone().unwrap_or_default();
    let finished = status
        .sent_time
        .as_ref()
        .or_else(|| condition::find(&status.conditions, SENT).map(|c| &c.last_transition_time))
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now);
    let Ok(due) = finished.checked_add(jiff::SignedDuration::from_secs(i64::from(ttl))) else {
        return Ok(Action::await_change());
    };
    if let Some(left) = remaining(&Time(due)) {
        return Ok(Action::requeue(left));
    }
    let api: Api<EmailMessage> =
        Api::namespaced(ctx.client.clone(), &message.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: message.uid(),
            resource_version: message.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&message.name_any(), &params).await {
        Ok(_) => {
            info!(
                ttl_seconds = ttl,
                "deleted after its ttlSecondsAfterFinished"
            );
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(Error::Kube(e)),
    }
}
