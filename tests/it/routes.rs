//! EmailRoutes: a message naming a route goes out through the next provider
//! when an attempt certainly did not deliver, stays with its provider when
//! it may have, spreads by weight, passes over a provider whose circuit
//! breaker is open (also after a restart) and closes it with one probe; bad
//! routes are refused at apply or end the message naming the field.

use std::time::Duration;

use futures::StreamExt;
use mailroom::api::{EmailMessage, EmailProvider, Phase};
use mailroom_fakes::{Config, Failure, Fake, Service};
use serde_json::{Value, json};

use crate::support::{self, fixtures, fixtures::Scene};

/// Creates EmailRoute `name` with `spec`.
async fn route(scene: &Scene, name: &str, spec: Value) {
    let _: mailroom::api::EmailRoute = fixtures::create(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailRoute",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// A message `name` through route `route` with `subject`.
async fn routed(scene: &Scene, name: &str, route: &str, subject: &str) -> EmailMessage {
    scene
        .message(
            name,
            json!({"providerRef": {"kind": "EmailRoute", "name": route},
                   "to": ["someone@example.org"], "subject": subject, "text": "hi"}),
        )
        .await
}

fn status(m: &EmailMessage) -> mailroom::api::EmailMessageStatus {
    m.status.clone().unwrap_or_default()
}

/// The message of the `Sent` condition.
fn sent_text(m: &EmailMessage) -> String {
    status(m)
        .conditions
        .iter()
        .find(|c| c.type_ == "Sent")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn sent_through(m: &EmailMessage) -> String {
    status(m).provider.map(|p| p.name).unwrap_or_default()
}

fn quick() -> Failure {
    Failure {
        status: 503,
        retry_after: None,
        times: 1,
        delay: Duration::ZERO,
    }
}

fn degraded(p: &EmailProvider) -> Option<(String, String)> {
    let status = p.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Degraded")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// A namespace with a fake `service` as provider `api` and the shared
/// mailpit as provider `mailpit`, route `mail` naming them in that order,
/// and a controller with the test settings changed by `tune`, both
/// providers Ready.
async fn api_then_mailpit(
    test: &str,
    service: Service,
    tune: fn(&mut mailroom::controller::Settings),
) -> (Scene, Fake, fixtures::RunningController) {
    let fake = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let scene = Scene::new(test).await;
    scene
        .api_provider(service, &fake.url, fixtures::VALID_API_KEY)
        .await;
    scene.mailpit_provider().await;
    route(
        &scene,
        "mail",
        json!({"providers": [{"name": "api"}, {"name": "mailpit"}]}),
    )
    .await;
    let mut settings = fixtures::settings(&scene.ns);
    tune(&mut settings);
    let controller =
        fixtures::RunningController::start_with_settings(support::client().await, settings);
    let ready = if service == Service::Postmark {
        "Verified"
    } else {
        "Configured"
    };
    scene.wait_provider("api", ready).await;
    scene.wait_provider("mailpit", "Verified").await;
    (scene, fake, controller)
}

#[tokio::test]
async fn a_failure_that_certainly_did_not_deliver_moves_the_message_to_the_next_provider() {
    let (scene, fake, controller) =
        api_then_mailpit("route-failover", Service::Resend, |_| {}).await;

    // Resend answers 503 once: it drops a repeated request by its
    // Idempotency-Key, so the 503 says nothing was sent.
    fake.fail_next(quick());
    let subject = support::unique("failed over");
    routed(&scene, "first", "mail", &subject).await;
    let sent = scene.wait_phase("first", Phase::Sent).await;
    assert_eq!(sent_through(&sent), "mailpit");
    let attempts = status(&sent).provider_attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        (
            attempts[0].provider.name.as_str(),
            attempts[0].attempts,
            attempts[0].last_reason.as_deref(),
            attempts[0].passed_over
        ),
        ("api", 1, Some("TransientFailure"), true)
    );
    assert_eq!(
        (
            attempts[1].provider.name.as_str(),
            attempts[1].attempts,
            attempts[1].last_reason.as_deref()
        ),
        ("mailpit", 1, None)
    );
    assert_eq!(status(&sent).attempts, 2);
    assert_eq!(support::received(&subject).await.len(), 1, "one copy");
    assert!(fake.accepted().is_empty(), "the service took nothing");
    let events = fixtures::events_for(&scene.client, &scene.ns, "first").await;
    assert!(
        events
            .iter()
            .any(|(t, r, note)| t == "Warning" && r == "FailedOver" && note.contains("\"api\"")),
        "{events:?}"
    );

    // The primary answers again: the next message goes through it.
    let subject = support::unique("primary again");
    routed(&scene, "second", "mail", &subject).await;
    let sent = scene.wait_phase("second", Phase::Sent).await;
    assert_eq!(sent_through(&sent), "api");
    assert_eq!(fake.accepted().len(), 1);
    assert_eq!(support::received_count(&subject).await, 0);
    controller.stop().await;
}

#[tokio::test]
async fn an_answer_that_may_have_delivered_keeps_the_message_with_its_provider() {
    let (scene, fake, controller) =
        api_then_mailpit("route-stays", Service::Postmark, |_| {}).await;

    // A 500 from Postmark, which does not recognise a repeated request: it
    // may have queued the message, so it is retried there, not elsewhere.
    fake.fail_next(Failure {
        status: 500,
        ..quick()
    });
    let subject = support::unique("stays on 500");
    routed(&scene, "on-500", "mail", &subject).await;
    let sent = scene.wait_phase("on-500", Phase::Sent).await;
    assert_eq!(sent_through(&sent), "api");
    let attempts = status(&sent).provider_attempts;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!((attempts[0].attempts, attempts[0].passed_over), (2, false));
    assert_eq!(support::received_count(&subject).await, 0);

    // No answer within timeoutSeconds (5 s): the service may have it. Under
    // AtMostOnce it ends Unknown, and nothing goes through the standby.
    fake.fail_next(Failure {
        status: 200,
        delay: Duration::from_secs(8),
        ..quick()
    });
    let subject = support::unique("timeout stays");
    scene
        .message(
            "on-timeout",
            json!({"providerRef": {"kind": "EmailRoute", "name": "mail"},
                   "to": ["someone@example.org"], "subject": subject, "text": "hi",
                   "deliveryPolicy": "AtMostOnce"}),
        )
        .await;
    let unknown = scene.wait_phase("on-timeout", Phase::Unknown).await;
    assert_eq!(sent_through(&unknown), "api");
    let last = status(&unknown).last_error.expect("lastError");
    assert!(last.may_have_been_delivered, "{last:?}");
    assert_eq!(support::received_count(&subject).await, 0);
    controller.stop().await;
}

#[tokio::test]
async fn a_weighted_route_spreads_a_thousand_messages_by_weight() {
    let heavy = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let light = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let scene = Scene::new("route-weighted").await;
    scene
        .api_provider(Service::Resend, &heavy.url, fixtures::VALID_API_KEY)
        .await;
    scene
        .api_provider_named(Service::Resend, &light.url, "light")
        .await;
    route(
        &scene,
        "spread",
        json!({"strategy": "Weighted", "providers": [
            {"name": "api", "weight": 70}, {"name": "light", "weight": 30}]}),
    )
    .await;
    let controller = scene.controller().await;
    scene.wait_provider("api", "Configured").await;
    scene.wait_provider("light", "Configured").await;
    let count = 1000;
    futures::stream::iter(0..count)
        .map(|i| {
            let spec = json!({"providerRef": {"kind": "EmailRoute", "name": "spread"},
                              "to": [format!("r{i}@example.org")], "subject": format!("w {i}"), "text": "x"});
            let scene = &scene;
            async move { scene.message(&format!("w{i:04}"), spec).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let messages = support::eventually("1000 sent", Duration::from_secs(240), || async {
        let all = fixtures::all_messages(&scene.client, &scene.ns).await;
        let sent = all
            .iter()
            .filter(|m| status(m).phase == Some(Phase::Sent))
            .count();
        (sent == count).then_some(all)
    })
    .await;
    let (to_heavy, to_light) = (heavy.accepted().len(), light.accepted().len());
    let share = to_heavy as f64 / count as f64;
    println!("FIGURES weighted 70/30: {to_heavy} and {to_light} of {count} (share {share:.3})");
    assert_eq!(to_heavy + to_light, count, "each once");
    assert!(
        (0.65..=0.75).contains(&share),
        "70% within 5 points: {to_heavy}/{count}"
    );
    let by_status = messages.iter().filter(|m| sent_through(m) == "api").count();
    assert_eq!(
        by_status, to_heavy,
        "status.provider names the one that sent"
    );
    controller.stop().await;
}

#[tokio::test]
async fn an_open_breaker_passes_its_provider_over_after_a_restart_and_a_probe_closes_it() {
    let tune = |s: &mut mailroom::controller::Settings| {
        s.breaker_failures = 3;
        s.breaker_cooldown_seconds = 20;
    };
    let (scene, fake, controller) = api_then_mailpit("route-breaker", Service::Resend, tune).await;
    let mut settings = fixtures::settings(&scene.ns);
    tune(&mut settings);
    let client = support::client().await;
    // Three 503s in a row: each message moves on, and the third opens it.
    fake.fail_next(Failure {
        times: 3,
        ..quick()
    });
    for i in 0..3 {
        routed(
            &scene,
            &format!("m{i}"),
            "mail",
            &support::unique("breaker"),
        )
        .await;
        let sent = scene.wait_phase(&format!("m{i}"), Phase::Sent).await;
        assert_eq!(sent_through(&sent), "mailpit");
    }
    let open = fixtures::wait_provider(&scene.client, &scene.ns, "api", "breaker open", |p| {
        degraded(p) == Some(("True".into(), "BreakerOpen".into()))
    })
    .await;
    let breaker = open
        .status
        .as_ref()
        .and_then(|s| s.breaker.clone())
        .expect("status.breaker");
    assert_eq!(breaker.failures, 3);
    assert_eq!(fake.posts().len(), 3);

    // While open, even after the controller is replaced, the route passes
    // it over: the service sees no request.
    let replaced = std::time::Instant::now();
    controller.stop().await;
    let stopped = replaced.elapsed();
    let controller = fixtures::RunningController::start_with_settings(client.clone(), settings);
    routed(&scene, "while-open", "mail", &support::unique("open")).await;
    let sent = scene.wait_phase("while-open", Phase::Sent).await;
    println!(
        "breaker: stopped in {stopped:?}, next message sent {:?} after, open until {}",
        replaced.elapsed(),
        breaker.open_until.0
    );
    assert_eq!(sent_through(&sent), "mailpit");
    assert!(
        jiff::Timestamp::now() < breaker.open_until.0,
        "the cool-down lasted the test"
    );
    assert_eq!(
        fake.posts().len(),
        3,
        "no request while the breaker is open"
    );

    // After the cool-down one message probes it, goes through, and closes it.
    let wait = breaker.open_until.0.duration_since(jiff::Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default() + Duration::from_secs(1)).await;
    routed(&scene, "probe", "mail", &support::unique("probe")).await;
    let sent = scene.wait_phase("probe", Phase::Sent).await;
    assert_eq!(sent_through(&sent), "api");
    let closed = fixtures::wait_provider(&scene.client, &scene.ns, "api", "breaker closed", |p| {
        degraded(p) == Some(("False".into(), "BreakerClosed".into()))
    })
    .await;
    assert!(closed.status.as_ref().is_some_and(|s| s.breaker.is_none()));
    let events = fixtures::events_for(&scene.client, &scene.ns, "api").await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"ProviderOpen") && reasons.contains(&"ProviderClosed"),
        "{events:?}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn bad_routes_are_refused_at_apply() {
    let scene = Scene::new("route-bad-input").await;
    let one = |name: &str| json!({"name": name});
    scene
        .assert_refused(
            "EmailRoute",
            "nested",
            json!({"providers": [{"kind": "EmailRoute", "name": "other"}]}),
            "routes do not nest",
        )
        .await;
    let eleven: Vec<Value> = (0..11).map(|i| one(&format!("p{i}"))).collect();
    scene
        .assert_refused(
            "EmailRoute",
            "too-long",
            json!({"providers": eleven}),
            "must have at most 10 items",
        )
        .await;
    scene
        .assert_refused(
            "EmailRoute",
            "empty",
            json!({"providers": []}),
            "at least 1",
        )
        .await;
    scene
        .assert_refused(
            "EmailRoute",
            "zero",
            json!({"strategy": "Weighted", "providers": [{"name": "a", "weight": 0}]}),
            "should be greater than or equal to 1",
        )
        .await;
    scene
        .assert_refused(
            "EmailRoute",
            "weight-in-order",
            json!({"providers": [{"name": "a", "weight": 3}]}),
            "weight is for the Weighted strategy",
        )
        .await;
    scene
        .assert_refused(
            "EmailRoute",
            "twice",
            json!({"providers": [one("a"), one("b"), one("a")]}),
            "each provider may be listed once",
        )
        .await;
    // A provider of another namespace cannot be named: there is no field
    // for it, and kubectl refuses the unknown one.
    let manifest = format!(
        "apiVersion: mailroom.dev/v1alpha1\nkind: EmailRoute\nmetadata:\n  name: elsewhere\n  namespace: {}\nspec:\n  providers:\n  - name: a\n    namespace: other-team\n",
        scene.ns
    );
    let file = std::env::temp_dir().join(format!("{}-route.yaml", scene.ns));
    std::fs::write(&file, manifest).expect("writing the manifest");
    let out = support::kubectl(
        &support::env().kubeconfig,
        &["apply", "-f", file.to_str().expect("path")],
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && said.contains("unknown field"),
        "{said}"
    );
    // Suppressions belong to providers, not routes.
    scene
        .assert_refused(
            "EmailSuppression",
            "by-route",
            json!({"providerRef": {"kind": "EmailRoute", "name": "mail"},
                   "address": "a@example.org", "reason": "Manual"}),
            "a suppression names a provider, not an EmailRoute",
        )
        .await;
}

#[tokio::test]
async fn a_route_that_cannot_send_says_which_field_and_sends_nothing() {
    let fake = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let scene = Scene::new("route-cannot-send").await;
    scene
        .api_provider(Service::Postmark, &fake.url, fixtures::VALID_API_KEY)
        .await;
    scene.mailpit_provider().await;
    route(
        &scene,
        "mixed",
        json!({"providers": [{"name": "api"}, {"name": "mailpit"}]}),
    )
    .await;
    route(
        &scene,
        "ghosts",
        json!({"providers": [{"name": "nowhere"}]}),
    )
    .await;
    let controller = scene.controller().await;
    scene.wait_provider("api", "Verified").await;
    scene.wait_provider("mailpit", "Verified").await;

    let subject = support::unique("no such route");
    routed(&scene, "no-route", "absent", &subject).await;
    let waiting = scene.wait_reason("no-route", "RouteNotFound").await;
    let text = sent_text(&waiting);
    assert!(
        text.contains("spec.providerRef") && text.contains("absent"),
        "{text}"
    );
    assert_eq!(status(&waiting).phase, Some(Phase::Pending));

    let subject2 = support::unique("ghost provider");
    routed(&scene, "ghost", "ghosts", &subject2).await;
    let waiting = scene.wait_reason("ghost", "NoProviderAvailable").await;
    let text = sent_text(&waiting);
    assert!(
        text.contains("EmailProvider \"nowhere\" not found"),
        "{text}"
    );

    // A stored template cannot fail over to SMTP or another service.
    scene
        .message(
            "stored",
            json!({"providerRef": {"kind": "EmailRoute", "name": "mixed"},
                   "to": ["a@example.org"], "providerTemplate": {"id": "welcome"},
                   "data": {"name": "A"}}),
        )
        .await;
    let failed = scene.wait_phase("stored", Phase::Failed).await;
    let text = sent_text(&failed);
    assert!(
        text.contains("spec.providerTemplate") && text.contains("SMTP"),
        "{text}"
    );

    assert_eq!(support::received_count(&subject).await, 0);
    assert_eq!(support::received_count(&subject2).await, 0);
    assert!(fake.posts().is_empty(), "nothing was sent");
    controller.stop().await;
}

#[tokio::test]
async fn the_standby_s_delivery_webhook_finds_a_failed_over_message() {
    let primary = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let standby = Fake::start(Config::with_key(fixtures::VALID_API_KEY))
        .await
        .expect("fake");
    let scene = Scene::new("route-webhook").await;
    scene
        .api_provider(Service::Resend, &primary.url, fixtures::VALID_API_KEY)
        .await;
    scene
        .api_provider_named(Service::Postmark, &standby.url, "standby")
        .await;
    let signer = support::webhooks::webhook_provider(&scene, Service::Postmark, "standby").await;
    route(
        &scene,
        "mail",
        json!({"providers": [{"name": "api"}, {"name": "standby"}]}),
    )
    .await;
    let controller = scene.controller().await;
    scene.wait_provider("api", "Configured").await;
    scene.wait_provider("standby", "Verified").await;
    let receiver = support::webhooks::Receiver::start(&scene, scene.client.clone()).await;

    primary.fail_next(quick());
    routed(&scene, "hooked", "mail", &support::unique("hooked")).await;
    let sent = scene.wait_phase("hooked", Phase::Sent).await;
    assert_eq!(sent_through(&sent), "standby");
    let id = status(&sent).provider_message_id.expect("an id");
    let event = mailroom_fakes::webhook::Event::new(
        mailroom_fakes::webhook::Happened::Delivered,
        &id,
        "someone@example.org",
        jiff::Timestamp::now().as_second(),
    )
    .echoing(standby.echo(&id));
    let http = reqwest::Client::new();
    let url = format!("{}/standby", receiver.base);
    for request in signer.requests(&[event], jiff::Timestamp::now().as_second()) {
        assert_eq!(support::webhooks::post(&http, &url, &request).await, 200);
    }
    let delivered = scene.wait_phase("hooked", Phase::Delivered).await;
    assert_eq!(status(&delivered).delivery_events.len(), 1);
    controller.stop().await;
}
