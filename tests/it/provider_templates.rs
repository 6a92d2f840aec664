//! `providerTemplate`: a template stored at the email service, named by the
//! message and rendered there with its `data`, in each service's documented
//! fields; refused for SMTP and for an id the service does not know.

use crate::support::fixtures::{self, Scene};
use mailroom::api::Phase;
use mailroom_fakes::Service;
use serde_json::{Value, json};

/// A message through provider `api` using stored template `id`.
fn templated(id: &str, subject: Option<&str>) -> Value {
    let mut spec = json!({"providerRef": {"name": "api"}, "to": ["x@example.org"],
                          "providerTemplate": {"id": id}, "data": {"name": "Alice", "count": 3}});
    if let Some(subject) = subject {
        spec["subject"] = json!(subject);
    }
    spec
}

/// The form fields of a recorded Mailgun request, as name/value text pairs.
fn form(body: &Value) -> Vec<(String, String)> {
    body.as_array()
        .expect("form")
        .iter()
        .map(|f| {
            let value = f[1]
                .as_str()
                .map_or_else(|| f[1].to_string(), str::to_string);
            (f[0].as_str().unwrap_or_default().to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn each_service_gets_its_stored_template_and_the_data() {
    for service in Service::ALL {
        let (scene, fake, controller) =
            fixtures::api_scene(service, "stored", fixtures::VALID_API_KEY).await;
        let (id, subject) = match service {
            Service::Mailtrap => ("b81aabcd-1a1e-41cf-91b6-eca0254b3d96", None),
            Service::Resend => ("welcome", Some("Welcome")),
            Service::Postmark => ("welcome", None),
            Service::Mailgun => ("welcome", None),
            Service::SendGrid => ("d-0123456789abcdef0123456789abcdef", None),
        };
        scene.message("stored", templated(id, subject)).await;
        let sent = scene.wait_phase("stored", Phase::Sent).await;
        assert!(
            sent.status.expect("status").provider_message_id.is_some(),
            "{service:?}"
        );
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1, "{service:?}");
        let request = &accepted[0];
        let body = &request.body;
        let data = json!({"name": "Alice", "count": 3});
        match service {
            Service::Mailtrap => {
                assert_eq!(body["template_uuid"], json!(id));
                assert_eq!(body["template_variables"], data);
                assert!(body.get("subject").is_none() && body.get("text").is_none());
            }
            Service::Resend => {
                assert_eq!(body["template"], json!({"id": id, "variables": data}));
                assert_eq!(body["subject"], json!("Welcome"));
                assert!(body.get("html").is_none() && body.get("text").is_none());
            }
            Service::Postmark => {
                assert_eq!(request.path, "/email/withTemplate");
                assert_eq!(body["TemplateAlias"], json!("welcome"));
                assert_eq!(body["TemplateModel"], data);
                assert!(body.get("Subject").is_none() && body.get("TextBody").is_none());
            }
            Service::Mailgun => {
                let fields = form(body);
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                assert_eq!(get("template").as_deref(), Some("welcome"));
                let variables: Value =
                    serde_json::from_str(&get("t:variables").expect("t:variables")).expect("JSON");
                assert_eq!(variables, data);
                assert!(get("subject").is_none() && get("text").is_none());
            }
            Service::SendGrid => {
                assert_eq!(body["template_id"], json!(id));
                assert_eq!(body["personalizations"][0]["dynamic_template_data"], data);
                assert!(body.get("content").is_none());
            }
        }
        controller.stop().await;
    }
}

#[tokio::test]
async fn a_numeric_postmark_id_is_a_template_id_and_an_unknown_one_is_rejected() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Postmark, "stored-ids", fixtures::VALID_API_KEY).await;
    scene.message("by-id", templated("1234567", None)).await;
    scene.wait_phase("by-id", Phase::Sent).await;
    assert_eq!(fake.accepted()[0].body["TemplateId"], json!(1234567));

    scene
        .message("unknown", templated("no-such-template", None))
        .await;
    let failed = scene.wait_phase("unknown", Phase::Failed).await;
    let error = failed
        .status
        .expect("status")
        .last_error
        .expect("lastError");
    assert_eq!(error.reason, "Rejected");
    assert_eq!(error.provider_code.as_deref(), Some("1101"));
    assert!(
        error.message.contains("Template not found"),
        "{}",
        error.message
    );
    assert_eq!(fake.accepted().len(), 1, "nothing more was accepted");
    controller.stop().await;
}

#[tokio::test]
async fn a_stored_template_the_service_cannot_take_fails_before_any_send() {
    // Mailtrap template ids are UUIDs; a subject would be ignored there.
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Mailtrap, "stored-bad", fixtures::VALID_API_KEY).await;
    scene.message("alias", templated("welcome", None)).await;
    scene
        .message(
            "subject",
            templated("b81aabcd-1a1e-41cf-91b6-eca0254b3d96", Some("Hi")),
        )
        .await;
    for (name, field) in [
        ("alias", "spec.providerTemplate.id"),
        ("subject", "spec.subject"),
    ] {
        let failed = scene.wait_phase(name, Phase::Failed).await;
        let status = failed.status.expect("status");
        let error = status.last_error.expect("lastError");
        assert_eq!(error.reason, "InvalidRequest");
        assert!(error.message.contains(field), "{}", error.message);
    }
    assert!(fake.posts().is_empty(), "nothing reached the service");
    controller.stop().await;
}

#[tokio::test]
async fn smtp_has_no_stored_templates_and_the_schema_keeps_bodies_apart() {
    let scene = Scene::new("stored-smtp").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let mut spec = templated("welcome", None);
    spec["providerRef"]["name"] = json!("mailpit");
    scene.message("smtp", spec).await;
    let failed = scene.wait_phase("smtp", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("lastError");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error.message.contains("spec.providerTemplate") && error.message.contains("SMTP"),
        "{}",
        error.message
    );
    assert_eq!(status.attempts, 0, "refused before any attempt");
    controller.stop().await;

    let mut with_text = templated("welcome", None);
    with_text["text"] = json!("hello");
    scene
        .assert_refused(
            "EmailMessage",
            "with-text",
            with_text,
            "providerTemplate supplies the body",
        )
        .await;
    let mut with_ref = templated("welcome", None);
    with_ref["templateRef"] = json!({"name": "local"});
    scene
        .assert_refused(
            "EmailMessage",
            "with-ref",
            with_ref,
            "providerTemplate supplies the body",
        )
        .await;
    let mut blank = templated("welcome", None);
    blank["providerTemplate"]["id"] = json!("has space");
    scene
        .assert_refused("EmailMessage", "blank", blank, "providerTemplate.id")
        .await;
}
