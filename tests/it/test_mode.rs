//! `api.testMode` against each service's strict fake: the request carries
//! the service's own test switch (Postmark's test server token, Mailgun
//! `o:testmode`, SendGrid `mail_settings.sandbox_mode`, Resend's test
//! address, a Mailtrap sandbox inbox), the fake delivers nothing, the
//! provider says it is in test mode, and each message, single or bulk, is
//! Sent with reason TestMode.

use kube::api::{Api, Patch, PatchParams};
use mailroom::api::{EmailProvider, Phase};
use mailroom_fakes::Service;
use serde_json::{Value, json};

use crate::registration::scene;
use crate::support::fixtures::{self, RunningController, VALID_API_KEY};

/// What the service's test switch looks like in the request the fake got.
fn switched_on(service: Service, recorded: &mailroom_fakes::Recorded) -> bool {
    let field = |name: &str| -> Vec<String> {
        recorded
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter(|pair| pair[0] == name)
            .filter_map(|pair| pair[1].as_str().map(str::to_string))
            .collect()
    };
    match service {
        Service::Postmark => {
            recorded
                .headers
                .get("x-postmark-server-token")
                .map(String::as_str)
                == Some("POSTMARK_API_TEST")
        }
        Service::Mailgun => field("o:testmode") == ["yes"],
        Service::SendGrid => {
            recorded.body["mail_settings"]["sandbox_mode"]["enable"] == Value::Bool(true)
                && recorded.status == 200
        }
        Service::Resend => {
            let items: Vec<&Value> = match &recorded.body {
                Value::Array(items) => items.iter().collect(),
                body => vec![body],
            };
            items.iter().all(|b| {
                b["to"] == json!(["delivered@resend.dev"])
                    && b["headers"]["X-Original-To"].is_string()
            })
        }
        Service::Mailtrap => {
            recorded.path.starts_with("/api/send/123")
                || recorded.path.starts_with("/api/batch/123")
        }
    }
}

#[tokio::test]
async fn each_services_test_mode_delivers_nothing_and_says_so() {
    for service in [
        Service::Postmark,
        Service::Mailgun,
        Service::SendGrid,
        Service::Resend,
        Service::Mailtrap,
    ] {
        let (scene, fake) = scene(service, "test-mode", VALID_API_KEY).await;
        let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
        let mut api = json!({"testMode": true});
        if service == Service::Mailtrap {
            api["mailtrap"] = json!({"sandboxInboxId": 123});
        }
        providers
            .patch(
                "api",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"api": api}})),
            )
            .await
            .expect("test mode on");
        let controller = RunningController::start_with_settings(
            scene.client.clone(),
            fixtures::settings(&scene.ns),
        );
        let provider =
            fixtures::wait_provider(&scene.client, &scene.ns, "api", "in test mode", |p| {
                p.status.as_ref().is_some_and(|s| s.test_mode)
                    && fixtures::condition_of(p, "Ready").0 == "True"
            })
            .await;
        let ready = fixtures::condition_of(&provider, "Ready").2;
        assert!(
            ready.contains("test mode: nothing sent through it is delivered"),
            "{service:?}: {ready}"
        );

        scene.note("single", "api", "a test").await;
        let single = scene.wait_phase("single", Phase::Sent).await;
        scene
            .message(
                "bulk",
                json!({"providerRef": {"name": "api"}, "subject": "a bulk test", "text": "t",
                       "recipients": [{"to": "a@example.org"}, {"to": "b@example.org"}]}),
            )
            .await;
        let bulk = scene.wait_phase("bulk", Phase::Sent).await;
        for message in [&single, &bulk] {
            let sent = message
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == "Sent")
                .cloned()
                .expect("Sent");
            assert_eq!(sent.reason, "TestMode", "{service:?}: {}", sent.message);
            assert!(
                sent.message.contains("nothing was delivered"),
                "{service:?}: {}",
                sent.message
            );
        }
        let sends: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && (200..300).contains(&r.status))
            .collect();
        assert!(!sends.is_empty(), "{service:?}");
        for recorded in &sends {
            assert!(
                switched_on(service, recorded),
                "{service:?}: {} {}",
                recorded.path,
                recorded.body
            );
        }
        assert_eq!(
            fake.delivered(),
            0,
            "{service:?}: the fake delivered nothing"
        );
        controller.stop().await;
    }
}
