//! Sent once per intent: a message created again (re-applied from Git,
//! restored from a backup) with the same name and spec, or with the same
//! idempotency key, is not sent again, also after a controller restart;
//! a changed spec, a new key or a retry annotation sends. The ledger that
//! remembers it stays bounded and forgets after its window.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use mailroom::api::{EmailLedger, EmailMessage, EmailMessageStatus, Phase};
use mailroom::ledger::{Identity, Ledger};
use serde_json::json;

use crate::support::fixtures::{self, Scene};
use crate::support::{self, Mailpit};

async fn delete_and_wait(scene: &Scene, name: &str) {
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    support::eventually("the message gone", Duration::from_secs(30), || async {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

fn spec(subject: &str) -> serde_json::Value {
    json!({"providerRef": {"name": "mailpit"}, "to": ["once@example.org"],
           "subject": subject, "text": "sent once"})
}

#[tokio::test]
async fn a_message_created_again_is_not_sent_again_even_after_a_restart() {
    let scene = Scene::new("created-again").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("created again");
    scene.message("welcome", spec(&subject)).await;
    let first = scene.wait_phase("welcome", Phase::Sent).await;
    let first_status = first.status.clone().expect("status");
    assert_eq!(fixtures::sent_reason(&first), "Accepted");
    support::received(&subject).await;

    // Re-created, as a GitOps tool does after a TTL or a prune.
    delete_and_wait(&scene, "welcome").await;
    scene.message("welcome", spec(&subject)).await;
    let again = scene.wait_reason("welcome", "AlreadySent").await;
    let status = again.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Sent));
    assert_eq!(status.attempts, 0, "no attempt was made");
    assert_eq!(
        status.sent_time, first_status.sent_time,
        "the original send time"
    );
    assert_eq!(status.provider_message_id, first_status.provider_message_id);
    let ready = mailroom::api::condition::find(&status.conditions, "Ready").expect("Ready");
    assert_eq!(ready.status, "True");
    let text = &ready.message;
    assert!(
        text.contains("not sent again") && text.contains("\"welcome\""),
        "{text}"
    );

    // The record is durable: a new controller reads it from the cluster.
    controller.stop().await;
    delete_and_wait(&scene, "welcome").await;
    let controller = scene.controller().await;
    scene.message("welcome", spec(&subject)).await;
    scene.wait_reason("welcome", "AlreadySent").await;
    assert_eq!(
        support::received_count(&subject).await,
        1,
        "one email in all"
    );

    let pages: Api<EmailLedger> = Api::namespaced(scene.client.clone(), &scene.ns);
    let pages = pages.list(&ListParams::default()).await.expect("pages");
    assert_eq!(pages.items.len(), 1);
    let entries = &pages.items[0].spec.entries;
    assert_eq!(entries.len(), 1, "recorded once: {entries:?}");
    assert_eq!(entries[0].name, "welcome");
    assert_eq!(entries[0].id, Identity::of(&first).as_str());
    controller.stop().await;
}

#[tokio::test]
async fn a_new_spec_or_key_sends_one_key_sends_once_and_a_retry_forces() {
    let scene = Scene::new("send-once-keys").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let order = support::unique("order one");
    let keyed = |subject: &str, key: &str| {
        let mut spec = spec(subject);
        spec["idempotencyKey"] = json!(key);
        spec
    };
    scene.message("order-a", keyed(&order, "order-1")).await;
    scene.wait_reason("order-a", "Accepted").await;
    // Another object with the same key, whatever its name: one send.
    scene.message("order-b", keyed(&order, "order-1")).await;
    scene.wait_reason("order-b", "AlreadySent").await;
    // A new key sends the same content again.
    scene.message("order-c", keyed(&order, "order-2")).await;
    scene.wait_reason("order-c", "Accepted").await;
    assert_eq!(support::received_count(&order).await, 2);

    // Without a key, a changed spec under the same name is a new message.
    let plain = support::unique("plain");
    scene.message("plain", spec(&plain)).await;
    scene.wait_reason("plain", "Accepted").await;
    delete_and_wait(&scene, "plain").await;
    let changed = format!("{plain} (changed)");
    scene.message("plain", spec(&changed)).await;
    scene.wait_reason("plain", "Accepted").await;
    support::received(&changed).await;

    // A person insists: the retry annotation sends an AlreadySent message,
    // as a new email (its own Message-ID).
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let annotate = json!({"metadata": {"annotations": {"mailroom.dev/retry": "true"}}});
    api.patch("order-b", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    let forced = scene.wait_reason("order-b", "Accepted").await;
    assert_eq!(forced.status.expect("status").attempts, 1);
    let copies = support::eventually("three copies", Duration::from_secs(30), || async {
        let found = support::received(&order).await;
        (found.len() == 3).then_some(found)
    })
    .await;
    let mut ids = Vec::new();
    for copy in &copies {
        ids.push(Mailpit::shared().message(&copy.id).await.message_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each send its own Message-ID: {ids:?}");
    controller.stop().await;
}

/// A finished message as the controller would have recorded it.
fn sent_message(namespace: &str, n: usize, sent: Timestamp) -> EmailMessage {
    let mut message: EmailMessage = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"name": format!("m-{n:05}"), "namespace": namespace},
        "spec": spec(&format!("message {n}"))
    }))
    .expect("a message");
    message.status = Some(EmailMessageStatus {
        phase: Some(Phase::Sent),
        sent_time: Some(Time(sent)),
        provider_message_id: Some(format!("<queue-{n}@mailpit>")),
        ..Default::default()
    });
    message
}

#[tokio::test]
async fn the_ledger_stays_bounded_over_10000_messages_and_forgets_after_its_window() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ledger-bounds").await;
    let now = Timestamp::now();
    // The first page's worth end their one-day window in 15 seconds.
    let soon = now - SignedDuration::from_hours(24) + SignedDuration::from_secs(15);
    let messages: Vec<EmailMessage> = (0..10_000)
        .map(|n| sent_message(&ns, n, if n < 1000 { soon } else { now }))
        .collect();
    let ledger = Ledger::new(Some(ns.clone()), 100_000);
    ledger.load(&client).await.expect("load");
    for message in &messages {
        ledger.remember(message, Some(1));
        ledger.remember(message, Some(1));
    }
    ledger.flush(&client).await;
    let size = ledger.size();
    assert_eq!((size.entries, size.pages), (10_000, 10));
    assert_eq!(
        size.writes, 10,
        "coalesced: one write per page, not per message"
    );

    let api: Api<EmailLedger> = Api::namespaced(client.clone(), &ns);
    let pages = api.list(&ListParams::default()).await.expect("pages").items;
    assert_eq!(pages.len(), 10);
    assert!(
        pages
            .iter()
            .all(|p| p.spec.entries.len() == 1000 && p.spec.count == 1000)
    );
    let bytes: usize = pages
        .iter()
        .map(|p| serde_json::to_vec(p).expect("json").len())
        .sum();
    println!(
        "FIGURES ledger pages=10 entries=10000 bytes={bytes} per_entry={}",
        bytes / 10_000
    );

    // A new controller reads the same record.
    let reloaded = Ledger::new(Some(ns.clone()), 100_000);
    reloaded.load(&client).await.expect("reload");
    assert_eq!(reloaded.size().entries, 10_000);
    let hit = reloaded
        .lookup(&client, &messages[4321])
        .await
        .expect("lookup");
    assert_eq!(hit.map(|e| e.name), Some("m-04321".to_string()));

    // The first page's window ends: its messages may be sent again, and the
    // page goes.
    support::eventually("the window ended", Duration::from_secs(60), || async {
        let hit = reloaded
            .lookup(&client, &messages[0])
            .await
            .expect("lookup");
        hit.is_none().then_some(())
    })
    .await;
    reloaded.prune(&client, Timestamp::now()).await;
    let left = api.list(&ListParams::default()).await.expect("pages").items;
    assert_eq!(left.len(), 9, "the expired page is deleted");
    assert!(
        left.iter()
            .all(|p| p.metadata.name.as_deref() != Some("sent-000001"))
    );

    // Bounded per namespace: beyond the limit the oldest pages go first.
    let small = Ledger::new(Some(ns.clone()), 5_000);
    small.load(&client).await.expect("load");
    small.prune(&client, Timestamp::now()).await;
    let kept = api.list(&ListParams::default()).await.expect("pages").items;
    let names: Vec<_> = kept
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names.contains(&"sent-000010".to_string()),
        "the newest stays: {names:?}"
    );
    assert_eq!(small.size().entries, 5_000);
}

/// Sends a second apart share a page: the second write appends to it.
#[tokio::test]
async fn entries_written_apart_are_appended_to_the_same_page() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ledger-append").await;
    let now = Timestamp::now();
    let ledger = Ledger::new(Some(ns.clone()), 100_000);
    ledger.load(&client).await.expect("load");
    ledger.remember(&sent_message(&ns, 1, now), Some(1));
    ledger.flush(&client).await;
    ledger.remember(&sent_message(&ns, 2, now), Some(1));
    ledger.flush(&client).await;
    let size = ledger.size();
    assert_eq!((size.entries, size.pages, size.writes), (2, 1, 2));
    let api: Api<EmailLedger> = Api::namespaced(client.clone(), &ns);
    let pages = api.list(&ListParams::default()).await.expect("pages").items;
    assert_eq!(pages.len(), 1);
    let names: Vec<_> = pages[0]
        .spec
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        (pages[0].spec.count, names),
        (2, vec!["m-00001", "m-00002"])
    );
}
