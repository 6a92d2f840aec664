//! Property tests: whatever a tenant writes into an EmailMessage or an
//! EmailProvider (every field, extreme values: times at the ends of the
//! representable range, the largest numbers, control characters, odd
//! addresses), and whatever arrives at the webhook port, goes through
//! decoding, validation, composition and request building without a panic.
//! The inputs are a superset of what the schema lets through, so what the
//! schema refuses is covered too.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::api::provider::ApiProvider;
use crate::api::{EmailMessage, EmailProvider};
use crate::transport::api::{Target, batch_request, request};

/// Text of every kind: plain, unicode, control characters, long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}",
        any::<String>(),
        "[\\x00-\\x1f\\x7f<>\"@,;:()\\[\\]\\\\]{0,12}",
        (0usize..3000).prop_map(|n| "€".repeat(n)),
    ]
}

/// Mailboxes, good and bad.
fn mailbox() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a@example.org".to_string()),
        Just("Support: Team (EU) [ops] <help@example.org>".to_string()),
        Just("\"Smith, A\" <a@example.org>".to_string()),
        text().prop_map(|name| format!("{name} <x@example.org>")),
        text(),
    ]
}

/// Times at the edges of what can be represented, and in between.
fn time() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0001-01-01T00:00:00Z".to_string()),
        Just("1970-01-01T00:00:00Z".to_string()),
        Just("2099-12-31T23:59:59Z".to_string()),
        Just("9999-12-30T21:00:00Z".to_string()),
        Just("9999-12-31T23:59:59Z".to_string()),
        (1i64..4_000_000_000).prop_map(|s| {
            jiff::Timestamp::from_second(s)
                .map_or_else(|_| "2026-01-01T00:00:00Z".into(), |t| t.to_string())
        }),
    ]
}

/// Numbers: small, the largest of every width, negative, fractional.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(u16::MAX)),
        Just(json!(u32::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        any::<u32>().prop_map(|n| json!(n)),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    let addresses = || proptest::collection::vec(mailbox(), 0..4);
    let headers = proptest::collection::btree_map(text(), text(), 0..4);
    (
        (addresses(), addresses(), addresses(), mailbox()),
        (text(), text(), text(), headers),
        (time(), number(), number(), number()),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |((to, cc, bcc, from), (subject, body, html, headers), (send_at, ttl, attempts, deadline), tags)| {
                json!({
                    "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
                    "metadata": {"name": "m", "namespace": "team", "uid": "u-1", "generation": 1,
                                 "creationTimestamp": "2026-12-01T00:00:00Z"},
                    "spec": {"providerRef": {"name": "p"}, "from": from, "to": to, "cc": cc, "bcc": bcc,
                             "subject": subject, "text": body, "html": html, "headers": headers,
                             "sendAt": send_at, "ttlSecondsAfterFinished": ttl, "tags": tags,
                             "retry": {"maxAttempts": attempts, "deadlineSeconds": deadline},
                             "metadata": {"k": "v"}}
                })
            },
        )
}

fn provider() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("Mailtrap"),
            Just("Resend"),
            Just("Postmark"),
            Just("Mailgun"),
            Just("SendGrid")
        ],
        text(),
        number(),
        number(),
        mailbox(),
    )
        .prop_map(|(service, endpoint, timeout, port, from)| {
            json!([
                {"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
                 "metadata": {"name": "p", "namespace": "team"},
                 "spec": {"defaultFrom": from, "api": {"provider": service, "secretRef": {"name": "k"},
                          "endpoint": endpoint, "timeoutSeconds": timeout,
                          "mailgun": {"domain": "mg.example.com"}},
                          "rateLimit": {"messagesPerSecond": timeout, "burst": port}}},
                {"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
                 "metadata": {"name": "s", "namespace": "team"},
                 "spec": {"defaultFrom": from, "smtp": {"host": endpoint, "port": port,
                          "timeoutSeconds": timeout, "tls": "None",
                          "pool": {"maxConnections": port, "idleTimeoutSeconds": timeout}}}}
            ])
        })
}

const SERVICES: [ApiProvider; 5] = [
    ApiProvider::Mailtrap,
    ApiProvider::Resend,
    ApiProvider::Postmark,
    ApiProvider::Mailgun,
    ApiProvider::SendGrid,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_message_decodes_composes_and_builds_without_panicking(object in message()) {
        // Decoding one at a time, as the watch does.
        let guard: kube::core::DeserializeGuard<EmailMessage> =
            serde_json::from_value(object.clone()).expect("any object decodes as a guard");
        if let Err(invalid) = &guard.0 {
            let _ = crate::guarded::mark_patch(invalid, crate::guarded::Mark::Message);
        }
        let Ok(message) = serde_json::from_value::<EmailMessage>(object) else {
            return Ok(());
        };
        let _ = crate::controller::message::fits::check(&message);
        for seconds in [0, 1, 86_400, u32::MAX] {
            let _ = crate::controller::message::deadline(&message, seconds);
        }
        if let Some(at) = message.spec.send_at.as_ref() {
            let _ = crate::controller::message::not_before(at.0, std::time::Duration::from_secs(u64::MAX));
        }
        let Ok(email) = crate::compose::compose(&message.spec, Some("d@example.org"), "u-1") else {
            return Ok(());
        };
        let _ = crate::transport::smtp::to_lettre(&email);
        for service in SERVICES {
            let spec: crate::api::provider::ApiSpec = serde_json::from_value(json!({
                "provider": service, "secretRef": {"name": "k"},
                "mailgun": {"domain": "mg.example.com"}
            })).expect("an api spec");
            let target = Target { base: "https://api.example.com".into(), key: "k".into(), spec };
            let _ = request(service, &target, &email);
            let _ = batch_request(service, &target, std::slice::from_ref(&email));
        }
    }

    #[test]
    fn any_unsubscribe_url_renders_to_one_https_url_or_an_error(
        path in text(),
        value in text(),
        recipient in text(),
    ) {
        use crate::api::deliverability::Unsubscribe;
        let templates = [
            format!("https://example.com/u/{path}?v={{{{value}}}}&r={{{{recipient}}}}"),
            format!("{{{{value}}}}{path}"),
            path.clone(),
        ];
        for url in templates {
            let unsubscribe = Unsubscribe { url: Some(url), mailto: Some("u@example.com".into()), ..Default::default() };
            let data = json!({"value": value});
            let Ok(headers) = crate::controller::message::deliverability::headers(
                &unsubscribe, &recipient, &data, "spec.unsubscribe.url",
            ) else {
                continue;
            };
            // One header line each, the URL https and whole: nothing a
            // value held escaped it.
            for (_, value) in &headers {
                prop_assert!(!value.chars().any(char::is_control), "{value:?}");
            }
            let list = &headers[0].1;
            prop_assert!(list.starts_with("<https://"), "{list}");
            let url = &list[1..list.find('>').expect("closed")];
            prop_assert!(!url.chars().any(|c| c.is_whitespace() || "<>,\"'".contains(c)), "{url}");
            prop_assert!(url.len() <= crate::api::deliverability::URL_MAX_LENGTH);
        }
    }

    #[test]
    fn any_provider_decodes_and_builds_without_panicking(objects in provider()) {
        crate::install_crypto_provider();
        // Transports are built inside the controller's runtime (lettre's
        // pool starts a task).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _inside = runtime.enter();
        for object in objects.as_array().into_iter().flatten() {
            let Ok(provider) = serde_json::from_value::<EmailProvider>(object.clone()) else {
                continue;
            };
            if let Some(api) = &provider.spec.api {
                if let Some(endpoint) = &api.endpoint {
                    let _ = crate::controller::credentials::check_endpoint(endpoint, &["127.0.0.1".into()]);
                }
                let _ = crate::transport::api::ApiTransport::new(api, "k".into());
            }
            if let Some(smtp) = &provider.spec.smtp {
                let _ = crate::transport::smtp::SmtpTransport::new(smtp, None, None);
            }
        }
    }

    #[test]
    fn any_server_answer_is_classified_without_panicking(code in any::<u16>(), reply in text(), seconds in any::<u64>()) {
        let _ = crate::transport::classify::smtp_reply(code, &reply);
        let _ = crate::transport::classify::http(code, code % 2 == 0, code % 3 == 0);
        let _ = crate::controller::message::backoff::delay(code.into(), Some(std::time::Duration::from_secs(seconds)));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&seconds.to_string()) {
            headers.insert("retry-after", value.clone());
            headers.insert("x-ratelimit-reset", value);
        }
        let _ = crate::transport::api::retry_after(&headers);
    }

    #[test]
    fn any_mailbox_message_is_read_without_panicking(raw in proptest::collection::vec(any::<u8>(), 0..4096), header in text(), body in text()) {
        let _ = crate::bounces::report::read(&raw);
        let shaped = format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n{header}\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n{body}\r\n\r\nFinal-Recipient: {header}\r\nAction: {body}\r\nStatus: {body}\r\n--b--\r\n"
        );
        let _ = crate::bounces::report::read(shaped.as_bytes());
        let address = crate::delivery::token::BounceAddress::parse("bounces@example.com").expect("address");
        let _ = address.tokens_in(&body, 8);
    }

    #[test]
    fn any_webhook_request_is_read_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..2048), json_body in text()) {
        let headers = axum::http::HeaderMap::new();
        for service in SERVICES {
            let _ = crate::webhook::payload::read(service, &headers, &body);
            let _ = crate::webhook::payload::read(service, &headers, json_body.as_bytes());
        }
    }

    #[test]
    fn no_unsubscribe_link_or_subject_opens_without_the_key(token in text(), namespace in text(), list in text(), subject in text()) {
        use crate::delivery::unsubscribe::token::{KeyRing, SealKey};
        let keys = KeyRing { current: SealKey::new(&[5; 32]).expect("key"), previous: None };
        // Anything but a token sealed with the key is refused, without a panic.
        prop_assert!(keys.open(&namespace, &list, &token).is_err());
        let _ = keys.knows(&token);
        if let Some((namespace, list, token)) = crate::delivery::unsubscribe::parse_subject(&subject) {
            prop_assert!(keys.open(namespace, list, token).is_err());
        }
    }
}
