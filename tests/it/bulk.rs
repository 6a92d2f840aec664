//! Bulk messages (`recipients`): one email per recipient, each with its own
//! data, sent through the service's batch endpoint in batches of its size
//! (over pooled connections for SMTP), with per-recipient failures counted
//! and listed, and a failed batch retried without duplicates.

use crate::support;

use std::time::Duration;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use mailroom::api::{EmailTemplate, Phase};
use mailroom_fakes::{Failure, Service};
use serde_json::{Value, json};

fn recipients(count: usize, domain: &str) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"to": format!("user{i}@{domain}"), "data": {"name": format!("User {i}")}}))
        .collect()
}

/// How many emails one batch request of `service` carried.
fn items(service: Service, body: &Value) -> usize {
    match service {
        Service::Mailtrap => body["requests"].as_array().map_or(0, Vec::len),
        Service::Resend => body.as_array().map_or(0, Vec::len),
        Service::Postmark => body.as_array().map_or(0, Vec::len),
        Service::SendGrid => body["personalizations"].as_array().map_or(0, Vec::len),
        Service::Mailgun => body
            .as_array()
            .map_or(0, |f| f.iter().filter(|f| f[0] == json!("to")).count()),
    }
}

#[tokio::test]
async fn a_thousand_recipients_go_out_in_batches_of_each_service_size() {
    for (service, batch) in [
        (Service::Resend, 100),
        (Service::Postmark, 500),
        (Service::Mailtrap, 500),
        (Service::SendGrid, 1000),
        (Service::Mailgun, 1000),
    ] {
        let (scene, fake, controller) =
            fixtures::api_scene(service, "bulk", fixtures::VALID_API_KEY).await;
        scene
            .message(
                "newsletter",
                json!({"providerRef": {"name": "api"}, "subject": "News", "text": "This month...",
                       "recipients": recipients(1000, "example.org")}),
            )
            .await;
        let sent = scene.wait_message("newsletter", "Sent", |m| {
            m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Sent)
        });
        let sent = tokio::time::timeout(Duration::from_secs(60), sent)
            .await
            .expect("sent within a minute");
        let status = sent.status.expect("status");
        let bulk = status.bulk.expect("bulk progress");
        assert_eq!(
            (bulk.total, bulk.sent, bulk.failed, bulk.next),
            (1000, 1000, 0, 1000),
            "{service:?}"
        );
        let posts = fake.posts();
        let sizes: Vec<usize> = posts.iter().map(|r| items(service, &r.body)).collect();
        assert_eq!(sizes, vec![batch; 1000 / batch], "{service:?}: batch sizes");
        assert_eq!(fake.delivered(), 1000, "{service:?}: emails delivered");
        controller.stop().await;
    }
}

#[tokio::test]
async fn each_recipient_gets_its_own_rendered_email_over_smtp() {
    let scene = Scene::new("bulk-smtp").await;
    scene.mailpit_provider().await;
    let tag = support::namespace_suffix();
    let object = json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailTemplate", "metadata": {"name": "hello"},
                        "spec": {"subject": format!("bulk {tag} for {{{{name}}}}"), "text": "Hi {{name}} from {{team}}"}});
    fixtures::create::<EmailTemplate>(&scene.client, &scene.ns, object).await;
    let controller = scene.controller().await;
    scene
        .message(
            "hello-all",
            json!({"providerRef": {"name": "mailpit"}, "templateRef": {"name": "hello"},
                   "data": {"team": "platform"}, "recipients": recipients(300, "example.net")}),
        )
        .await;
    let sent = tokio::time::timeout(
        Duration::from_secs(60),
        scene.wait_phase("hello-all", Phase::Sent),
    )
    .await
    .expect("sent within a minute");
    assert_eq!(sent.status.expect("status").bulk.expect("bulk").sent, 300);

    let mailpit = Mailpit::shared();
    let found = mailpit
        .wait_for(
            &format!("subject:\"bulk {tag}\""),
            300,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(found.len(), 300, "one email per recipient, no duplicates");
    // kubectl get shows the first recipient and how many more.
    let listed = support::kubectl(
        &support::env().kubeconfig,
        &["get", "emailmessage", "hello-all", "-n", &scene.ns],
    );
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains("TO") && table.contains("(+299)"),
        "the TO column names the first recipient: {table}"
    );
    let one = found
        .iter()
        .find(|m| m.subject == format!("bulk {tag} for User 7"))
        .expect("User 7's email");
    let message = mailpit.message(&one.id).await;
    assert_eq!(message.to.len(), 1);
    assert_eq!(message.to[0].address, "user7@example.net");
    assert!(
        message.text.contains("Hi User 7 from platform"),
        "{}",
        message.text
    );
    controller.stop().await;
}

#[tokio::test]
async fn refused_recipients_are_counted_and_listed_while_the_rest_are_sent() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Postmark, "bulk-partial", fixtures::VALID_API_KEY).await;
    let object = json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailTemplate", "metadata": {"name": "hi"},
                        "spec": {"subject": "Hi {{name}}", "text": "Hello {{name}}"}});
    fixtures::create::<EmailTemplate>(&scene.client, &scene.ns, object).await;
    // Postmark refuses the inactive address; the third recipient lacks `name`.
    let list = json!([
        {"to": "a@example.org", "data": {"name": "A"}},
        {"to": "inactive@example.org", "data": {"name": "Gone"}},
        {"to": "c@example.org"},
        {"to": "d@example.org", "data": {"name": "D"}}
    ]);
    scene
        .message(
            "mixed",
            json!({"providerRef": {"name": "api"}, "templateRef": {"name": "hi"}, "recipients": list}),
        )
        .await;
    let done = scene.wait_phase("mixed", Phase::Sent).await;
    let status = done.status.expect("status");
    assert_eq!(status.conditions[0].reason, "PartiallyAccepted");
    let bulk = status.bulk.expect("bulk");
    assert_eq!((bulk.total, bulk.sent, bulk.failed), (4, 2, 2));
    let failures: Vec<(String, String)> = bulk
        .failures
        .iter()
        .map(|f| (f.to.clone(), f.reason.clone()))
        .collect();
    assert_eq!(
        failures,
        [
            ("inactive@example.org".to_string(), "Rejected".to_string()),
            ("c@example.org".to_string(), "InvalidRequest".to_string())
        ]
    );
    assert!(
        bulk.failures[1].message.contains("name"),
        "{:?}",
        bulk.failures[1]
    );
    assert_eq!(fake.delivered(), 2);
    controller.stop().await;
}

#[tokio::test]
async fn a_failed_batch_is_retried_and_nobody_gets_two() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Resend, "bulk-retry", fixtures::VALID_API_KEY).await;
    fake.fail_next(Failure {
        status: 503,
        retry_after: None,
        times: 1,
        delay: Duration::ZERO,
    });
    scene
        .message(
            "retry",
            json!({"providerRef": {"name": "api"}, "subject": "s", "text": "t",
                   "recipients": recipients(250, "example.org")}),
        )
        .await;
    let sent = tokio::time::timeout(
        Duration::from_secs(60),
        scene.wait_phase("retry", Phase::Sent),
    )
    .await
    .expect("sent within a minute");
    let bulk = sent.status.expect("status").bulk.expect("bulk");
    assert_eq!((bulk.sent, bulk.failed, bulk.retries), (250, 0, 0));
    assert_eq!(
        fake.posts().len(),
        4,
        "one refused batch and three accepted"
    );
    assert_eq!(fake.delivered(), 250, "every recipient once");
    controller.stop().await;
}

#[tokio::test]
async fn bulk_specs_the_schema_refuses() {
    let scene = Scene::new("bulk-schema").await;
    let base = || {
        json!({"providerRef": {"name": "p"}, "subject": "s", "text": "t",
               "recipients": [{"to": "a@example.org"}]})
    };
    let mut with_to = base();
    with_to["to"] = json!(["b@example.org"]);
    scene
        .assert_refused(
            "EmailMessage",
            "with-to",
            with_to,
            "leave to, cc and bcc empty",
        )
        .await;
    let mut with_files = base();
    with_files["attachments"] =
        json!([{"filename": "a.pdf", "secretKeyRef": {"name": "s", "key": "k"}}]);
    scene
        .assert_refused(
            "EmailMessage",
            "with-files",
            with_files,
            "attachments cannot be combined with recipients",
        )
        .await;
    let mut bad_address = base();
    bad_address["recipients"] = json!([{"to": "not an address"}]);
    scene
        .assert_refused(
            "EmailMessage",
            "bad-address",
            bad_address,
            "recipients[0].to",
        )
        .await;
}

/// A Mailtrap batch answer that accounts for fewer emails than were sent
/// leaves the rest with an unknown outcome, handled by the delivery policy
/// (AtMostOnce: listed as OutcomeUnknown, not sent again), never with an
/// invented refusal.
#[tokio::test]
async fn a_short_batch_answer_is_an_unknown_outcome_not_a_failure() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Mailtrap, "short-batch", fixtures::VALID_API_KEY).await;
    fake.answer_next_batch_short(2);
    scene
        .message(
            "short",
            json!({"providerRef": {"name": "api"}, "subject": "News", "text": "t",
                   "deliveryPolicy": "AtMostOnce", "recipients": recipients(4, "example.org")}),
        )
        .await;
    let done = scene
        .wait_message("short", "finished", |m| {
            m.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(Phase::is_finished)
        })
        .await;
    let bulk = done.status.expect("status").bulk.expect("bulk progress");
    assert_eq!((bulk.sent, bulk.failed), (2, 2), "{bulk:?}");
    for failure in &bulk.failures {
        assert_eq!(failure.reason, "OutcomeUnknown", "{failure:?}");
        assert!(!failure.message.contains("422"), "{failure:?}");
    }
    assert_eq!(fake.posts().len(), 1, "not sent again");
    controller.stop().await;
}

/// A bulk message with large bodies goes in batches small enough for the
/// service's batch payload limit (Postmark: 50 MB), not in one the service
/// would refuse: 60 emails of 1 MB each go as 49 and 11.
#[tokio::test]
async fn large_bodies_go_in_batches_under_the_services_byte_limit() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Postmark, "batch-bytes", fixtures::VALID_API_KEY).await;
    scene
        .message(
            "large",
            json!({"providerRef": {"name": "api"}, "subject": "Large", "text": "x".repeat(1_000_000),
                   "recipients": recipients(60, "example.org")}),
        )
        .await;
    let messages: kube::Api<mailroom::api::EmailMessage> =
        kube::Api::namespaced(scene.client.clone(), &scene.ns);
    let status = support::eventually(
        "the large bulk message done",
        Duration::from_secs(120),
        || async {
            let status = messages.get("large").await.ok()?.status?;
            status
                .phase
                .is_some_and(Phase::is_finished)
                .then_some(status)
        },
    )
    .await;
    let bulk = status.bulk.clone().expect("bulk progress");
    assert_eq!(
        (status.phase, bulk.sent, bulk.failed),
        (Some(Phase::Sent), 60, 0),
        "{status:?}"
    );
    let sizes: Vec<usize> = fake
        .posts()
        .iter()
        .map(|r| items(Service::Postmark, &r.body))
        .collect();
    assert_eq!(sizes, vec![49, 11]);
    controller.stop().await;
}
