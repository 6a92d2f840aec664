//! Scheduling (`sendAt`), cleanup (`ttlSecondsAfterFinished`), and tags and
//! metadata mapped to each service's own fields and to SMTP headers.

use crate::support;

use std::time::Duration;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use kube::api::Api;
use mailroom::api::{EmailMessage, Phase};
use mailroom_fakes::Service;
use serde_json::{Value, json};

#[tokio::test]
async fn send_at_holds_a_message_until_its_time() {
    let scene = Scene::new("send-at").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("scheduled");
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
    let at = jiff::Timestamp::from_second(at.as_second()).expect("whole second");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject, "text": "later",
                      "sendAt": at.to_string()});
    scene.message("later", spec).await;
    let waiting = scene.wait_reason("later", "Scheduled").await;
    assert_eq!(waiting.status.expect("status").attempts, 0);
    assert_eq!(
        support::received_count(&subject).await,
        0,
        "not before its time"
    );

    let sent = scene.wait_phase("later", Phase::Sent).await;
    let sent_time = sent.status.expect("status").sent_time.expect("sentTime").0;
    assert!(sent_time >= at, "sent at {sent_time}, scheduled for {at}");
    support::received(&subject).await;
    controller.stop().await;
}

#[tokio::test]
async fn finished_messages_are_deleted_after_their_ttl() {
    let scene = Scene::new("ttl").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let spec = |subject: &str, to: &str, ttl: Option<u32>| {
        let mut spec = json!({"providerRef": {"name": "mailpit"}, "to": [to], "subject": subject, "text": "t"});
        if let Some(ttl) = ttl {
            spec["ttlSecondsAfterFinished"] = json!(ttl);
        }
        spec
    };
    // Kept by a GitOps tool: deleting it would only have the tool create it
    // again, and send it again. Finished first, so it is due before the
    // others: it is still there once they are gone.
    let managed = |name: &str, insist: bool| {
        let mut annotations = serde_json::Map::new();
        if insist {
            annotations.insert("mailroom.dev/expire-managed".into(), json!("true"));
        }
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
               "metadata": {"name": name, "labels": {"kustomize.toolkit.fluxcd.io/name": "apps"},
                            "annotations": annotations},
               "spec": spec(&support::unique(name), "x@example.org", Some(1))})
    };
    support::fixtures::create::<EmailMessage>(&scene.client, &scene.ns, managed("from-git", false))
        .await;
    support::fixtures::create::<EmailMessage>(
        &scene.client,
        &scene.ns,
        managed("from-git-expiring", true),
    )
    .await;
    scene.wait_phase("from-git", Phase::Sent).await;
    scene
        .message(
            "short-lived",
            spec(&support::unique("ttl"), "x@example.org", Some(2)),
        )
        .await;
    scene
        .message(
            "failed-short-lived",
            spec("ttl failed", "two..dots@example.org", Some(1)),
        )
        .await;
    scene
        .message(
            "kept",
            spec(&support::unique("kept"), "x@example.org", None),
        )
        .await;
    scene.wait_phase("short-lived", Phase::Sent).await;
    scene.wait_phase("kept", Phase::Sent).await;

    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    for name in ["short-lived", "failed-short-lived", "from-git-expiring"] {
        support::eventually(
            &format!("{name} to be deleted"),
            Duration::from_secs(20),
            || async {
                api.get_opt(name)
                    .await
                    .expect("get")
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }
    assert!(
        api.get_opt("kept").await.expect("get").is_some(),
        "a message without a TTL stays"
    );
    assert!(
        api.get_opt("from-git").await.expect("get").is_some(),
        "a message Flux manages stays despite its TTL"
    );
    controller.stop().await;
}

fn tagged(subject: &str, provider: &str) -> Value {
    json!({"providerRef": {"name": provider}, "to": ["x@example.org"], "subject": subject, "text": "t",
           "tags": ["welcome", "onboarding"], "metadata": {"user_id": "42", "plan": "pro"}})
}

#[tokio::test]
async fn tags_and_metadata_reach_each_service_as_it_documents_them() {
    for service in Service::ALL {
        let (scene, fake, controller) =
            fixtures::api_scene(service, "tags", fixtures::VALID_API_KEY).await;
        scene.message("tagged", tagged("tagged", "api")).await;
        let sent = scene.wait_phase("tagged", Phase::Sent).await;
        let origin = support::origin(&sent);
        // The message's own metadata, then the origin mailroom adds.
        let mut metadata = json!({"plan": "pro", "user_id": "42"});
        for (k, v) in &origin {
            metadata[k] = json!(v);
        }
        let body = fake.accepted()[0].body.clone();
        let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
        match service {
            Service::Mailtrap => {
                assert_eq!(field("category"), json!("welcome"));
                assert_eq!(field("custom_variables"), metadata);
            }
            Service::Resend => {
                let mut tags = vec![
                    json!({"name": "welcome", "value": "true"}),
                    json!({"name": "onboarding", "value": "true"}),
                    json!({"name": "plan", "value": "pro"}),
                    json!({"name": "user_id", "value": "42"}),
                ];
                tags.extend(origin.iter().map(|(k, v)| json!({"name": k, "value": v})));
                assert_eq!(field("tags"), Value::from(tags));
            }
            Service::Postmark => {
                assert_eq!(field("Tag"), json!("welcome"));
                assert_eq!(field("Metadata"), metadata);
            }
            Service::Mailgun => {
                let fields: Vec<(String, String)> = body
                    .as_array()
                    .expect("form")
                    .iter()
                    .map(|f| {
                        (
                            f[0].as_str().unwrap_or_default().into(),
                            f[1].as_str().unwrap_or_default().into(),
                        )
                    })
                    .filter(|(n, _): &(String, String)| n == "o:tag" || n.starts_with("v:"))
                    .collect();
                let expected = [
                    ("o:tag", "welcome"),
                    ("o:tag", "onboarding"),
                    ("v:plan", "pro"),
                    ("v:user_id", "42"),
                ];
                let mut expected: Vec<(String, String)> = expected
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect();
                expected.extend(origin.iter().map(|(k, v)| (format!("v:{k}"), v.clone())));
                assert_eq!(fields, expected);
            }
            Service::SendGrid => {
                assert_eq!(field("categories"), json!(["welcome", "onboarding"]));
                assert_eq!(field("custom_args"), metadata);
            }
        }
        controller.stop().await;
    }
}

#[tokio::test]
async fn tags_and_metadata_travel_as_headers_over_smtp() {
    let scene = Scene::new("tags-smtp").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("tagged smtp");
    scene.message("tagged", tagged(&subject, "mailpit")).await;
    scene.wait_phase("tagged", Phase::Sent).await;
    let found = support::received(&subject).await;
    let headers = Mailpit::shared().client_headers(&found[0].id).await;
    assert!(headers.contains("X-Tags: welcome, onboarding"), "{headers}");
    assert!(
        headers.contains(r#"X-Mailroom-Metadata: {"plan":"pro","user_id":"42"}"#),
        "{headers}"
    );
    controller.stop().await;
}
