//! `webhook.register` against each service's strict fake: the controller
//! creates the subscription at the service (one, at the receiver's public
//! URL, for the events mailroom reads), writes the key the service gave
//! into a Secret it owns, and events the service then signs with that key
//! are recorded; a subscription deleted at the service comes back; one a
//! crashed leader left behind is adopted, never doubled; deleting the
//! provider removes it at the service; and a key without the scope, a
//! public URL that is not https or a Secret that is not mailroom's give a
//! clear condition while sending goes on.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use mailroom::api::{EmailProvider, Phase};
use mailroom_fakes::webhook::{Event, Happened};
use mailroom_fakes::{Config, Fake, Service};
use serde_json::json;

use crate::support::fixtures::{self, RunningController, Scene, VALID_API_KEY};
use crate::support::webhooks::{Receiver, post};
use crate::support::{self};

/// Where the test pretends the receiver is reached from the internet.
pub(crate) const PUBLIC: &str = "https://hooks.example.test";

pub(crate) fn start_controller(scene: &Scene, public: &str) -> RunningController {
    RunningController::start_with_settings(
        scene.client.clone(),
        mailroom::controller::Settings {
            webhook_public_url: Some(public.to_string()),
            ..fixtures::settings(&scene.ns)
        },
    )
}

/// A scene with provider `api` on `service`'s fake, with `key`.
pub(crate) async fn scene(service: Service, test: &str, key: &str) -> (Scene, Fake) {
    let fake = Fake::start(Config::with_key(VALID_API_KEY))
        .await
        .expect("starting the fake");
    let scene = Scene::new(&format!("{}-{test}", format!("{service:?}").to_lowercase())).await;
    scene.api_provider(service, &fake.url, key).await;
    (scene, fake)
}

async fn register(scene: &Scene) {
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let webhook =
        json!({"spec": {"webhook": {"secretRef": {"name": "api-webhook"}, "register": true}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&webhook))
        .await
        .expect("asking for registration");
}

/// The `WebhookReady` condition's reason and message.
fn webhook_condition(p: &EmailProvider) -> (String, String) {
    let (_, reason, message) = fixtures::condition_of(p, "WebhookReady");
    (reason, message)
}

/// Waits for `WebhookReady` with `reason`; answers its message.
async fn webhook_ready(scene: &Scene, reason: &str) -> String {
    let what = format!("WebhookReady {reason}");
    let provider = fixtures::wait_provider(&scene.client, &scene.ns, "api", &what, |p| {
        webhook_condition(p).0 == reason
    })
    .await;
    webhook_condition(&provider).1
}

fn url(scene: &Scene) -> String {
    format!("{PUBLIC}/webhooks/{}/api", scene.ns)
}

/// The fake's subscriptions to this scene's URL.
fn subscriptions(fake: &Fake, scene: &Scene) -> Vec<mailroom_fakes::manage::Subscription> {
    fake.subscriptions()
        .into_iter()
        .filter(|s| s.url == url(scene))
        .collect()
}

/// Sends a message, posts a delivery signed as the subscription signs,
/// and waits for Delivered.
async fn delivered_through(scene: &Scene, fake: &Fake, receiver: &Receiver, name: &str) {
    scene.note(name, "api", name).await;
    let sent = scene.wait_phase(name, Phase::Sent).await;
    let id = sent
        .status
        .and_then(|s| s.provider_message_id)
        .expect("an id");
    let subscription = subscriptions(fake, scene).pop().expect("a subscription");
    let http = reqwest::Client::new();
    // Posted as the service does, again while refused (the receiver reads a
    // changed key again within seconds).
    support::eventually(
        "an event signed with the registered key taken",
        Duration::from_secs(30),
        || async {
            let now = jiff::Timestamp::now().as_second();
            let event =
                Event::new(Happened::Delivered, &id, "x@example.org", now).echoing(fake.echo(&id));
            let request = subscription.signer.requests(&[event], now).pop()?;
            let status = post(&http, &format!("{}/api", receiver.base), &request).await;
            if status != 200 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (status == 200).then_some(())
        },
    )
    .await;
    scene.wait_phase(name, Phase::Delivered).await;
}

async fn each_service_registers_keeps_and_removes(service: Service) {
    let (scene, fake) = scene(service, "register", VALID_API_KEY).await;
    let controller = start_controller(&scene, PUBLIC);
    register(&scene).await;
    let message = webhook_ready(&scene, "Registered").await;
    assert!(message.contains(&url(&scene)), "{message}");
    let made = subscriptions(&fake, &scene);
    assert_eq!(made.len(), 1, "one subscription");
    let wanted: &[&str] = match service {
        Service::Resend => &[
            "email.delivered",
            "email.bounced",
            "email.complained",
            "email.suppressed",
        ],
        Service::Mailtrap => &[
            "delivery",
            "bounce",
            "soft_bounce",
            "spam_complaint",
            "unsubscribe",
        ],
        Service::Postmark => &[
            "Delivery",
            "Bounce",
            "SpamComplaint",
            "Open",
            "Click",
            "SubscriptionChange",
        ],
        Service::Mailgun => &[
            "delivered",
            "permanent_fail",
            "temporary_fail",
            "complained",
            "unsubscribed",
        ],
        Service::SendGrid => &[
            "delivered",
            "bounce",
            "dropped",
            "spam_report",
            "unsubscribe",
        ],
    };
    for event in wanted {
        assert!(
            made[0].events.iter().any(|e| e == event),
            "{service:?}: {event} in {:?}",
            made[0].events
        );
    }
    assert!(made[0].active);

    // The Secret is the controller's, owned by the provider.
    let secrets: Api<Secret> = Api::namespaced(scene.client.clone(), &scene.ns);
    let secret = secrets
        .get("api-webhook")
        .await
        .expect("the webhook Secret");
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("mailroom")
    );
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("EmailProvider", "api")
    );

    // Events signed with what the service gave are taken.
    let receiver = Receiver::start(&scene, scene.client.clone()).await;
    delivered_through(&scene, &fake, &receiver, "first").await;

    // Deleted at the service: put back at the next look (a change to the
    // provider brings one; otherwise every 10 minutes), once.
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let before = providers
        .get("api")
        .await
        .expect("the provider")
        .status
        .and_then(|s| s.webhook)
        .expect("status.webhook");
    assert_eq!(before.url, url(&scene));
    assert!(fake.delete_subscription(&made[0].id));
    let touch = json!({"metadata": {"annotations": {"example.org/touched": "1"}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .expect("touching the provider");
    support::eventually(
        "the subscription back at the service",
        Duration::from_secs(30),
        || async { (subscriptions(&fake, &scene).len() == 1).then_some(()) },
    )
    .await;
    support::eventually(
        "the WebhookDrifted event",
        Duration::from_secs(30),
        || async {
            let events = fixtures::events_for(&scene.client, &scene.ns, "api").await;
            events
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == "WebhookDrifted")
                .then_some(())
        },
    )
    .await;
    // Status names the new subscription (Mailgun's id is its URL: the same).
    if service != Service::Mailgun {
        support::eventually(
            "status.webhook names the new subscription",
            Duration::from_secs(30),
            || async {
                let provider = providers.get("api").await.ok()?;
                let webhook = provider.status?.webhook?;
                (webhook.id != before.id).then_some(())
            },
        )
        .await;
    }
    // The new subscription's key reached the Secret and the receiver.
    support::eventually(
        "events of the new subscription taken",
        Duration::from_secs(30),
        || async {
            let subscription = subscriptions(&fake, &scene).pop()?;
            let held = secrets.get("api-webhook").await.ok()?;
            let data = held.data.unwrap_or_default();
            let expected = subscription.signer.secret_data();
            expected
                .iter()
                .all(|(k, v)| data.get(k).map(|b| b.0.as_slice()) == Some(v.as_bytes()))
                .then_some(())
        },
    )
    .await;
    delivered_through(&scene, &fake, &receiver, "second").await;
    assert_eq!(subscriptions(&fake, &scene).len(), 1, "never two");

    // Deleting the provider removes the subscription at the service first.
    providers
        .delete("api", &DeleteParams::default())
        .await
        .expect("deleting");
    support::wait_gone(&providers, "api").await;
    assert!(
        subscriptions(&fake, &scene).is_empty(),
        "removed at the service"
    );
    controller.stop().await;
}

#[tokio::test]
async fn resend_webhook_is_registered_kept_and_removed() {
    each_service_registers_keeps_and_removes(Service::Resend).await;
}

#[tokio::test]
async fn mailtrap_webhook_is_registered_kept_and_removed() {
    each_service_registers_keeps_and_removes(Service::Mailtrap).await;
}

#[tokio::test]
async fn postmark_webhook_is_registered_kept_and_removed() {
    each_service_registers_keeps_and_removes(Service::Postmark).await;
}

#[tokio::test]
async fn mailgun_webhook_is_registered_kept_and_removed() {
    each_service_registers_keeps_and_removes(Service::Mailgun).await;
}

#[tokio::test]
async fn sendgrid_webhook_is_registered_kept_and_removed() {
    each_service_registers_keeps_and_removes(Service::SendGrid).await;
}

/// A subscription a leader made before it died (nothing written back): the
/// next one finds it by its URL and adopts it (Resend shows its key again)
/// or, when its key cannot be read again (Mailtrap), replaces it: one
/// subscription either way.
#[tokio::test]
async fn a_subscription_left_by_a_crashed_leader_is_adopted_not_doubled() {
    for service in [Service::Resend, Service::Mailtrap] {
        let (scene, fake) = scene(service, "adopt", VALID_API_KEY).await;
        let http = reqwest::Client::new();
        let (path, body, auth) = match service {
            Service::Resend => (
                "/webhooks",
                json!({"endpoint": url(&scene), "events": ["email.delivered"]}),
                ("authorization", format!("Bearer {VALID_API_KEY}")),
            ),
            _ => (
                "/api/webhooks",
                json!({"webhook": {"url": url(&scene), "webhook_type": "email_sending", "sending_stream": "transactional", "event_types": ["delivery"]}}),
                ("api-token", VALID_API_KEY.to_string()),
            ),
        };
        let made = http
            .post(format!("{}{path}", fake.url))
            .header(auth.0, auth.1)
            .json(&body)
            .send()
            .await
            .expect("creating at the fake");
        assert!(made.status().is_success(), "{:?}", made.text().await);
        let controller = start_controller(&scene, PUBLIC);
        register(&scene).await;
        let message = webhook_ready(&scene, "Registered").await;
        assert_eq!(
            subscriptions(&fake, &scene).len(),
            1,
            "{service:?}: {message}"
        );
        let receiver = Receiver::start(&scene, scene.client.clone()).await;
        delivered_through(&scene, &fake, &receiver, "adopted").await;
        controller.stop().await;
    }
}

#[tokio::test]
async fn what_cannot_register_says_why_and_sending_goes_on() {
    // A key that may send but not manage webhooks.
    let send_only = format!("{VALID_API_KEY}-send-only");
    let (scene, fake) = scene(Service::Resend, "scope", &send_only).await;
    let controller = start_controller(&scene, PUBLIC);
    register(&scene).await;
    let message = webhook_ready(&scene, "RegistrationFailed").await;
    assert!(
        message.contains("may not manage") && message.contains("restricted"),
        "{message}"
    );
    scene.note("still", "api", "still sent").await;
    scene.wait_phase("still", Phase::Sent).await;
    assert!(fake.subscriptions().is_empty());
    controller.stop().await;

    // A public URL that is not https.
    let (scene, fake) = scene_with_default(Service::Postmark, "plain-url").await;
    let controller = start_controller(&scene, "http://hooks.example.test");
    register(&scene).await;
    let message = webhook_ready(&scene, "RegistrationFailed").await;
    assert!(message.contains("not an https URL"), "{message}");
    assert!(fake.subscriptions().is_empty());
    controller.stop().await;

    // A Secret of that name that is not mailroom's is never written.
    let (scene, fake) = scene_with_default(Service::SendGrid, "foreign-secret").await;
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "api-webhook"}, "stringData": {"password": "the team's"}}),
    )
    .await;
    let controller = start_controller(&scene, PUBLIC);
    register(&scene).await;
    let message = webhook_ready(&scene, "RegistrationFailed").await;
    assert!(
        message.contains("is not this provider's webhook Secret"),
        "{message}"
    );
    assert!(fake.subscriptions().is_empty());
    let secrets: Api<Secret> = Api::namespaced(scene.client.clone(), &scene.ns);
    let kept = secrets.get("api-webhook").await.expect("the team's Secret");
    let data = kept.data.unwrap_or_default();
    assert_eq!(data.len(), 1);
    assert_eq!(data["password"].0, b"the team's");
    controller.stop().await;
}

async fn scene_with_default(service: Service, test: &str) -> (Scene, Fake) {
    scene(service, test, VALID_API_KEY).await
}
