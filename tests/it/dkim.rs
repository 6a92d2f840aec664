//! DKIM signing on SMTP providers: the mail mailpit receives (through the
//! provider's connection pool) verifies with an independent verifier against
//! the record the provider's status prints, for single, bulk, templated and
//! attachment messages and non-ASCII headers, and fails once the body is
//! altered; unusable keys make the provider InvalidSpec.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use mailroom::api::{EmailProvider, EmailTemplate, Phase};
use serde_json::{Value, json};

use crate::support::fixtures::{self, Scene};
use crate::support::mailpit::Mailpit;
use crate::support::{self, dkim};

fn key(name: &str) -> String {
    std::fs::read_to_string(support::root().join("tests/fixtures/dkim").join(name)).expect("key")
}

/// A provider `name` for the shared mailpit signing with key file `pem`.
async fn signing_provider(scene: &Scene, name: &str, pem: &str, algorithm: &str, from: &str) {
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": format!("{name}-key")}, "stringData": {"private.pem": key(pem)}}),
    )
    .await;
    let mut smtp = fixtures::mailpit_smtp("smtp-credentials");
    smtp["dkim"] = json!({"domain": "mailroom.dev", "selector": "s2026", "algorithm": algorithm,
                          "privateKeySecretRef": {"name": format!("{name}-key"), "key": "private.pem"}});
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": name},
               "spec": {"defaultFrom": from, "smtp": smtp}}),
    )
    .await;
}

/// The TXT value the provider's status prints, once Ready.
async fn published(scene: &Scene, name: &str) -> (String, String) {
    let provider = scene.wait_provider(name, "Verified").await;
    let record = provider.status.and_then(|s| s.dkim).expect("status.dkim");
    (record.name, record.value)
}

async fn raw(subject: &str, count: usize) -> Vec<String> {
    let mailpit = Mailpit::shared();
    let found = mailpit
        .wait_for(
            &format!("subject:\"{subject}\""),
            count,
            Duration::from_secs(30),
        )
        .await;
    let mut raws = Vec::new();
    for summary in found {
        raws.push(mailpit.raw(&summary.id).await);
    }
    raws
}

fn spec(provider: &str, subject: &str, extra: Value) -> Value {
    let mut spec = json!({"providerRef": {"name": provider}, "to": ["Zoë Ünal <zoe@example.org>"],
                          "subject": subject, "text": "Grüße aus dem Cluster.\n\nLine two.",
                          "html": "<p>Grüße</p>"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

#[tokio::test]
async fn signatures_verify_for_single_bulk_templated_and_attachment_messages() {
    let scene = Scene::new("dkim-rsa").await;
    scene.mailpit_provider().await;
    signing_provider(
        &scene,
        "signed",
        "rsa-2048.pem",
        "RsaSha256",
        "Shop <shop@mailroom.dev>",
    )
    .await;
    fixtures::create::<ConfigMap>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "documents"}, "data": {"terms.txt": "Terms: be kind.\n"}}),
    )
    .await;
    let base = support::unique("dkim");
    fixtures::create::<EmailTemplate>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailTemplate", "metadata": {"name": "hello"},
               "spec": {"subject": format!("{base} templated {{{{name}}}}"), "text": "Hallo {{name}}!"}}),
    )
    .await;
    let controller = scene.controller().await;
    let (name, txt) = published(&scene, "signed").await;
    assert_eq!(name, "s2026._domainkey.mailroom.dev");
    assert!(txt.starts_with("v=DKIM1; k=rsa; p="), "{txt}");

    let single = format!("{base} single — ünïcode");
    scene
        .message("single", spec("signed", &single, json!({})))
        .await;
    let attached = format!("{base} attachment");
    scene
        .message(
            "attached",
            spec("signed", &attached, json!({"attachments": [
                {"filename": "terms.txt", "configMapKeyRef": {"name": "documents", "key": "terms.txt"}}]})),
        )
        .await;
    scene
        .message(
            "templated",
            json!({"providerRef": {"name": "signed"}, "to": ["ann@example.org"],
                   "templateRef": {"name": "hello"}, "data": {"name": "Ann"}}),
        )
        .await;
    let bulk = format!("{base} bulk");
    scene
        .message(
            "bulk",
            json!({"providerRef": {"name": "signed"}, "subject": bulk, "text": "news",
                   "unsubscribe": {"url": "https://lists.mailroom.dev/u?r={{recipient}}&id={{id}}",
                                   "mailto": "leave@mailroom.dev"},
                   "recipients": [{"to": "a@example.org", "data": {"id": "1"}},
                                  {"to": "b@example.org", "data": {"id": "2"}},
                                  {"to": "c@example.org", "data": {"id": "3"}}]}),
        )
        .await;
    for name in ["single", "attached", "templated", "bulk"] {
        scene.wait_phase(name, Phase::Sent).await;
    }
    let mut checked = 0;
    for (subject, count) in [
        (single.as_str(), 1),
        (attached.as_str(), 1),
        (&format!("{base} templated Ann"), 1),
        (bulk.as_str(), 3),
    ] {
        for mail in raw(subject, count).await {
            assert!(
                mail.contains("DKIM-Signature: v=1; a=rsa-sha256; d=mailroom.dev; s=s2026;"),
                "{mail}"
            );
            assert!(
                dkim::verifies(mail.as_bytes(), &txt),
                "{subject} does not verify:\n{mail}"
            );
            // RFC 8058: one-click unsubscribe is signed (named in h= even
            // where absent, so nobody can add it on the way).
            let unfolded = mail.replace("\r\n ", " ").replace("\r\n\t", "\t");
            assert!(
                unfolded.contains(":list-unsubscribe:list-unsubscribe-post;"),
                "{unfolded}"
            );
            if subject == bulk {
                let to = ["a", "b", "c"]
                    .into_iter()
                    .zip(1..)
                    .find(|(who, _)| unfolded.contains(&format!("\r\nTo: {who}@example.org\r\n")))
                    .expect("one of the three");
                let expected = format!(
                    "\r\nList-Unsubscribe: <https://lists.mailroom.dev/u?r={}%40example.org&id={}>, <mailto:leave@mailroom.dev?subject=unsubscribe>\r\n",
                    to.0, to.1
                );
                assert!(unfolded.contains(&expected), "{unfolded}");
                assert!(
                    unfolded.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
                    "{unfolded}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 6);

    // The verifier is not a rubber stamp: an altered body fails, and so
    // does another key's record.
    let mail = raw(&single, 1).await.remove(0);
    let altered = mail.replacen("Line two.", "Line 2.", 1);
    assert_ne!(altered, mail);
    assert!(!dkim::verifies(altered.as_bytes(), &txt));
    let other = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzZ";
    assert!(!dkim::verifies(mail.as_bytes(), other));
    controller.stop().await;
}

#[tokio::test]
async fn ed25519_signs_and_unusable_keys_or_misaligned_senders_are_reported() {
    let scene = Scene::new("dkim-keys").await;
    scene.mailpit_provider().await;
    signing_provider(
        &scene,
        "ed",
        "ed25519.pem",
        "Ed25519Sha256",
        "Shop <shop@mail.mailroom.dev>",
    )
    .await;
    signing_provider(
        &scene,
        "short",
        "rsa-1024.pem",
        "RsaSha256",
        "shop@mailroom.dev",
    )
    .await;
    signing_provider(
        &scene,
        "wrong-kind",
        "ed25519.pem",
        "RsaSha256",
        "shop@mailroom.dev",
    )
    .await;
    signing_provider(
        &scene,
        "elsewhere",
        "rsa-2048.pem",
        "RsaSha256",
        "shop@example.org",
    )
    .await;
    let controller = scene.controller().await;

    let (_, txt) = published(&scene, "ed").await;
    assert!(txt.starts_with("v=DKIM1; k=ed25519; p="), "{txt}");
    let subject = support::unique("dkim ed25519");
    scene
        .message("ed-mail", spec("ed", &subject, json!({})))
        .await;
    scene.wait_phase("ed-mail", Phase::Sent).await;
    let mail = raw(&subject, 1).await.remove(0);
    assert!(mail.contains("a=ed25519-sha256"), "{mail}");
    assert!(dkim::verifies(mail.as_bytes(), &txt));

    for (name, expected) in [
        (
            "short",
            "the RSA key has 1024 bits; at least 2048 are needed",
        ),
        ("wrong-kind", "not an RSA private key"),
    ] {
        let provider = scene.wait_provider(name, "InvalidSpec").await;
        let ready = provider.status.expect("status").conditions;
        let message = &ready
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready")
            .message;
        assert!(
            message.starts_with("spec.smtp.dkim.privateKeySecretRef: Secret")
                && message.contains(expected),
            "{name}: {message}"
        );
        assert!(!message.contains("PRIVATE KEY"), "{message}");
    }
    // Misaligned: still Ready and signing, with a warning.
    let provider = scene.wait_provider("elsewhere", "Verified").await;
    let ready = provider.status.expect("status").conditions;
    let message = &ready
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(
        message.contains("warning: defaultFrom's domain example.org does not align with the DKIM domain mailroom.dev"),
        "{message}"
    );
    let aligned = scene.wait_provider("ed", "Verified").await;
    let ready = aligned.status.expect("status").conditions;
    assert!(!ready.iter().any(|c| c.message.contains("warning")));
    controller.stop().await;
}
