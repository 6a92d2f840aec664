//! `spec.dryRun`: everything is checked as for a send and nothing is sent.
//! The status shows what would have gone out (provider, sender, subject,
//! recipients, size, headers), mailpit and the API fake receive nothing,
//! the ledger records nothing, a bulk message's suppressed recipient is
//! listed as skipped, a future `sendAt` is noted and not waited for, and a
//! message that would fail fails the same way.

use kube::api::{Api, ListParams};
use mailroom::api::{EmailLedger, EmailMessage, Phase};
use mailroom_fakes::Service;
use serde_json::json;

use crate::support::fixtures::{self, Scene, VALID_API_KEY};
use crate::support::{self};

fn sent_condition(m: &EmailMessage) -> (String, String) {
    m.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Sent")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_dry_run_checks_everything_and_sends_nothing() {
    let scene = Scene::new("dry-run").await;
    scene.mailpit_provider().await;
    fixtures::create::<mailroom::api::EmailSuppression>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailSuppression",
               "metadata": {"name": "gone"},
               "spec": {"providerRef": {"name": "mailpit"}, "address": "gone@example.org",
                        "reason": "HardBounce"}}),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("a dry run");
    let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    scene
        .message(
            "single",
            json!({"providerRef": {"name": "mailpit"}, "to": ["Ann <ann@example.org>"],
                   "subject": subject, "text": "hello", "headers": {"X-Order": "17"},
                   "sendAt": tomorrow.to_string(), "dryRun": true}),
        )
        .await;
    let single = scene.wait_phase("single", Phase::DryRun).await;
    let (reason, text) = sent_condition(&single);
    assert_eq!(reason, "DryRun", "{text}");
    assert!(text.contains("nothing was sent"), "{text}");
    let status = single.status.clone().expect("status");
    let result = status.dry_run.expect("status.dryRun");
    assert_eq!(result.provider, "EmailProvider/mailpit");
    assert_eq!(result.subject, subject);
    assert_eq!(result.to, ["Ann <ann@example.org>"]);
    assert_eq!(result.recipients, 1);
    assert!(result.size_bytes > 0);
    assert!(
        result.headers.iter().any(|h| h == "X-Order: 17"),
        "{:?}",
        result.headers
    );
    assert!(
        result
            .would_wait
            .as_deref()
            .is_some_and(|w| w.contains("spec.sendAt")),
        "{result:?}"
    );
    assert_eq!(status.attempts, 0, "never claimed");

    // A bulk message: the suppressed recipient is skipped, the rest counted.
    let bulk_subject = support::unique("a bulk dry run");
    scene
        .message(
            "bulk",
            json!({"providerRef": {"name": "mailpit"}, "subject": bulk_subject, "text": "hi",
                   "dryRun": true,
                   "recipients": [{"to": "a@example.org"}, {"to": "gone@example.org"}, {"to": "b@example.org"}]}),
        )
        .await;
    let bulk = scene.wait_phase("bulk", Phase::DryRun).await;
    let result = bulk.status.and_then(|s| s.dry_run).expect("status.dryRun");
    assert_eq!(result.recipients, 2);
    assert_eq!(result.to, ["a@example.org", "b@example.org"]);
    assert_eq!(result.skipped.len(), 1);
    assert!(
        result.skipped[0].contains("spec.recipients[1].to: gone@example.org is suppressed"),
        "{:?}",
        result.skipped
    );

    // One that would fail fails the same way.
    scene
        .message(
            "broken",
            json!({"providerRef": {"name": "mailpit"}, "to": ["a@example.org"], "subject": "s",
                   "text": "t", "dryRun": true, "attachments": [{"filename": "x.pdf",
                   "secretKeyRef": {"name": "no-such-secret", "key": "x"}}]}),
        )
        .await;
    let broken = scene
        .wait_message("broken", "waiting for its attachment", |m| {
            sent_condition(m).0 == "AttachmentNotFound"
                || m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed)
        })
        .await;
    assert_ne!(broken.status.and_then(|s| s.phase), Some(Phase::DryRun));

    // Nothing reached mailpit, nothing is in the ledger.
    assert_eq!(support::received_count(&subject).await, 0);
    assert_eq!(support::received_count(&bulk_subject).await, 0);
    let pages = Api::<EmailLedger>::namespaced(scene.client.clone(), &scene.ns)
        .list(&ListParams::default())
        .await
        .expect("ledger pages");
    let recorded: Vec<String> = pages
        .items
        .iter()
        .flat_map(|p| p.spec.entries.iter().map(|e| e.name.clone()))
        .collect();
    assert!(recorded.is_empty(), "{recorded:?}");
    controller.stop().await;
}

#[tokio::test]
async fn a_dry_run_through_an_api_makes_no_request_and_meets_its_limits() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Postmark, "dry-run", VALID_API_KEY).await;
    scene
        .message(
            "fits",
            json!({"providerRef": {"name": "api"}, "to": ["a@example.org"], "subject": "s",
                   "text": "t", "dryRun": true}),
        )
        .await;
    let fits = scene.wait_phase("fits", Phase::DryRun).await;
    assert_eq!(
        fits.status.and_then(|s| s.dry_run).map(|r| r.provider),
        Some("EmailProvider/api".into())
    );
    // Postmark takes at most 50 recipients in To, Cc and Bcc together.
    let many: Vec<String> = (0..60).map(|i| format!("r{i}@example.org")).collect();
    scene
        .message(
            "too-many",
            json!({"providerRef": {"name": "api"}, "to": many, "subject": "s", "text": "t",
                   "dryRun": true}),
        )
        .await;
    let refused = scene.wait_phase("too-many", Phase::Failed).await;
    let (reason, text) = sent_condition(&refused);
    assert_eq!(reason, "InvalidRequest", "{text}");
    let sends: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(
        sends.is_empty(),
        "no request reached the service: {sends:?}"
    );
    controller.stop().await;
}
