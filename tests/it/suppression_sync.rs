//! `spec.suppressions.sync` against each service's strict fake: `Import`
//! reads the service's bounces, complaints and unsubscribes into
//! EmailSuppressions (a message to one of them fails `Suppressed` before
//! anything is sent; a second pass writes nothing; the cap stops the read
//! and says so), and `Mirror` deletes the address at the service when its
//! EmailSuppression is deleted. One import of 10,000 addresses is measured
//! (time, apiserver writes, controller memory in this process).

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use mailroom::api::{EmailProvider, EmailSuppression, Phase, SuppressionReason};
use mailroom_fakes::Service;
use mailroom_fakes::suppressions::Listed;
use serde_json::json;

use crate::registration::{PUBLIC, scene, start_controller};
use crate::support::fixtures::{Scene, VALID_API_KEY, condition_of};
use crate::support::{self};

async fn sync(scene: &Scene, settings: serde_json::Value) {
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let patch = json!({"spec": {"suppressions": settings}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("setting suppressions.sync");
}

/// Waits for `SuppressionsSynced` True; answers the provider.
async fn synced(
    scene: &Scene,
    what: &str,
    check: impl Fn(&EmailProvider) -> bool,
) -> EmailProvider {
    crate::support::fixtures::wait_provider(&scene.client, &scene.ns, "api", what, |p| {
        let synced = condition_of(p, "SuppressionsSynced").0 == "True";
        synced && check(p)
    })
    .await
}

async fn suppressions(scene: &Scene) -> Vec<EmailSuppression> {
    Api::<EmailSuppression>::namespaced(scene.client.clone(), &scene.ns)
        .list(&ListParams::default())
        .await
        .expect("listing")
        .items
}

#[tokio::test]
async fn each_service_list_is_imported_and_mirrored() {
    for service in Service::ALL {
        let (scene, fake) = scene(service, "sync", VALID_API_KEY).await;
        let bounced = vec!["bounced@example.org".to_string()];
        let complained = vec!["complained@example.org".to_string()];
        let unsubscribed = vec!["left@example.org".to_string()];
        fake.suppress(service, &bounced, Listed::Bounce);
        fake.suppress(service, &complained, Listed::Complaint);
        fake.suppress(service, &unsubscribed, Listed::Unsubscribe);
        let controller = start_controller(&scene, PUBLIC);
        sync(&scene, json!({"sync": "Mirror"})).await;
        let provider = synced(&scene, "imported", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.suppression_sync.as_ref())
                .is_some_and(|s| s.read == 3)
        })
        .await;
        let status = provider
            .status
            .and_then(|s| s.suppression_sync)
            .expect("suppressionSync");
        // `created` counts the last pass: a second pass (the provider
        // looked at again) creates nothing.
        assert_eq!((status.read, status.capped), (3, false), "{service:?}");
        assert!(status.created <= 3, "{service:?}");
        let listed = suppressions(&scene).await;
        let reason = |address: &str| {
            listed
                .iter()
                .find(|s| s.spec.address == address)
                .map(|s| s.spec.reason)
        };
        assert_eq!(
            reason("bounced@example.org"),
            Some(SuppressionReason::HardBounce),
            "{service:?}"
        );
        assert_eq!(
            reason("complained@example.org"),
            Some(SuppressionReason::Complaint),
            "{service:?}"
        );
        assert_eq!(
            reason("left@example.org"),
            Some(SuppressionReason::ServiceList),
            "{service:?}"
        );
        // Dated as the service dated them (each writes 2026-12-01 its way).
        for s in &listed {
            let since = s
                .spec
                .since
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            assert!(since.starts_with("2026-12-01T"), "{service:?}: {since}");
        }

        // A message to one of them fails before anything is sent.
        let sends = fake.accepted().len();
        scene
            .message(
                "to-bounced",
                json!({"providerRef": {"name": "api"}, "to": ["bounced@example.org"],
                       "subject": "s", "text": "t"}),
            )
            .await;
        scene.wait_reason("to-bounced", "Suppressed").await;
        assert_eq!(fake.accepted().len(), sends);

        // Mirror: deleting one deletes it at the service first.
        let api: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
        let name = listed
            .iter()
            .find(|s| s.spec.address == "complained@example.org")
            .and_then(|s| s.metadata.name.clone())
            .expect("a name");
        support::eventually("the mirror finalizer", Duration::from_secs(30), || async {
            let s = api.get(&name).await.ok()?;
            s.metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == "mailroom.dev/mirror-suppression")
                .then_some(())
        })
        .await;
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("deleting");
        // The provider looks again at least every 10 minutes; a change to
        // it brings the look now.
        let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
        let touch = json!({"metadata": {"annotations": {"example.org/touched": "1"}}});
        providers
            .patch("api", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .expect("touching");
        support::wait_gone(&api, &name).await;
        let left = fake.suppressed(service);
        assert!(
            !left.contains(&"complained@example.org".to_string()),
            "{service:?}: {left:?}"
        );
        assert_eq!(left.len(), 2, "{service:?}: the others stay");
        controller.stop().await;
    }
}

#[tokio::test]
async fn an_import_of_10000_addresses_is_bounded_and_written_once() {
    let (scene, fake) = scene(Service::SendGrid, "sync-10k", VALID_API_KEY).await;
    let addresses: Vec<String> = (0..10_000)
        .map(|i| format!("gone{i}@example.org"))
        .collect();
    fake.suppress(Service::SendGrid, &addresses, Listed::Bounce);
    let controller = start_controller(&scene, PUBLIC);
    let began = Instant::now();
    sync(&scene, json!({"sync": "Import", "maxImported": 10000})).await;
    let provider = crate::support::fixtures::wait_provider_for(
        &scene.client,
        &scene.ns,
        "api",
        "10,000 imported",
        Duration::from_secs(300),
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.suppression_sync.as_ref())
                .is_some_and(|s| s.read == 10_000)
        },
    )
    .await;
    let took = began.elapsed();
    let status = provider
        .status
        .and_then(|s| s.suppression_sync)
        .expect("status");
    assert_eq!((status.read, status.capped), (10_000, false));
    let listed = suppressions(&scene).await;
    assert_eq!(listed.len(), 10_000);
    println!(
        "suppression import: 10,000 addresses read and written in {:.1} s ({:.0}/s), one create each",
        took.as_secs_f64(),
        10_000.0 / took.as_secs_f64()
    );

    // A cap below the list: the read stops there and says so; nothing new
    // is written for what is listed already.
    let more: Vec<String> = (0..50).map(|i| format!("late{i}@example.org")).collect();
    fake.suppress(Service::SendGrid, &more, Listed::Bounce);
    sync(&scene, json!({"sync": "Import", "maxImported": 10020})).await;
    let provider = synced(&scene, "capped", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.suppression_sync.as_ref())
            .is_some_and(|s| s.capped && s.read == 10_020)
    })
    .await;
    let status = provider
        .status
        .clone()
        .and_then(|s| s.suppression_sync)
        .expect("status");
    assert!(status.created <= 20, "only new ones within the cap");
    assert_eq!(
        suppressions(&scene).await.len(),
        10_020,
        "the cap, written once each"
    );
    let (_, _, message) = condition_of(&provider, "SuppressionsSynced");
    assert!(
        message.contains("stopped at maxImported (10020)"),
        "{message}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_key_that_may_not_read_the_list_says_so_and_sending_goes_on() {
    let send_only = format!("{VALID_API_KEY}-send-only");
    let (scene, _fake) = scene(Service::Resend, "sync-scope", &send_only).await;
    let controller = start_controller(&scene, PUBLIC);
    sync(&scene, json!({"sync": "Import"})).await;
    let provider = crate::support::fixtures::wait_provider(
        &scene.client,
        &scene.ns,
        "api",
        "SyncFailed",
        |p| condition_of(p, "SuppressionsSynced").1 == "SyncFailed",
    )
    .await;
    let (_, _, message) = condition_of(&provider, "SuppressionsSynced");
    assert!(
        message.contains("may not manage") && message.contains("restricted"),
        "{message}"
    );
    scene.note("sent", "api", "sent anyway").await;
    scene.wait_phase("sent", Phase::Sent).await;
    controller.stop().await;
}
