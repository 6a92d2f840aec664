//! `mailroom render`: what a message would send, without a cluster or a
//! server. The message (and its template and provider, from files or, with
//! `--from-cluster`, from the cluster) goes through the controller's own
//! code: the template rendered strictly, the email composed and checked,
//! unsubscribe headers and tracking set (a hosted unsubscribe with a
//! throwaway key), a bulk recipient's email built as the controller builds
//! it. Nothing is sent and DKIM is off. `files` reads the manifests,
//! `lines` finds the line a field is on, `output` prints the result.

pub mod command;
pub mod files;
pub mod lines;
pub mod output;

use serde_json::Value;

use crate::api::{EmailMessage, EmailProviderSpec, EmailTemplate};
use crate::compose::Email;
use crate::controller::message::deliverability::Hosting;
use crate::controller::message::email;
use crate::delivery::unsubscribe::token::{KeyRing, SealKey};

/// What a render needs.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The message.
    pub message: EmailMessage,
    /// Its template, when it names one.
    pub template: Option<EmailTemplate>,
    /// Its provider's spec (its default sender, unsubscribe, tracking), if
    /// known.
    pub provider: Option<EmailProviderSpec>,
    /// Data laid over the message's (`--data`).
    pub data: Option<Value>,
    /// The bulk recipient to render (index in `spec.recipients`).
    pub recipient: usize,
    /// The key a hosted unsubscribe's token is sealed with (unset: a
    /// throwaway random one).
    pub unsubscribe_key: Option<Vec<u8>>,
}

/// Why a message cannot be rendered: what, and the field it names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    /// The error, naming the field.
    pub message: String,
}

fn error(message: impl Into<String>) -> RenderError {
    RenderError {
        message: message.into(),
    }
}

/// The email `inputs` describe, exactly as the controller would build it.
pub fn render(inputs: &Inputs) -> Result<Email, RenderError> {
    let mut spec = inputs.message.spec.clone();
    if let Some(extra) = &inputs.data {
        spec.data = Some(email::merged_data(spec.data.as_ref(), Some(extra)));
    }
    let provider = match inputs.provider.clone() {
        Some(provider) => provider,
        None => bare_provider()?,
    };
    if let (Some(reference), None) = (&spec.template_ref, &inputs.template) {
        return Err(error(format!(
            "spec.templateRef: EmailTemplate {:?} was not given (add it with -f, or use --from-cluster)",
            reference.name
        )));
    }
    if let (Some(reference), Some(template)) = (&spec.template_ref, &inputs.template)
        && template.metadata.name.as_deref() != Some(reference.name.as_str())
    {
        return Err(error(format!(
            "spec.templateRef: names {:?}, but the template given is {:?}",
            reference.name,
            template.metadata.name.as_deref().unwrap_or_default()
        )));
    }
    let bulk = !spec.recipients.is_empty();
    let one = if bulk {
        let count = spec.recipients.len();
        email::recipient_spec(&spec, inputs.recipient, provider.unsubscribe.as_ref()).ok_or_else(
            || {
                error(format!(
                    "--recipient {}: the message has {count} recipients (0 to {})",
                    inputs.recipient,
                    count.saturating_sub(1)
                ))
            },
        )?
    } else {
        spec
    };
    let namespace = inputs
        .message
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let keys = match &inputs.unsubscribe_key {
        Some(material) => SealKey::new(material).ok().map(|current| KeyRing {
            current,
            previous: None,
        }),
        None => throwaway_keys(),
    };
    let hosting = Hosting {
        namespace: &namespace,
        keys: keys.as_ref(),
    };
    let key = format!(
        "render-{}",
        inputs.message.metadata.name.as_deref().unwrap_or("message")
    );
    let given = inputs.provider.is_some();
    let mut built = email::build(&one, inputs.template.as_ref(), &provider, &key, hosting)
        .map_err(|e| {
            let e = if bulk {
                e.replace(
                    "spec.to[0]",
                    &format!("spec.recipients[{}].to", inputs.recipient),
                )
            } else {
                e
            };
            match given {
                false if e.contains("defaultFrom") || e.contains("unsubscribe") => error(format!(
                    "{e} (the provider was not given: add it with -f, or use --from-cluster)"
                )),
                _ => error(e),
            }
        })?;
    built.headers.sort();
    Ok(built)
}

/// A provider that adds nothing: no default sender, no unsubscribe.
fn bare_provider() -> Result<EmailProviderSpec, RenderError> {
    serde_json::from_value(serde_json::json!({"smtp": {"host": "render.invalid"}}))
        .map_err(|e| error(format!("a provider with no settings: {e}")))
}

/// Keys for a hosted unsubscribe's token: random, thrown away (the link is
/// the right shape, but opens nowhere).
fn throwaway_keys() -> Option<KeyRing> {
    let material = crate::delivery::unsubscribe::token::generate()?;
    Some(KeyRing {
        current: SealKey::new(&material).ok()?,
        previous: None,
    })
}

#[cfg(test)]
mod examples;
