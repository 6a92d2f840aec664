//! The email a message describes: its template (if it names one) rendered
//! strictly with its data, then composed and checked. Bulk messages build
//! one per recipient, with the recipient's data laid over the message's.

use serde_json::{Value, json};

use super::deliverability;
use crate::api::{EmailMessageSpec, EmailProviderSpec, EmailTemplate};
use crate::{compose, render};

/// The email `spec` describes, through `provider` (its default sender,
/// unsubscribe and tracking; `hosting` for a hosted unsubscribe). The error
/// names the field.
pub fn build(
    spec: &EmailMessageSpec,
    template: Option<&EmailTemplate>,
    provider: &EmailProviderSpec,
    key: &str,
    hosting: deliverability::Hosting<'_>,
) -> Result<compose::Email, String> {
    let data = spec.data.clone().unwrap_or_else(|| json!({}));
    let rendered;
    let spec = match (template, &spec.template_ref) {
        (Some(template), Some(template_ref)) => match render::render(&template.spec, &data) {
            Ok(out) => {
                let mut with_body = spec.clone();
                with_body.subject = out.subject;
                with_body.text = out.text;
                with_body.html = out.html;
                rendered = with_body;
                &rendered
            }
            Err(e) => return Err(format!("spec.templateRef ({:?}): {e}", template_ref.name)),
        },
        _ => spec,
    };
    let default_from = provider.default_from.as_deref();
    let mut email = compose::compose(spec, default_from, key).map_err(|e| e.to_string())?;
    deliverability::apply(&mut email, spec, provider, &data, hosting)?;
    Ok(email)
}

/// The single message a bulk message's recipient `i` gets: to them alone,
/// with their data laid over the message's, on the message's list.
pub fn recipient_spec(
    spec: &EmailMessageSpec,
    i: usize,
    provider_unsubscribe: Option<&crate::api::deliverability::Unsubscribe>,
) -> Option<EmailMessageSpec> {
    let recipient = spec.recipients.get(i)?;
    let mut one = spec.clone();
    one.recipients = Vec::new();
    one.list = crate::api::deliverability::list_of(spec, provider_unsubscribe);
    one.to = vec![recipient.to.clone()];
    one.data = Some(merged_data(spec.data.as_ref(), recipient.data.as_ref()));
    Some(one)
}

/// The message's data with a recipient's laid over it (top-level keys).
pub fn merged_data(message: Option<&Value>, recipient: Option<&Value>) -> Value {
    let mut data = message.cloned().unwrap_or_else(|| json!({}));
    if let (Some(base), Some(Value::Object(own))) = (data.as_object_mut(), recipient) {
        for (key, value) in own {
            base.insert(key.clone(), value.clone());
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_data_is_laid_over_the_message_data() {
        let message = json!({"plan": "free", "team": "a"});
        let own = json!({"plan": "pro", "name": "Bo"});
        assert_eq!(
            merged_data(Some(&message), Some(&own)),
            json!({"plan": "pro", "team": "a", "name": "Bo"})
        );
        assert_eq!(merged_data(None, None), json!({}));
    }
}
