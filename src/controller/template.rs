//! Reconciles EmailTemplates: parses every part, renders it strictly with
//! `exampleData` when given, and reports it in `Valid` and `Ready` (Parsed,
//! or InvalidTemplate naming the part and the line and column, or the
//! missing variable).

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::context::Context;
use super::error::Error;
use crate::api::EmailTemplate;
use crate::api::condition::{self, READY, Reason, VALID};
use crate::render;

/// Reconciles one template.
#[tracing::instrument(skip_all, fields(namespace = template.namespace().unwrap_or_default(), template = template.name_any()))]
pub async fn reconcile(template: Arc<EmailTemplate>, ctx: Arc<Context>) -> Result<Action, Error> {
    let generation = template.metadata.generation;
    let old = template.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.observed_generation = generation;
    let (valid, reason, text) = match render::validate(&template.spec) {
        Ok(()) if template.spec.example_data.is_some() => (
            true,
            Reason::Parsed,
            "every part parses and renders strictly with spec.exampleData".to_string(),
        ),
        Ok(()) => (true, Reason::Parsed, "every part parses".to_string()),
        Err(e) => (false, Reason::InvalidTemplate, e),
    };
    for type_ in [VALID, READY] {
        condition::set(&mut new.conditions, type_, valid, reason, &text, generation);
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
