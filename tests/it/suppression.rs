//! The suppression list: a hard bounce or a complaint reported by a
//! service's webhook lists the address for its provider (an
//! EmailSuppression); the next message to it ends Failed, reason
//! Suppressed, unless it sets ignoreSuppression; a bulk message skips a
//! suppressed recipient and lists it; a person's own EmailSuppression counts
//! the same, and deleting it lifts it.

use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams};
use mailroom::api::{EmailSuppression, Phase, SuppressionReason};
use mailroom_fakes::Service;
use mailroom_fakes::webhook::{Event, Happened};
use serde_json::json;

use crate::support;
use crate::support::fixtures::{self, RunningController, Scene};
use crate::support::webhooks::{Receiver, post, webhook_provider};

const KEY: &str = fixtures::VALID_API_KEY;

fn to(address: &str, provider: &str) -> serde_json::Value {
    json!({"providerRef": {"name": provider}, "to": [format!("Someone <{address}>")],
           "subject": "suppression", "text": "t"})
}

async fn suppressions(scene: &Scene, count: usize) -> Vec<EmailSuppression> {
    let api: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
    support::eventually("the suppression list", Duration::from_secs(30), || async {
        let items = api.list(&ListParams::default()).await.expect("list").items;
        (items.len() == count).then_some(items)
    })
    .await
}

#[tokio::test]
async fn bounces_and_complaints_suppress_the_address_for_the_next_message() {
    let scene = Scene::new("suppression").await;
    let fake = mailroom_fakes::Fake::start(mailroom_fakes::Config::with_key(KEY))
        .await
        .expect("fake");
    scene.api_provider(Service::Resend, &fake.url, KEY).await;
    let signer = webhook_provider(&scene, Service::Resend, "api").await;
    let controller = RunningController::start_with(scene.client.clone(), &scene.ns);
    let receiver = Receiver::start(&scene, scene.client.clone()).await;
    let url = format!("{}/api", receiver.base);
    let http = reqwest::Client::new();

    // Two messages; one bounces for good, the other's recipient complains.
    scene.message("first", to("gone@example.org", "api")).await;
    scene
        .message("second", to("angry@example.org", "api"))
        .await;
    let now = jiff::Timestamp::now().as_second();
    let mut events = Vec::new();
    for (name, happened, address) in [
        ("first", Happened::HardBounce, "gone@example.org"),
        ("second", Happened::Complained, "angry@example.org"),
    ] {
        let sent = scene.wait_phase(name, Phase::Sent).await;
        let id = sent.status.and_then(|s| s.provider_message_id).expect("id");
        events.push(Event::new(happened, &id, address, now).echoing(fake.echo(&id)));
    }
    for request in signer.requests(&events, now) {
        assert_eq!(post(&http, &url, &request).await, 200);
    }
    scene.wait_phase("first", Phase::Bounced).await;
    scene.wait_phase("second", Phase::Complained).await;
    let listed = suppressions(&scene, 2).await;
    let gone = listed
        .iter()
        .find(|s| s.spec.address == "gone@example.org")
        .expect("the bounced address");
    assert_eq!(gone.spec.reason, SuppressionReason::HardBounce);
    assert_eq!(
        gone.spec.provider_ref.as_ref().map(|p| p.name.as_str()),
        Some("api")
    );
    let angry = listed
        .iter()
        .find(|s| s.spec.address == "angry@example.org")
        .expect("the complaining address");
    assert_eq!(angry.spec.reason, SuppressionReason::Complaint);

    // The next message to either is not sent, and says why.
    let accepted = fake.accepted().len();
    scene.message("again", to("Gone@Example.org", "api")).await;
    let refused = scene.wait_reason("again", "Suppressed").await;
    let status = refused.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Failed));
    let text = status.last_error.expect("error").message;
    assert!(
        text.starts_with("spec.to[0]: gone@example.org is suppressed: it bounced for good")
            && text.contains(gone.metadata.name.as_deref().expect("name")),
        "{text}"
    );
    // Unless it insists (a password reset, say).
    let mut insisting = to("angry@example.org", "api");
    insisting["ignoreSuppression"] = json!(true);
    scene.message("reset", insisting).await;
    scene.wait_reason("reset", "Accepted").await;
    assert_eq!(
        fake.accepted().len(),
        accepted + 1,
        "only the insisting one went out"
    );

    // Lifted by deleting it.
    let api: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
    api.delete(
        gone.metadata.name.as_deref().expect("name"),
        &DeleteParams::default(),
    )
    .await
    .expect("delete");
    suppressions(&scene, 1).await;
    scene.message("after", to("gone@example.org", "api")).await;
    scene.wait_reason("after", "Accepted").await;
    controller.stop().await;
}

#[tokio::test]
async fn a_persons_suppression_holds_and_a_bulk_message_skips_the_address() {
    let scene = Scene::new("suppression-bulk").await;
    scene.mailpit_provider().await;
    fixtures::create::<EmailSuppression>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailSuppression",
               "metadata": {"name": "asked-not-to"},
               "spec": {"providerRef": {"name": "mailpit"}, "address": "no-thanks@example.org",
                        "reason": "Manual"}}),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("bulk with a suppressed recipient");
    scene
        .message(
            "news",
            json!({"providerRef": {"name": "mailpit"}, "subject": subject, "text": "hello",
                   "recipients": [{"to": "reader@example.org"}, {"to": "No-Thanks@example.org"},
                                  {"to": "other@example.org"}]}),
        )
        .await;
    let done = scene.wait_reason("news", "PartiallyAccepted").await;
    let bulk = done.status.expect("status").bulk.expect("bulk");
    assert_eq!((bulk.total, bulk.sent, bulk.failed), (3, 2, 1));
    assert_eq!(bulk.failures[0].to, "No-Thanks@example.org");
    assert_eq!(bulk.failures[0].reason, "Suppressed");
    assert!(
        bulk.failures[0].message.contains("a person suppressed it"),
        "{}",
        bulk.failures[0].message
    );
    let received = support::eventually("two copies", Duration::from_secs(30), || async {
        let found = support::received(&subject).await;
        (found.len() == 2).then_some(found)
    })
    .await;
    assert!(
        received
            .iter()
            .all(|m| m.to.iter().all(|t| t.address != "no-thanks@example.org"))
    );

    // The same list stops a single message to it.
    scene
        .message("single", to("no-thanks@example.org", "mailpit"))
        .await;
    scene.wait_reason("single", "Suppressed").await;
    controller.stop().await;
}
