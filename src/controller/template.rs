//! Reconciles EmailTemplates: parses every part and reports it in `Ready`
//! (Parsed, or InvalidTemplate naming the part, line and column).

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::Error;
use crate::api::EmailTemplate;
use crate::api::condition::{self, READY, Reason};
use crate::render;

/// Reconciles one template.
#[tracing::instrument(skip_all, fields(namespace = template.namespace().unwrap_or_default(), template = template.name_any()))]
pub async fn reconcile(template: Arc<EmailTemplate>, ctx: Arc<Context>) -> Result<Action, Error> {
    let generation = template.metadata.generation;
    let old = template.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.observed_generation = generation;
    match render::check(&template.spec) {
        Ok(()) => condition::set(
            &mut new.conditions,
            READY,
            true,
            Reason::Parsed,
            "every part parses",
            generation,
        ),
        Err(e) => condition::set(
            &mut new.conditions,
            READY,
            false,
            Reason::InvalidTemplate,
            e,
            generation,
        ),
    }
    if old.observed_generation != new.observed_generation
        || !condition::same_meaning(&old.conditions, &new.conditions)
    {
        let api: Api<EmailTemplate> = Api::namespaced(
            ctx.client.clone(),
            &template.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({ "status": new });
        api.patch_status(
            &template.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(Action::await_change())
}
