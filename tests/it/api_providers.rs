//! Sending through the HTTP APIs of Mailtrap, Resend, Postmark, Mailgun and
//! SendGrid, against strict local fakes of their documented wire formats,
//! with the controller on the real apiserver. Every scenario runs for each
//! of the five services.

use crate::support;

use std::time::Duration;

use crate::support::fixtures::{Scene, ready_reason};
use mailroom::api::Phase;
use mailroom_fakes::{Failure, Recorded, Service};
use serde_json::{Value, json};

const KEY: &str = support::fixtures::VALID_API_KEY;

/// The message every scenario sends: cc, bcc, reply-to, html and text, and a
/// custom header.
fn full_message(subject: &str) -> Value {
    json!({
        "providerRef": {"name": "api"},
        "from": "Sender <sender@example.com>",
        "to": ["Alice <alice@example.org>"],
        "cc": ["carol@example.org"],
        "bcc": ["bob@example.org"],
        "replyTo": ["Support <support@example.com>"],
        "subject": subject,
        "text": "Hello in text",
        "html": "<p>Hello in html</p>",
        "headers": {"X-Campaign": "spring"}
    })
}

/// What each service documents for that message (the provider-apis reference).
fn documented_request(service: Service, subject: &str) -> (&'static str, Value) {
    match service {
        Service::Mailtrap => (
            "/api/send",
            json!({
                "from": {"email": "sender@example.com", "name": "Sender"},
                "to": [{"email": "alice@example.org", "name": "Alice"}],
                "cc": [{"email": "carol@example.org"}],
                "bcc": [{"email": "bob@example.org"}],
                "reply_to": {"email": "support@example.com", "name": "Support"},
                "subject": subject,
                "text": "Hello in text",
                "html": "<p>Hello in html</p>",
                "headers": {"X-Campaign": "spring"}
            }),
        ),
        Service::Resend => (
            "/emails",
            json!({
                "from": "Sender <sender@example.com>",
                "to": ["Alice <alice@example.org>"],
                "cc": ["carol@example.org"],
                "bcc": ["bob@example.org"],
                "reply_to": ["Support <support@example.com>"],
                "subject": subject,
                "text": "Hello in text",
                "html": "<p>Hello in html</p>",
                "headers": {"X-Campaign": "spring"}
            }),
        ),
        Service::Postmark => (
            "/email",
            json!({
                "From": "Sender <sender@example.com>",
                "To": "Alice <alice@example.org>",
                "Cc": "carol@example.org",
                "Bcc": "bob@example.org",
                "ReplyTo": "Support <support@example.com>",
                "Subject": subject,
                "TextBody": "Hello in text",
                "HtmlBody": "<p>Hello in html</p>",
                "Headers": [{"Name": "X-Campaign", "Value": "spring"}],
                "MessageStream": "outbound"
            }),
        ),
        Service::Mailgun => (
            "/v3/mg.example.com/messages",
            json!([
                ["from", "Sender <sender@example.com>"],
                ["to", "Alice <alice@example.org>"],
                ["cc", "carol@example.org"],
                ["bcc", "bob@example.org"],
                ["subject", subject],
                ["text", "Hello in text"],
                ["html", "<p>Hello in html</p>"],
                ["h:Reply-To", "Support <support@example.com>"],
                ["h:X-Campaign", "spring"]
            ]),
        ),
        Service::SendGrid => (
            "/v3/mail/send",
            json!({
                "personalizations": [{
                    "to": [{"email": "alice@example.org", "name": "Alice"}],
                    "cc": [{"email": "carol@example.org"}],
                    "bcc": [{"email": "bob@example.org"}]
                }],
                "from": {"email": "sender@example.com", "name": "Sender"},
                "reply_to": {"email": "support@example.com", "name": "Support"},
                "subject": subject,
                "content": [{"type": "text/plain", "value": "Hello in text"}, {"type": "text/html", "value": "<p>Hello in html</p>"}],
                "headers": {"X-Campaign": "spring"}
            }),
        ),
    }
}

/// `body` with the message's origin where `service` takes the metadata it
/// echoes: Mailtrap `custom_variables`, Resend `tags`, Postmark `Metadata`,
/// Mailgun `v:` fields, SendGrid `custom_args`.
fn with_origin(service: Service, body: &mut Value, origin: &[(String, String)]) {
    let object: serde_json::Map<String, Value> =
        origin.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    match service {
        Service::Mailtrap => body["custom_variables"] = Value::Object(object),
        Service::Resend => {
            body["tags"] = origin
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect()
        }
        Service::Postmark => body["Metadata"] = Value::Object(object),
        Service::Mailgun => {
            let fields = body.as_array_mut().expect("form fields");
            fields.extend(origin.iter().map(|(k, v)| json!([format!("v:{k}"), v])));
        }
        Service::SendGrid => body["custom_args"] = Value::Object(object),
    }
}

/// The Ready reason a correctly configured provider reaches: services with a
/// read-only authenticated call are Verified; the others Configured.
fn ready_reason_for(service: Service) -> &'static str {
    match service {
        Service::Postmark | Service::Mailgun | Service::SendGrid => "Verified",
        Service::Mailtrap | Service::Resend => "Configured",
    }
}

/// The id the status must hold for an accepted request.
fn expected_id(service: Service, accepted: &Recorded) -> String {
    let id = accepted.id.clone().expect("accepted id");
    match service {
        Service::Mailgun => id.trim_matches(['<', '>']).to_string(),
        _ => id,
    }
}

async fn documented_request_is_sent(service: Service) {
    let (scene, fake, controller) = support::fixtures::api_scene(service, "full", KEY).await;
    scene.wait_provider("api", ready_reason_for(service)).await;
    let subject = format!("{service:?} full message");
    scene.message("full", full_message(&subject)).await;
    let sent = scene.wait_phase("full", Phase::Sent).await;

    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 1, "one request: {:?}", fake.requests());
    let (path, mut body) = documented_request(service, &subject);
    with_origin(service, &mut body, &support::origin(&sent));
    assert_eq!(accepted[0].path, path);
    assert_eq!(
        accepted[0].body, body,
        "the request is exactly the documented one"
    );
    let status = sent.status.clone().expect("status");
    assert_eq!(
        status.provider_message_id.as_deref(),
        Some(expected_id(service, &accepted[0]).as_str())
    );
    assert_eq!(status.attempts, 1);
    assert!(
        status.message_id.is_none(),
        "the service sets its own Message-ID"
    );
    match service {
        Service::Mailtrap => {
            assert_eq!(status.provider_message_ids.len(), 3, "one id per recipient")
        }
        Service::Resend => {
            let key = accepted[0]
                .headers
                .get("idempotency-key")
                .expect("Idempotency-Key");
            assert_eq!(
                key,
                &format!(
                    "mailroom/{}",
                    mailroom::ledger::Identity::of(&sent).as_str()
                )
            );
        }
        _ => {}
    }
    controller.stop().await;
}

async fn wrong_key_makes_the_provider_auth_failed(service: Service) {
    let (scene, fake, controller) =
        support::fixtures::api_scene(service, "wrong-key", "wrong-key").await;
    scene
        .note("blocked", "api", &format!("{service:?} wrong key"))
        .await;
    let provider = scene.wait_provider("api", "AuthFailed").await;
    let ready = &provider.status.expect("status").conditions[0];
    assert!(
        !ready.message.contains("wrong-key") && !ready.message.contains(KEY),
        "no key in status: {}",
        ready.message
    );
    let waiting = scene.wait_reason("blocked", "ProviderNotReady").await;
    assert_eq!(waiting.status.and_then(|s| s.phase), Some(Phase::Pending));
    assert!(fake.accepted().is_empty(), "nothing was sent");
    // Services without a read-only check learn of the bad key from one send,
    // then stay AuthFailed instead of trying the same key again.
    let attempts = fake.posts().len();
    let expected = match service {
        Service::Mailtrap | Service::Resend => 1,
        _ => 0,
    };
    assert_eq!(attempts, expected, "{:?}", fake.requests());
    let again = scene.wait_provider("api", "AuthFailed").await;
    assert_eq!(ready_reason(&again), "AuthFailed");
    controller.stop().await;
}

async fn rate_limit_is_honoured_then_sent(service: Service) {
    let (scene, fake, controller) =
        support::fixtures::api_scene(service, "rate-limited", KEY).await;
    scene.wait_provider("api", ready_reason_for(service)).await;
    let wait = 7;
    fake.fail_next(Failure {
        status: 429,
        retry_after: Some(wait),
        times: 1,
        delay: Duration::ZERO,
    });
    scene
        .note("limited", "api", &format!("{service:?} rate limited"))
        .await;
    let limited = scene
        .wait_message("limited", "a 429", |m| {
            m.status.as_ref().is_some_and(|s| s.last_error.is_some())
        })
        .await;
    let error = limited
        .status
        .expect("status")
        .last_error
        .expect("last error");
    assert_eq!(
        (error.code, error.retryable),
        (Some(429), true),
        "{error:?}"
    );

    let sent = scene.wait_phase("limited", Phase::Sent).await;
    assert_eq!(sent.status.expect("status").attempts, 2);
    let requests = fake.posts();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let gap = requests[1]
        .at
        .duration_since(requests[0].at)
        .expect("ordered");
    assert!(
        gap >= Duration::from_secs(wait),
        "retried after {gap:?}, before the {wait}s asked"
    );
    assert_eq!(fake.accepted().len(), 1);
    controller.stop().await;
}

async fn server_error_is_retried_then_sent(service: Service) {
    let (scene, fake, controller) =
        support::fixtures::api_scene(service, "server-error", KEY).await;
    scene.wait_provider("api", ready_reason_for(service)).await;
    fake.fail_next(Failure {
        status: 500,
        retry_after: None,
        times: 1,
        delay: Duration::ZERO,
    });
    scene
        .note("retried", "api", &format!("{service:?} server error"))
        .await;
    let sent = scene.wait_phase("retried", Phase::Sent).await;
    let status = sent.status.expect("status");
    assert_eq!(status.attempts, 2);
    assert!(
        status.last_error.is_none(),
        "the error is cleared once sent"
    );
    assert_eq!(fake.posts().len(), 2);
    assert_eq!(fake.accepted().len(), 1);
    controller.stop().await;
}

async fn permanent_rejection_fails_with_the_services_reason(service: Service) {
    let (scene, fake, controller) = support::fixtures::api_scene(service, "rejected", KEY).await;
    scene.wait_provider("api", ready_reason_for(service)).await;
    let (status_code, provider_code) = match service {
        Service::Mailtrap => (400, None),
        Service::Resend => (422, Some("validation_error")),
        Service::Postmark => (422, Some("406")),
        Service::Mailgun => (400, None),
        Service::SendGrid => (400, None),
    };
    if service == Service::Postmark {
        // The real condition: a recipient Postmark has marked inactive.
        let spec = json!({"providerRef": {"name": "api"}, "to": ["inactive@example.org"], "subject": "inactive", "text": "hi"});
        scene.message("refused", spec).await;
    } else {
        fake.fail_next(Failure {
            status: status_code,
            retry_after: None,
            times: 1,
            delay: Duration::ZERO,
        });
        scene
            .note("refused", "api", &format!("{service:?} refused"))
            .await;
    }
    let failed = scene.wait_phase("refused", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("last error");
    assert_eq!(error.reason, "Rejected");
    assert!(!error.retryable);
    assert_eq!(error.code, Some(status_code));
    assert_eq!(error.provider_code.as_deref(), provider_code);
    assert!(
        error
            .message
            .starts_with(&format!("{service:?} answered {status_code}")),
        "{}",
        error.message
    );
    if service == Service::Postmark {
        assert!(
            error.message.contains("inactive@example.org"),
            "{}",
            error.message
        );
    }
    assert_eq!(status.attempts, 1, "not retried");
    assert_eq!(fake.posts().len(), 1);
    let provider = scene.wait_provider("api", ready_reason_for(service)).await;
    assert_eq!(
        ready_reason(&provider),
        ready_reason_for(service),
        "the provider stays Ready"
    );
    controller.stop().await;
}

macro_rules! each_service {
    ($($module:ident => $service:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test]
            async fn sends_the_documented_request() {
                documented_request_is_sent($service).await;
            }

            #[tokio::test]
            async fn wrong_key_is_auth_failed_and_sends_nothing() {
                wrong_key_makes_the_provider_auth_failed($service).await;
            }

            #[tokio::test]
            async fn honours_retry_after_on_429() {
                rate_limit_is_honoured_then_sent($service).await;
            }

            #[tokio::test]
            async fn retries_a_500() {
                server_error_is_retried_then_sent($service).await;
            }

            #[tokio::test]
            async fn fails_a_permanent_rejection_with_the_reason() {
                permanent_rejection_fails_with_the_services_reason($service).await;
            }
        }
    )*};
}

each_service! {
    mailtrap => Service::Mailtrap,
    resend => Service::Resend,
    postmark => Service::Postmark,
    mailgun => Service::Mailgun,
    sendgrid => Service::SendGrid,
}

#[tokio::test]
async fn options_of_another_service_are_refused_at_apply_time() {
    let scene = Scene::new("api-cel").await;
    let key = json!({"name": "k"});
    let cases = [
        (
            json!({"api": {"provider": "Resend", "secretRef": key, "mailgun": {"domain": "mg.example.com"}}}),
            "mailgun options belong to provider Mailgun",
        ),
        (
            json!({"api": {"provider": "Mailgun", "secretRef": key}}),
            "provider Mailgun needs mailgun.domain",
        ),
        (
            json!({"api": {"provider": "SendGrid", "secretRef": key, "postmark": {}}}),
            "postmark options belong to provider Postmark",
        ),
        (
            json!({"api": {"provider": "Postmark", "secretRef": key, "endpoint": "ftp://x"}}),
            "spec.api.endpoint",
        ),
        (
            json!({"api": {"provider": "Sendinblue", "secretRef": key}}),
            "spec.api.provider",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com"}, "api": {"provider": "Resend", "secretRef": key}}),
            "exactly one transport",
        ),
        (json!({}), "exactly one transport"),
        (
            json!({"smtp": {"host": "smtp.example.com", "port": 70000}}),
            "spec.smtp.port",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        scene
            .assert_refused("EmailProvider", &format!("bad-{i}"), spec, expected)
            .await;
    }
}

/// Secrets and ConfigMaps are watched metadata-only: a change to the Secret a
/// provider names still verifies it again at once (the next scheduled check
/// is minutes away), while changes to Secrets and ConfigMaps it does not name
/// (one of them a Helm release record, which the watch leaves out) verify
/// nothing.
#[tokio::test]
async fn only_a_change_to_the_named_secret_verifies_the_provider_again() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, Patch, PatchParams};
    use support::fixtures::create;

    let (scene, fake, controller) =
        support::fixtures::api_scene(Service::Postmark, "secret-watch", KEY).await;
    scene.wait_provider("api", "Verified").await;
    let verifications = || -> Vec<Recorded> {
        fake.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == "/server")
            .collect()
    };
    let before = verifications().len();
    assert!(before >= 1, "the provider was verified");

    create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "unrelated"}, "stringData": {"apiKey": KEY}}),
    )
    .await;
    create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "sh.helm.release.v1.app.v1"}, "type": "helm.sh/release.v1",
               "stringData": {"release": "H4sIAAAA"}}),
    )
    .await;
    create::<ConfigMap>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "unrelated"}, "data": {"k": "v"}}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(scene.client.clone(), &scene.ns);
    let rotate = |key: &str| Patch::Merge(json!({"stringData": {"apiKey": key}}));
    secrets
        .patch("unrelated", &PatchParams::default(), &rotate("another"))
        .await
        .expect("changing the unrelated Secret");

    // One watch carries the Secret changes in order: once the named Secret's
    // change has been acted on, the unrelated ones were seen before it.
    secrets
        .patch("api-key", &PatchParams::default(), &rotate("a-revoked-key"))
        .await
        .expect("changing the named Secret");
    scene.wait_provider("api", "AuthFailed").await;
    let after: Vec<Option<String>> = verifications()[before..]
        .iter()
        .map(|r| r.headers.get("x-postmark-server-token").cloned())
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|k| k.as_deref() == Some("a-revoked-key")),
        "every verification since Verified used the changed Secret's key: {after:?}"
    );
    controller.stop().await;
}

/// A tiny HTTP server inside "the cluster" that answers every request with
/// a page of internal data. Returns its URL and a request counter.
async fn internal_service() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = "INTERNAL-ONLY-DATA: db_password=hunter2";
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

/// An endpoint override is used only for a host the cluster operator
/// allows; otherwise the provider is InvalidSpec and nothing is called. And
/// an answer that is not the service's documented error is described, never
/// copied into status.
#[tokio::test]
async fn endpoint_overrides_need_the_cluster_operators_consent_and_answers_are_not_echoed() {
    use std::sync::atomic::Ordering;
    use support::fixtures::{RunningController, settings};

    let (url, hits) = internal_service().await;
    let scene = Scene::new("endpoint-override").await;
    let controller = RunningController::start_with_settings(
        scene.client.clone(),
        mailroom::controller::Settings {
            allowed_endpoint_hosts: Vec::new(),
            ..settings(&scene.ns)
        },
    );
    scene.api_provider(Service::Postmark, &url, KEY).await;
    let refused = scene.wait_provider("api", "InvalidSpec").await;
    let text = &refused.status.expect("status").conditions[0].message;
    assert!(
        text.contains("spec.api.endpoint") && text.contains("--allowed-endpoint-hosts"),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was called");
    controller.stop().await;

    // Allowed: called, and its answer is described, not echoed.
    let scene = Scene::new("endpoint-allowed").await;
    let controller = scene.controller().await;
    scene.api_provider(Service::Postmark, &url, KEY).await;
    let unreachable = scene.wait_provider("api", "Unreachable").await;
    let text = &unreachable.status.expect("status").conditions[0].message;
    assert!(hits.load(Ordering::SeqCst) >= 1);
    assert!(
        !text.contains("INTERNAL-ONLY-DATA") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("answered 500"), "{text}");
    controller.stop().await;
}

/// A verification the service answers with a 4xx is named by that answer,
/// not called Unreachable: a Mailgun domain the account does not have is
/// NotFound (from the documented `GET /v4/domains/{name}`), and the message
/// waits for the provider.
#[tokio::test]
async fn a_verification_answered_404_says_not_found() {
    use support::fixtures::create;
    let fake = mailroom_fakes::Fake::start(mailroom_fakes::Config::with_key(KEY))
        .await
        .expect("starting the fake");
    let scene = Scene::new("mailgun-domain").await;
    create::<k8s_openapi::api::core::v1::Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "api-key"}, "stringData": {"apiKey": KEY}}),
    )
    .await;
    create::<mailroom::api::EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider", "metadata": {"name": "api"},
               "spec": {"defaultFrom": "tests <tests@mailroom.dev>",
                        "api": {"provider": "Mailgun", "secretRef": {"name": "api-key"}, "endpoint": fake.url,
                                "mailgun": {"domain": "not-ours.example.com"}}}}),
    )
    .await;
    let controller = scene.controller().await;
    let provider = scene.wait_provider("api", "NotFound").await;
    let text = &provider.status.expect("status").conditions[0].message;
    assert!(
        text.contains("answered 404") && text.contains("Domain not found"),
        "{text}"
    );
    let lookups: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(lookups[0], "/v4/domains/not-ours.example.com");
    // Aborted rather than stopped: in parallel runs this controller has
    // twice not finished a graceful stop (cause not found yet; see the
    // closing note of the change that added this test).
    drop(controller);
}

/// The services' published limits are enforced before anything is sent:
/// Resend takes at most 50 `to` addresses, Postmark 50 recipients in all.
/// The message fails at once, naming the field and the limit, and the
/// service is never called.
#[tokio::test]
async fn a_services_published_limits_are_enforced_before_sending() {
    let addresses = |n: usize, kind: &str| -> Vec<String> {
        (0..n).map(|i| format!("{kind}{i}@example.org")).collect()
    };
    for (service, spec, expected) in [
        (
            Service::Resend,
            json!({"to": addresses(60, "t")}),
            "spec.to: 60 addresses; Resend takes at most 50",
        ),
        (
            Service::Postmark,
            json!({"to": addresses(30, "t"), "cc": addresses(30, "c")}),
            "60 recipients in all; Postmark takes at most 50",
        ),
    ] {
        let (scene, fake, controller) = support::fixtures::api_scene(service, "limits", KEY).await;
        let mut message =
            json!({"providerRef": {"name": "api"}, "subject": "too many", "text": "t"});
        if let (Some(message), Some(extra)) = (message.as_object_mut(), spec.as_object()) {
            message.extend(extra.clone());
        }
        scene.message("too-many", message).await;
        let failed = scene.wait_phase("too-many", Phase::Failed).await;
        let error = failed
            .status
            .expect("status")
            .last_error
            .expect("lastError");
        assert_eq!(error.reason, "InvalidRequest", "{service:?}");
        assert!(
            error.message.contains(expected),
            "{service:?}: {}",
            error.message
        );
        assert!(fake.posts().is_empty(), "{service:?}: nothing was sent");
        controller.stop().await;
    }
}

/// Lists the services take as sets (SendGrid's `categories` and
/// `reply_to_list` must have unique items) are refused at apply time when
/// an item repeats.
#[tokio::test]
async fn repeated_tags_and_reply_to_addresses_are_refused_at_apply_time() {
    let scene = Scene::new("unique-lists").await;
    let base = |extra: Value| {
        let mut spec = json!({"providerRef": {"name": "api"}, "to": ["x@example.org"], "subject": "s", "text": "t"});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        spec
    };
    scene
        .assert_refused(
            "EmailMessage",
            "tags",
            base(json!({"tags": ["news", "news"]})),
            "tags must be unique",
        )
        .await;
    scene
        .assert_refused(
            "EmailMessage",
            "reply",
            base(json!({"replyTo": ["help@example.com", "help@example.com"]})),
            "replyTo addresses must be unique",
        )
        .await;
}
