//! One-click unsubscribe headers and tracking settings for a message's
//! emails: the message's own, else the provider's defaults (its
//! unsubscribe for bulk messages and messages on a list only). The
//! unsubscribe URL is a Handlebars template rendered for each recipient,
//! every value percent-encoded, so no recipient's data can break out of the
//! URL; or, hosted, mailroom's own endpoint with a sealed token naming the
//! recipient on the message's list.

use handlebars::{Handlebars, RenderErrorReason};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::api::deliverability::{URL_MAX_LENGTH, Unsubscribe, in_effect, list_of};
use crate::api::provider::ApiProvider;
use crate::api::{EmailMessageSpec, EmailProviderSpec};
use crate::compose::Email;
use crate::delivery::unsubscribe::token::KeyRing;
use crate::delivery::unsubscribe::{path, subject};

/// What a hosted unsubscribe needs beside the message: the message's
/// namespace and the keys (none when no hosted unsubscribe is in effect).
#[derive(Clone, Copy, Default)]
pub struct Hosting<'a> {
    /// The message's namespace.
    pub namespace: &'a str,
    /// The unsubscribe keys.
    pub keys: Option<&'a KeyRing>,
}

/// Whether `spec`'s emails carry a hosted unsubscribe through `provider`.
pub fn needs_hosting(spec: &EmailMessageSpec, provider: &EmailProviderSpec) -> bool {
    in_effect(spec, provider.unsubscribe.as_ref()).is_some_and(|u| u.hosted.is_some())
}

/// What a value may keep unencoded in a URL: RFC 3986 unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 8058's one-click POST body, the value of `List-Unsubscribe-Post`.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// Sets `email`'s tracking and unsubscribe headers from the message and its
/// provider. `data` is what the recipient's email was rendered with;
/// `bulk` says it is one recipient's email of a bulk message. The error
/// names the field.
pub fn apply(
    email: &mut Email,
    spec: &EmailMessageSpec,
    provider: &EmailProviderSpec,
    data: &Value,
    hosting: Hosting<'_>,
) -> Result<(), String> {
    email.tracking = spec
        .tracking
        .unwrap_or_default()
        .over(provider.tracking.unwrap_or_default());
    let Some(unsubscribe) = in_effect(spec, provider.unsubscribe.as_ref()) else {
        return Ok(());
    };
    let field = if spec.unsubscribe.is_some() {
        "spec.unsubscribe.url"
    } else {
        "the provider's spec.unsubscribe.url"
    };
    // A bulk email has one recipient; a single message's URL names its
    // first (of to, then cc, then bcc; compose makes sure there is one).
    let first = email.to.iter().chain(&email.cc).chain(&email.bcc).next();
    let recipient = first.map(|m| m.email.to_string()).unwrap_or_default();
    let made = match &unsubscribe.hosted {
        Some(hosted) => {
            let list = list_of(spec, provider.unsubscribe.as_ref()).unwrap_or_default();
            let keys = hosting.keys.ok_or_else(|| {
                format!("{}: no unsubscribe keys", field.replace(".url", ".hosted"))
            })?;
            let token = keys.seal(hosting.namespace, &list, &recipient);
            let url = format!(
                "{}{}",
                hosted.base_url.trim_end_matches('/'),
                path(hosting.namespace, &list, &token)
            );
            let mailbox = provider.smtp.as_ref().and_then(|s| s.bounces.as_ref());
            let mailbox = mailbox.map(|b| b.address.as_str());
            hosted_headers(
                &url,
                unsubscribe.mailto.as_deref(),
                mailbox,
                &subject(hosting.namespace, &list, &token),
            )
        }
        None => headers(unsubscribe, &recipient, data, field)?,
    };
    email.headers.extend(made);
    email.headers.sort();
    Ok(())
}

/// The headers of a hosted unsubscribe: the URL, and a mailto address of
/// the message's own, or else on the bounce mailbox with the token in the
/// subject.
fn hosted_headers(
    url: &str,
    mailto: Option<&str>,
    mailbox: Option<&str>,
    subject: &str,
) -> Vec<(String, String)> {
    let mut targets = vec![format!("<{url}>")];
    match (mailto, mailbox) {
        (Some(own), _) => targets.push(format!("<mailto:{own}?subject=unsubscribe>")),
        (None, Some(mailbox)) => {
            let subject = utf8_percent_encode(subject, UNRESERVED);
            targets.push(format!("<mailto:{mailbox}?subject={subject}>"));
        }
        (None, None) => {}
    }
    vec![
        ("List-Unsubscribe".to_string(), targets.join(", ")),
        ("List-Unsubscribe-Post".to_string(), ONE_CLICK.to_string()),
    ]
}

/// Whether a bulk message, or one on a list, goes out without one-click
/// unsubscribe.
pub fn lacks_unsubscribe(spec: &EmailMessageSpec, provider: &EmailProviderSpec) -> bool {
    (!spec.recipients.is_empty() || spec.list.is_some())
        && in_effect(spec, provider.unsubscribe.as_ref()).is_none()
}

/// Why the message's own tracking cannot be honoured by its provider, if
/// it cannot: only Postmark, Mailgun and SendGrid take it per message.
pub fn tracking_refusal(spec: &EmailMessageSpec, provider: &EmailProviderSpec) -> Option<String> {
    spec.tracking.filter(|t| !t.is_empty())?;
    let service = match &provider.api {
        None => "an SMTP server does not track opens or clicks",
        Some(api) => match api.provider {
            ApiProvider::Mailtrap => "Mailtrap sets tracking per sending domain, not per message",
            ApiProvider::Resend => "Resend sets tracking per sending domain, not per message",
            ApiProvider::Postmark | ApiProvider::Mailgun | ApiProvider::SendGrid => return None,
        },
    };
    Some(format!(
        "spec.tracking: {service}; remove it (only Postmark, Mailgun and SendGrid take tracking per message)"
    ))
}

/// The `List-Unsubscribe` header (and `List-Unsubscribe-Post` when there is
/// a URL) for `recipient`.
pub fn headers(
    unsubscribe: &Unsubscribe,
    recipient: &str,
    data: &Value,
    field: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut targets = Vec::new();
    if let Some(template) = &unsubscribe.url {
        targets.push(format!("<{}>", url(template, recipient, data, field)?));
    }
    if let Some(address) = &unsubscribe.mailto {
        if !address.contains('@')
            || address
                .chars()
                .any(|c| c.is_whitespace() || "<>,?".contains(c) || c.is_control())
        {
            return Err(format!(
                "{}: not an address",
                field.replace(".url", ".mailto")
            ));
        }
        targets.push(format!("<mailto:{address}?subject=unsubscribe>"));
    }
    let mut headers = vec![("List-Unsubscribe".to_string(), targets.join(", "))];
    if unsubscribe.url.is_some() {
        headers.push(("List-Unsubscribe-Post".to_string(), ONE_CLICK.to_string()));
    }
    Ok(headers)
}

/// The URL for `recipient`: the template rendered strictly, each value
/// percent-encoded, and the result checked to be an https URL.
fn url(template: &str, recipient: &str, data: &Value, field: &str) -> Result<String, String> {
    if template.contains("{{{") || template.contains("{{&") {
        return Err(format!(
            "{field}: {{{{{{...}}}}}} and {{{{&...}}}} would leave a value unencoded"
        ));
    }
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(|value| utf8_percent_encode(value, UNRESERVED).to_string());
    let mut values = match data {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    values.insert("recipient".into(), Value::from(recipient));
    let rendered = hb
        .render_template(template, &values)
        .map_err(|e| match e.reason() {
            RenderErrorReason::MissingVariable(Some(name)) => {
                format!("{field} uses \"{name}\", which the message's data does not set")
            }
            _ => format!("{field} could not be rendered: {e}"),
        })?;
    let parsed = reqwest::Url::parse(&rendered)
        .map_err(|e| format!("{field}: the rendered URL is not a URL: {e}"))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{field}: the rendered URL must be https:// with a host"
        ));
    }
    if rendered.len() > URL_MAX_LENGTH
        || rendered
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,\"'".contains(c))
    {
        return Err(format!(
            "{field}: the rendered URL must be at most {URL_MAX_LENGTH} characters without spaces, quotes, <, > or ,"
        ));
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both() -> Unsubscribe {
        Unsubscribe {
            url: Some("https://example.com/u?list=news&id={{userId}}&to={{recipient}}".into()),
            mailto: Some("unsubscribe@example.com".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_headers_follow_rfc_8058_with_values_percent_encoded() {
        let data = json!({"userId": "a b&c=d/<x>"});
        let headers = headers(
            &both(),
            "bo+news@example.org",
            &data,
            "spec.unsubscribe.url",
        )
        .expect("headers");
        assert_eq!(
            headers,
            vec![
                (
                    "List-Unsubscribe".to_string(),
                    "<https://example.com/u?list=news&id=a%20b%26c%3Dd%2F%3Cx%3E&to=bo%2Bnews%40example.org>, <mailto:unsubscribe@example.com?subject=unsubscribe>".to_string()
                ),
                ("List-Unsubscribe-Post".to_string(), ONE_CLICK.to_string()),
            ]
        );
    }

    #[test]
    fn the_admission_policy_lets_through_the_services_the_controller_does() {
        let policy = include_str!("../../../deploy/base/admission-policy.yaml");
        let chart = include_str!("../../../charts/mailroom/templates/admission-policy.yaml");
        let mut takes = Vec::new();
        for service in [
            ApiProvider::Mailtrap,
            ApiProvider::Resend,
            ApiProvider::Postmark,
            ApiProvider::Mailgun,
            ApiProvider::SendGrid,
        ] {
            let spec: EmailMessageSpec = serde_json::from_value(json!({
                "providerRef": {"name": "p"}, "to": ["a@example.org"], "subject": "s",
                "text": "t", "tracking": {"opens": true}}))
            .expect("spec");
            let provider: EmailProviderSpec = serde_json::from_value(json!({
                "api": {"provider": service.name(), "secretRef": {"name": "k"}}}))
            .expect("provider");
            if tracking_refusal(&spec, &provider).is_none() {
                takes.push(format!("'{}'", service.name()));
            }
        }
        let list = format!("params.spec.api.provider in [{}]", takes.join(", "));
        assert_eq!(policy.matches(&list).count(), 2, "{list}");
        assert_eq!(chart.matches(&list).count(), 2, "{list}");
    }

    #[test]
    fn a_single_message_to_bcc_only_names_its_first_recipient() {
        let spec: EmailMessageSpec = serde_json::from_value(json!({
            "providerRef": {"name": "p"}, "bcc": ["hidden@example.org"], "subject": "s",
            "text": "t", "unsubscribe": {"url": "https://example.com/u/{{recipient}}"}}))
        .expect("spec");
        let provider: EmailProviderSpec =
            serde_json::from_value(json!({"smtp": {"host": "smtp.example.com"}})).expect("spec");
        let mut email =
            crate::compose::compose(&spec, Some("from@example.com"), "k").expect("email");
        apply(&mut email, &spec, &provider, &json!({}), Hosting::default()).expect("applied");
        let list = email.headers.iter().find(|(n, _)| n == "List-Unsubscribe");
        assert_eq!(
            list.map(|(_, v)| v.as_str()),
            Some("<https://example.com/u/hidden%40example.org>")
        );
    }

    #[test]
    fn a_hosted_unsubscribe_names_the_recipient_on_the_list_with_a_sealed_token() {
        use crate::delivery::unsubscribe::token::SealKey;
        let keys = KeyRing {
            current: SealKey::new(&[3; 32]).expect("key"),
            previous: None,
        };
        let spec: EmailMessageSpec = serde_json::from_value(json!({
            "providerRef": {"name": "p"}, "subject": "s", "text": "t",
            "recipients": [{"to": "Ann@example.org"}], "list": "news"}))
        .expect("spec");
        let provider: EmailProviderSpec = serde_json::from_value(json!({
            "smtp": {"host": "smtp.example.com",
                     "bounces": {"address": "bounces@example.com", "pop3": {"host": "pop.example.com"},
                                 "secretRef": {"name": "b"}}},
            "unsubscribe": {"hosted": {"baseURL": "https://mail.example.com/mr"}}}))
        .expect("provider");
        let mut single = spec.clone();
        single.recipients.clear();
        single.to = vec!["Ann@example.org".into()];
        let mut email =
            crate::compose::compose(&single, Some("f@example.com"), "k").expect("email");
        let hosting = Hosting {
            namespace: "shop",
            keys: Some(&keys),
        };
        apply(&mut email, &single, &provider, &json!({}), hosting).expect("applied");
        let token = keys.seal("shop", "news", "ann@example.org");
        let header = |name: &str| {
            email
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("List-Unsubscribe"),
            Some(format!(
                "<https://mail.example.com/mr/unsubscribe/shop/news/{token}>, <mailto:bounces@example.com?subject=unsubscribe%20shop.news.{token}>"
            ))
        );
        assert_eq!(header("List-Unsubscribe-Post").as_deref(), Some(ONE_CLICK));
        // Without the keys, the field is named.
        let mut email =
            crate::compose::compose(&single, Some("f@example.com"), "k").expect("email");
        let error = apply(
            &mut email,
            &single,
            &provider,
            &json!({}),
            Hosting::default(),
        )
        .expect_err("no keys");
        assert!(error.contains("spec.unsubscribe.hosted"), "{error}");
        // A transactional message carries none of the provider's.
        let mut transactional = single.clone();
        transactional.list = None;
        let mut email =
            crate::compose::compose(&transactional, Some("f@example.com"), "k").expect("email");
        apply(&mut email, &transactional, &provider, &json!({}), hosting).expect("applied");
        assert!(header_of(&email, "List-Unsubscribe").is_none());
        assert!(needs_hosting(&spec, &provider) && !needs_hosting(&transactional, &provider));
    }

    fn header_of(email: &Email, name: &str) -> Option<String> {
        email
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn mailto_alone_has_no_one_click_post() {
        let only_mail = Unsubscribe {
            url: None,
            mailto: Some("u@example.com".into()),
            ..Default::default()
        };
        let headers = headers(&only_mail, "a@example.org", &json!({}), "f").expect("headers");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, "<mailto:u@example.com?subject=unsubscribe>");
    }

    #[test]
    fn a_missing_variable_or_a_url_that_is_not_https_names_the_field() {
        let error = headers(&both(), "a@example.org", &json!({}), "spec.unsubscribe.url")
            .expect_err("userId is missing");
        assert!(
            error.contains("spec.unsubscribe.url uses \"userId\""),
            "{error}"
        );
        let plain = Unsubscribe {
            url: Some("{{site}}/u".into()),
            ..Default::default()
        };
        // A value cannot make the URL another scheme or host: it is encoded.
        let error = headers(
            &plain,
            "a@example.org",
            &json!({"site": "https://evil.example"}),
            "f",
        )
        .expect_err("not a URL");
        assert!(error.contains("f: the rendered URL"), "{error}");
        // Nor can a triple-stash leave one unencoded.
        let raw = Unsubscribe {
            url: Some("https://example.com/u?x={{{site}}}".into()),
            ..Default::default()
        };
        let error =
            headers(&raw, "a@example.org", &json!({"site": "a>b"}), "f").expect_err("unencoded");
        assert!(error.contains("would leave a value unencoded"), "{error}");
    }
}
