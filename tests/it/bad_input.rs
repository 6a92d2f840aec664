//! The bad-input catalogue of docs/bad-input.md: each input is refused at
//! apply time where the schema can tell, otherwise it ends in a terminal or
//! waiting condition that names the field, nothing is sent, and the other
//! messages keep flowing.

use crate::support;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use mailroom::api::Phase;
use serde_json::{Value, json};

fn message(field: &str, value: Value) -> Value {
    let mut spec = json!({"providerRef": {"name": "p"}, "to": ["ok@example.org"], "subject": "s", "text": "t"});
    spec[field] = value;
    spec
}

#[tokio::test]
async fn refused_at_apply_time() {
    let scene = Scene::new("bad-input-apply").await;
    let many: Vec<String> = (0..101).map(|i| format!("r{i}@example.org")).collect();
    let messages = [
        (message("to", json!(["not-an-address"])), "spec.to[0]"),
        (message("to", json!([""])), "spec.to[0]"),
        (message("cc", json!(["a@b@example.org"])), "spec.cc[0]"),
        (
            message("to", json!([])),
            "at least one recipient is required",
        ),
        (
            message("to", json!(many)),
            "spec.to: Too many: 101: must have at most 100 items",
        ),
        (
            message("subject", json!("Hi\r\nBcc: eve@example.org")),
            "spec.subject",
        ),
        (
            message("to", json!(["Eve\r\nBcc: x <eve@example.org>"])),
            "spec.to[0]",
        ),
        (
            message("from", json!("Ops\n <ops@example.org>")),
            "spec.from",
        ),
        (
            message("headers", json!({"X-A": "1\r\nBcc: eve@example.org"})),
            "header values may not contain CR or LF",
        ),
        (
            message("headers", json!({"Message-ID": "<x@y>"})),
            "headers may not set",
        ),
        (
            message("headers", json!({"X Bad": "1"})),
            "header names must be",
        ),
        (message("text", json!("")), "spec.text"),
        (
            json!({"providerRef": {"name": "p"}, "to": ["ok@example.org"], "subject": "s"}),
            "a body is required",
        ),
        (
            message("text", json!("x".repeat(1_048_577))),
            "spec.text: Too long",
        ),
        (
            message("providerRef", json!({})),
            "spec.providerRef.name: Required value",
        ),
        // Times a controller cannot add a deadline to, or decode at all.
        (
            message("sendAt", json!("9999-12-30T21:00:00Z")),
            "sendAt must be before 2100-01-01T00:00:00Z",
        ),
        (
            message("sendAt", json!("9999-12-31T23:59:59Z")),
            "sendAt must be before 2100-01-01T00:00:00Z",
        ),
        (
            json!({"providerRef": {"name": "p"}, "to": ["ok@example.org"], "subject": "s",
                   "text": "x".repeat(600_000), "html": "y".repeat(600_000)}),
            "text and html together may hold at most 1 MiB",
        ),
        // Headers that change routing, MIME structure or authentication.
        (
            message("headers", json!({"Resent-Bcc": "eve@example.org"})),
            "headers may not set",
        ),
        (
            message("headers", json!({"Resent-To": "eve@example.org"})),
            "headers may not set",
        ),
        (
            message("headers", json!({"Received": "from x"})),
            "headers may not set",
        ),
        (
            message("headers", json!({"DKIM-Signature": "v=1"})),
            "headers may not set",
        ),
        (
            message("headers", json!({"Content-Disposition": "attachment"})),
            "headers may not set",
        ),
        (
            message(
                "headers",
                json!({"Disposition-Notification-To": "eve@example.org"}),
            ),
            "headers may not set",
        ),
        (
            message("headers", json!({"X-Mailroom-Metadata": "{}"})),
            "headers may not set",
        ),
        // Control characters other than line breaks.
        (message("subject", json!("a\u{0b}b")), "spec.subject"),
        (message("subject", json!("a\u{0c}b")), "spec.subject"),
        (
            message("headers", json!({"X-A": "a\u{0}b"})),
            "header values may not contain control characters",
        ),
        (
            message("to", json!(["Eve\u{1b}[31m <eve@example.org>"])),
            "spec.to[0]",
        ),
        (
            message("unsubscribe", json!({"url": "http://example.com/u"})),
            "unsubscribe.url must be an https:// URL",
        ),
        (
            message(
                "unsubscribe",
                json!({"url": "https://example.com/u?a=1, <x>"}),
            ),
            "unsubscribe.url may not contain spaces",
        ),
        (
            message(
                "unsubscribe",
                json!({"url": "https://example.com/u?x={{{id}}}"}),
            ),
            "every value is percent-encoded",
        ),
        (
            message("unsubscribe", json!({})),
            "unsubscribe needs a url, hosted or a mailto address",
        ),
        (
            message("unsubscribe", json!({"mailto": "not an address"})),
            "spec.unsubscribe.mailto",
        ),
        (
            message(
                "headers",
                json!({"List-Unsubscribe": "<https://example.com/u>"}),
            ),
            "headers may not set",
        ),
        (message("list", json!("News!")), "spec.list"),
        (
            message(
                "unsubscribe",
                json!({"url": "https://example.com/u", "hosted": {"baseURL": "https://mail.example.com"}}),
            ),
            "unsubscribe takes a url of your own or hosted, not both",
        ),
        (
            message(
                "unsubscribe",
                json!({"hosted": {"baseURL": "http://mail.example.com"}}),
            ),
            "spec.unsubscribe.hosted.baseURL",
        ),
        (
            message(
                "unsubscribe",
                json!({"hosted": {"baseURL": "https://mail.example.com/?next=x"}}),
            ),
            "spec.unsubscribe.hosted.baseURL",
        ),
        // More recipients in one email than the schema allows in all.
        (
            json!({"providerRef": {"name": "p"}, "subject": "s", "text": "t",
                   "to": (0..50).map(|i| format!("t{i}@example.org")).collect::<Vec<_>>(),
                   "cc": (0..50).map(|i| format!("c{i}@example.org")).collect::<Vec<_>>(),
                   "bcc": ["b@example.org"]}),
            "to, cc and bcc together may name at most 100 recipients",
        ),
    ];
    for (i, (spec, expected)) in messages.into_iter().enumerate() {
        scene
            .assert_refused("EmailMessage", &format!("m{i}"), spec, expected)
            .await;
    }
    let providers = [
        (
            json!({"smtp": {"host": "smtp.example.com", "port": 0}}),
            "spec.smtp.port",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com", "tls": "Opportunistic"}}),
            "spec.smtp.tls",
        ),
        (json!({"smtp": {"host": "bad host!"}}), "spec.smtp.host"),
        (
            json!({"api": {"provider": "Sendinblue", "secretRef": {"name": "k"}}}),
            "spec.api.provider",
        ),
        (
            json!({"defaultFrom": "not-an-address", "smtp": {"host": "smtp.example.com"}}),
            "spec.defaultFrom",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com", "bounces": {
                "address": "bounces+already@example.com", "pop3": {"host": "pop.example.com"},
                "secretRef": {"name": "b"}}}}),
            "spec.smtp.bounces.address",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com", "bounces": {
                "address": "b@example.com", "pop3": {"host": "pop.example.com", "tls": "None",
                "caBundle": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}}},
                "secretRef": {"name": "b"}}}}),
            "caBundle needs tls Implicit",
        ),
        (
            json!({"softBounces": {"limit": 1000}, "smtp": {"host": "smtp.example.com"}}),
            "spec.softBounces.limit",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com", "dkim": {
                "domain": "example.com", "selector": "s1", "headers": ["Subject", "To"],
                "privateKeySecretRef": {"name": "dkim", "key": "private.pem"}}}}),
            "headers must include From",
        ),
        (
            json!({"smtp": {"host": "smtp.example.com", "dkim": {
                "domain": "example.com", "selector": "s1", "algorithm": "RsaSha1",
                "privateKeySecretRef": {"name": "dkim", "key": "private.pem"}}}}),
            "spec.smtp.dkim.algorithm",
        ),
        (
            json!({"tracking": {"opens": true}, "smtp": {"host": "smtp.example.com"}}),
            "tracking needs an api provider",
        ),
        (
            json!({"tracking": {"clicks": false}, "api": {"provider": "Resend", "secretRef": {"name": "k"}}}),
            "Mailtrap and Resend set open and click tracking per sending domain",
        ),
        (
            json!({"tracking": {"opens": true}, "api": {"provider": "Mailtrap", "secretRef": {"name": "k"}}}),
            "Mailtrap and Resend set open and click tracking per sending domain",
        ),
        (
            json!({"unsubscribe": {"url": "https://example.com/u", "mailto": "x@@example.com"}, "smtp": {"host": "smtp.example.com"}}),
            "spec.unsubscribe.mailto",
        ),
        (
            json!({"api": {"provider": "Mailtrap", "secretRef": {"name": "k"}, "testMode": true}}),
            "Mailtrap's test mode is its sandbox: set mailtrap.sandboxInboxId",
        ),
    ];
    for (i, (spec, expected)) in providers.into_iter().enumerate() {
        scene
            .assert_refused("EmailProvider", &format!("p{i}"), spec, expected)
            .await;
    }
    let suppressions = [
        (
            json!({"providerRef": {"name": "p"}, "list": "news", "address": "a@example.org",
                   "reason": "Unsubscribed"}),
            "a suppression names a provider (providerRef) or a mailing list (list), one of them",
        ),
        (
            json!({"address": "a@example.org", "reason": "Manual"}),
            "a suppression names a provider (providerRef) or a mailing list (list), one of them",
        ),
        (
            json!({"providerRef": {"name": "p"}, "address": "a@example.org", "reason": "Unsubscribed"}),
            "reason Unsubscribed goes with a list",
        ),
        (
            json!({"list": "news", "address": "a@example.org", "reason": "Manual"}),
            "reason Unsubscribed goes with a list",
        ),
        (
            json!({"list": "-news", "address": "a@example.org", "reason": "Unsubscribed"}),
            "spec.list",
        ),
    ];
    for (i, (spec, expected)) in suppressions.into_iter().enumerate() {
        scene
            .assert_refused("EmailSuppression", &format!("s{i}"), spec, expected)
            .await;
    }
}

#[tokio::test]
async fn judged_by_the_controller_while_other_messages_keep_flowing() {
    let scene = Scene::new("bad-input-runtime").await;
    scene.mailpit_provider().await;
    // A provider whose Secret lacks the password key.
    fixtures::create::<k8s_openapi::api::core::v1::Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "half"}, "stringData": {"username": "u"}}),
    )
    .await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "half",
        fixtures::mailpit_smtp("half"),
    )
    .await;
    // A provider that exists only in another namespace.
    let other = Scene::new("bad-input-other").await;
    other.mailpit_provider().await;
    fixtures::provider(
        &other.client,
        &other.ns,
        "elsewhere",
        fixtures::mailpit_smtp("smtp-credentials"),
    )
    .await;

    let controller = scene.controller().await;
    let run = support::namespace_suffix();
    let good = format!("still flowing {run}");
    let bad = format!("bad {run}");
    let spec = |provider: &str, to: &str, subject: &str| json!({"providerRef": {"name": provider}, "to": [to], "subject": subject, "text": "t"});
    scene
        .message(
            "invalid-address",
            spec("mailpit", "two..dots@example.org", &bad),
        )
        .await;
    scene
        .message("other-namespace", spec("elsewhere", "x@example.org", &bad))
        .await;
    scene
        .message("missing-key", spec("half", "x@example.org", &bad))
        .await;
    scene
        .message("good", spec("mailpit", "x@example.org", &good))
        .await;

    let invalid = scene.wait_phase("invalid-address", Phase::Failed).await;
    let error = invalid.status.expect("status").last_error.expect("error");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(error.message.starts_with("spec.to[0]"), "{}", error.message);

    let elsewhere = scene
        .wait_reason("other-namespace", "ProviderNotFound")
        .await;
    let text = &elsewhere.status.expect("status").conditions[0].message;
    assert!(
        text.contains(&format!("namespace {:?}", scene.ns)),
        "{text}"
    );

    let provider = scene.wait_provider("half", "SecretNotFound").await;
    let text = &provider.status.expect("status").conditions[0].message;
    assert!(
        text.contains("spec.smtp.auth.passwordKey") && text.contains("has no key \"password\""),
        "{text}"
    );
    let waiting = scene.wait_reason("missing-key", "ProviderNotReady").await;
    assert_eq!(waiting.status.expect("status").attempts, 0);

    scene.wait_phase("good", Phase::Sent).await;
    support::received(&good).await;
    assert!(
        Mailpit::shared()
            .search(&format!("subject:\"{bad}\""))
            .await
            .is_empty(),
        "nothing bad was sent"
    );
    controller.stop().await;
}

/// Makes message `name` one the controller cannot decode: a status time past
/// what it can represent, written as an admin can through the status
/// subresource (the schema takes any RFC 3339 time).
async fn make_unreadable(scene: &Scene, name: &str) {
    use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
    let resource = ApiResource::erase::<mailroom::api::EmailMessage>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(scene.client.clone(), &scene.ns, &resource);
    let patch = json!({"status": {"phase": "Pending", "nextAttemptTime": "9999-12-31T23:59:59Z"}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("writing the status");
}

/// The status of message `name`, read as plain JSON (it may not decode).
async fn raw_status(scene: &Scene, name: &str) -> Value {
    use kube::api::{Api, ApiResource, DynamicObject};
    let resource = ApiResource::erase::<mailroom::api::EmailMessage>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(scene.client.clone(), &scene.ns, &resource);
    let object = api.get(name).await.expect("reading the message");
    object.data["status"].clone()
}

/// One message the controller cannot decode costs only itself, whether it
/// is there when the controller starts (the initial list) or becomes so
/// while it runs (the watch): the others are sent, and its status says why.
#[tokio::test]
async fn a_message_the_controller_cannot_read_costs_only_itself() {
    let scene = Scene::new("unreadable").await;
    scene.mailpit_provider().await;
    // No subject may contain another: mailpit's subject search is a
    // substring match, and "readable X" would also find "later unreadable X".
    let (bad, good) = (support::unique("broken"), support::unique("intact"));
    scene.note("unreadable", "mailpit", &bad).await;
    make_unreadable(&scene, "unreadable").await;
    scene.note("readable", "mailpit", &good).await;

    let controller = scene.controller().await;
    scene.wait_phase("readable", Phase::Sent).await;
    let marked = support::eventually(
        "the unreadable message marked",
        std::time::Duration::from_secs(30),
        || async {
            let status = raw_status(&scene, "unreadable").await;
            (status["phase"] == "Failed").then_some(status)
        },
    )
    .await;
    assert_eq!(marked["lastError"]["reason"], "InvalidRequest");
    let text = marked["lastError"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("cannot read this object"), "{text}");
    assert!(text.len() < 400, "bounded: {text}");

    // Unreadable while the controller runs: the watch goes on too.
    let (later_bad, later_good) = (support::unique("spoiled"), support::unique("afterwards"));
    scene.note("later-unreadable", "mailpit", &later_bad).await;
    make_unreadable(&scene, "later-unreadable").await;
    scene.note("later", "mailpit", &later_good).await;
    scene.wait_phase("later", Phase::Sent).await;
    support::eventually(
        "the later unreadable message marked or sent before it became unreadable",
        std::time::Duration::from_secs(30),
        || async {
            let status = raw_status(&scene, "later-unreadable").await;
            (status["phase"] == "Failed" || status["phase"] == "Sent").then_some(())
        },
    )
    .await;
    assert_eq!(support::received(&good).await.len(), 1);
    assert_eq!(support::received(&later_good).await.len(), 1);
    assert_eq!(support::received_count(&bad).await, 0, "never sent");
    controller.stop().await;
}

/// A message within the schema whose outcome could not be written (its
/// status would take it past etcd's object limit) is refused before it is
/// claimed: nothing is sent, and the refusal itself fits.
#[tokio::test]
async fn a_message_too_large_to_record_is_refused_before_it_is_sent() {
    let scene = Scene::new("too-large").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("too large to record");
    // 505,000 three-byte characters: under the schema's character cap,
    // 1.5 MB on the wire.
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject,
                      "text": "€".repeat(505_000)});
    scene.message("huge", spec).await;
    let failed = scene.wait_phase("huge", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("lastError");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error.message.contains("could not be recorded"),
        "{}",
        error.message
    );
    assert_eq!(status.attempts, 0, "never claimed");
    let small = support::unique("small after huge");
    scene.note("small", "mailpit", &small).await;
    scene.wait_phase("small", Phase::Sent).await;
    assert_eq!(support::received_count(&subject).await, 0, "nothing sent");
    controller.stop().await;
}
