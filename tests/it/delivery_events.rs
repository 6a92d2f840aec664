//! Delivery webhooks, end to end: a message is sent through a service's
//! fake, then the service's own webhook requests (its payload format and
//! signature, built by `mailroom_fakes::webhook`) are posted to the
//! receiver, and the message's status is read back. A 200 means the events
//! are written, so status is checked right after each answer.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::fixtures::{
    RunningController, Scene, api_scene, create, events_for, wait_provider,
};
use crate::support::webhooks::{Receiver, post, post_oversized, post_timed, webhook_provider};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use mailroom::api::ClusterEmailProvider;
use mailroom::api::condition::{self, DELIVERED};
use mailroom::api::{BounceKind, DeliveryEventType, EmailMessage, EmailProvider, Phase};
use mailroom_fakes::Service;
use mailroom_fakes::webhook::{Event, Happened, Request, Signer};
use serde_json::json;

const RECIPIENT: &str = "x@example.org";
const KEY: &str = support::fixtures::VALID_API_KEY;

/// A provider `api` on a fake service with its webhook set up, a
/// controller, and a receiver.
pub(crate) struct Hooked {
    pub(crate) scene: Scene,
    pub(crate) fake: mailroom_fakes::Fake,
    _controller: RunningController,
    receiver: Receiver,
    pub(crate) signer: Signer,
    http: reqwest::Client,
}

impl Hooked {
    pub(crate) async fn new(service: Service, test: &str) -> Self {
        let (scene, fake, controller) =
            api_scene(service, test, support::fixtures::VALID_API_KEY).await;
        let signer = webhook_provider(&scene, service, "api").await;
        let what = "its webhook key loaded";
        let provider = wait_provider(&scene.client, &scene.ns, "api", what, |p| {
            webhook_condition(p).0 == "Configured"
        })
        .await;
        let (_, message) = webhook_condition(&provider);
        assert!(
            message.contains(&format!("/webhooks/{}/api", scene.ns)),
            "{message}"
        );
        // The receiver may read and write messages one at a time, but may
        // not list or watch them: events find their message by the origin
        // the service echoes, with no index of messages.
        let client = client_without_message_watch(&scene).await;
        let receiver = Receiver::start(&scene, client).await;
        Self {
            scene,
            fake,
            _controller: controller,
            receiver,
            signer,
            http: reqwest::Client::new(),
        }
    }

    /// An event about the message the service gave `id`, echoing what
    /// the service echoes for it.
    fn event(&self, happened: Happened, id: &str, at: i64) -> Event {
        let echoed = self.fake.echo(id);
        assert!(!echoed.is_empty(), "the send of {id} carried its origin");
        Event::new(happened, id, RECIPIENT, at).echoing(echoed)
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/api", self.receiver.base)
    }

    /// Sends message `name` and answers the id the service gave it.
    async fn send(&self, name: &str) -> String {
        self.scene.note(name, "api", name).await;
        let sent = self.scene.wait_phase(name, Phase::Sent).await;
        sent.status
            .and_then(|s| s.provider_message_id)
            .expect("a provider message id")
    }

    /// Posts `events` signed now; answers each request's status.
    async fn report(&self, events: &[Event]) -> Vec<u16> {
        self.report_at(events, jiff::Timestamp::now().as_second())
            .await
    }

    async fn report_at(&self, events: &[Event], now: i64) -> Vec<u16> {
        let mut statuses = Vec::new();
        for request in self.signer.requests(events, now) {
            statuses.push(post(&self.http, &self.url(), &request).await);
        }
        statuses
    }

    pub(crate) async fn message(&self, name: &str) -> EmailMessage {
        Api::<EmailMessage>::namespaced(self.scene.client.clone(), &self.scene.ns)
            .get(name)
            .await
            .expect("reading the message")
    }
}

/// A client that may read one message and write its status, create the
/// suppressions a bounce adds, and read the providers and Secrets webhook
/// keys come from, but may not list or watch messages (nor read anything
/// outside the scene's namespace).
async fn client_without_message_watch(scene: &Scene) -> kube::Client {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let user = format!("receiver-{}", scene.ns);
    create::<Role>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "receiver"},
               "rules": [
                 {"apiGroups": ["mailroom.dev"], "resources": ["emailproviders"], "verbs": ["list", "watch"]},
                 {"apiGroups": ["mailroom.dev"], "resources": ["emailmessages"], "verbs": ["get"]},
                 {"apiGroups": ["mailroom.dev"], "resources": ["emailmessages/status"], "verbs": ["get", "patch"]},
                 {"apiGroups": ["mailroom.dev"], "resources": ["emailsuppressions"], "verbs": ["create"]},
                 {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
                 {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]}),
    )
    .await;
    create::<RoleBinding>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "receiver"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "receiver"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
    support::impersonating_client(&user, &[]).await
}

/// The provider's WebhookReady reason and message.
fn webhook_condition(p: &EmailProvider) -> (String, String) {
    p.status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, "WebhookReady"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn phase(m: &EmailMessage) -> Option<Phase> {
    m.status.as_ref().and_then(|s| s.phase)
}

fn delivered(m: &EmailMessage) -> (String, String, String) {
    let status = m.status.as_ref().expect("status");
    let c = condition::find(&status.conditions, DELIVERED).expect("a Delivered condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

pub(crate) fn events(m: &EmailMessage) -> Vec<(DeliveryEventType, Option<BounceKind>)> {
    m.status
        .as_ref()
        .map(|s| {
            s.delivery_events
                .iter()
                .map(|e| (e.type_, e.bounce))
                .collect()
        })
        .unwrap_or_default()
}

/// Each service's events move its messages as a user would expect, and
/// nothing unsigned, wrongly signed or replayed gets in.
async fn service_scenario(service: Service) {
    let h = Hooked::new(service, "hooks").await;
    let (a, b) = (h.send("a").await, h.send("b").await);
    let t = jiff::Timestamp::now().as_second() - 60;

    // Refused: another key, no signature, a stale timestamp. Nothing changes.
    let stranger = Signer::generate(service);
    let delivered_a = h.event(Happened::Delivered, &a, t + 1);
    for request in stranger.requests(std::slice::from_ref(&delivered_a), t + 60) {
        assert_eq!(
            post(&h.http, &h.url(), &request).await,
            401,
            "{service:?}: another key"
        );
    }
    for mut request in h
        .signer
        .requests(std::slice::from_ref(&delivered_a), t + 60)
    {
        request.headers.retain(|(name, _)| name == "content-type");
        if service == Service::Mailgun {
            let mut body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            body.as_object_mut().unwrap().remove("signature");
            request.body = body.to_string().into_bytes();
        }
        assert_eq!(
            post(&h.http, &h.url(), &request).await,
            401,
            "{service:?}: unsigned"
        );
    }
    if matches!(
        service,
        Service::Resend | Service::SendGrid | Service::Mailgun
    ) {
        let replayed = h
            .report_at(std::slice::from_ref(&delivered_a), t - 600)
            .await;
        assert!(
            replayed.iter().all(|s| *s == 401),
            "{service:?}: replay answered {replayed:?}"
        );
    }
    let untouched = h.message("a").await;
    assert_eq!(phase(&untouched), Some(Phase::Sent), "{service:?}");
    assert!(
        events(&untouched).is_empty(),
        "{service:?}: {:?}",
        events(&untouched)
    );
    assert!(
        h.receiver
            .metric("mailroom_webhook_signature_failures_total", "")
            >= 2.0,
        "{service:?}: refusals counted"
    );

    // Delivered (an ignored "processed" event alongside), then a repeat.
    let processed = h.event(Happened::Processed, &a, t);
    let answers = h.report(&[processed, delivered_a.clone()]).await;
    assert!(
        answers.iter().all(|s| *s == 200),
        "{service:?}: {answers:?}"
    );
    let m = h.message("a").await;
    assert_eq!(phase(&m), Some(Phase::Delivered), "{service:?}");
    let (value, reason, text) = delivered(&m);
    assert_eq!(
        (value.as_str(), reason.as_str()),
        ("True", "Delivered"),
        "{service:?}: {text}"
    );
    assert!(text.contains(RECIPIENT), "{service:?}: {text}");
    let recorded = &m.status.as_ref().unwrap().delivery_events;
    assert_eq!(
        events(&m),
        [(DeliveryEventType::Delivered, None)],
        "{service:?}"
    );
    assert_eq!(
        recorded[0].recipient.as_deref(),
        Some(RECIPIENT),
        "{service:?}"
    );
    assert_eq!(recorded[0].time.0.as_second(), t + 1, "{service:?}");
    let again = h.report(std::slice::from_ref(&delivered_a)).await;
    assert!(again.iter().all(|s| *s == 200), "{service:?}: {again:?}");
    assert_eq!(
        h.message("a").await.status,
        m.status,
        "{service:?}: a repeat changed status"
    );

    // Opened, then a complaint: Complained.
    h.report(&[h.event(Happened::Opened, &a, t + 2)]).await;
    h.report(&[h.event(Happened::Complained, &a, t + 3)]).await;
    let m = h.message("a").await;
    assert_eq!(phase(&m), Some(Phase::Complained), "{service:?}");
    assert_eq!(delivered(&m).1, "Complained", "{service:?}");
    assert_eq!(events(&m).len(), 3, "{service:?}: {:?}", events(&m));

    // Deferred, then a hard bounce, then a late open: stays Bounced.
    h.report(&[h.event(Happened::Deferred, &b, t)]).await;
    let m = h.message("b").await;
    assert_eq!(phase(&m), Some(Phase::Sent), "{service:?}");
    assert_eq!(
        (delivered(&m).0.as_str(), delivered(&m).1.as_str()),
        ("Unknown", "Deferred"),
        "{service:?}"
    );
    h.report(&[h.event(Happened::HardBounce, &b, t + 1)]).await;
    h.report(&[h.event(Happened::Opened, &b, t + 5)]).await;
    let m = h.message("b").await;
    assert_eq!(phase(&m), Some(Phase::Bounced), "{service:?}");
    let (value, reason, text) = delivered(&m);
    assert_eq!(
        (value.as_str(), reason.as_str()),
        ("False", "Bounced"),
        "{service:?}"
    );
    assert!(
        text.starts_with("hard bounce to x@example.org: "),
        "{service:?}: {text}"
    );
    assert_eq!(
        events(&m).last(),
        Some(&(DeliveryEventType::Opened, None)),
        "{service:?}: the open is recorded"
    );

    // Bounced and Complained are told by a Warning Event too, and counted.
    for (name, reason) in [("b", "Bounced"), ("a", "Complained")] {
        let what = format!("a {reason} Event on {name}");
        support::eventually(&what, Duration::from_secs(10), || async {
            let events = events_for(&h.scene.client, &h.scene.ns, name).await;
            events
                .iter()
                .any(|(type_, r, note)| {
                    type_ == "Warning" && r == reason && note.contains(RECIPIENT)
                })
                .then_some(())
        })
        .await;
    }
    for phase in ["Delivered", "Bounced", "Complained"] {
        let labels = format!("phase=\"{phase}\"");
        assert_eq!(
            h.receiver
                .metric("mailroom_delivery_outcomes_total", &labels),
            1.0,
            "{service:?}: {phase}"
        );
    }

    // An event for a message nobody sent is acknowledged and counted.
    let unknown = Event::new(Happened::Delivered, "no-such-message", RECIPIENT, t);
    assert!(h.report(&[unknown]).await.iter().all(|s| *s == 200));
    assert_eq!(
        h.receiver
            .metric("mailroom_webhook_unknown_messages_total", ""),
        1.0,
        "{service:?}"
    );
    assert!(
        h.receiver
            .metric("mailroom_webhook_events_total", "detail=\"Delivered\"")
            >= 2.0
    );

    // The provider's status counts the last hour: both sent, and each
    // message's outcomes once (a: delivered then complained; b: bounced).
    let recent = |p: &EmailProvider| {
        p.status
            .as_ref()
            .and_then(|s| s.recent.clone())
            .map(|r| (r.sent, r.failed, r.delivered, r.bounced, r.complained))
    };
    let counted = wait_provider(
        &h.scene.client,
        &h.scene.ns,
        "api",
        "its recent counts",
        |p| recent(p) == Some((2, 0, 1, 1, 1)),
    )
    .await;
    assert_eq!(
        counted
            .status
            .and_then(|s| s.recent)
            .map(|r| r.window_seconds),
        Some(3600),
        "{service:?}"
    );
}

#[tokio::test]
async fn mailtrap_events_update_status() {
    service_scenario(Service::Mailtrap).await;
}

#[tokio::test]
async fn resend_events_update_status() {
    service_scenario(Service::Resend).await;
}

#[tokio::test]
async fn postmark_events_update_status() {
    service_scenario(Service::Postmark).await;
}

#[tokio::test]
async fn mailgun_events_update_status() {
    service_scenario(Service::Mailgun).await;
}

#[tokio::test]
async fn sendgrid_events_update_status() {
    service_scenario(Service::SendGrid).await;
}

/// Events out of order and a batch repeating itself: the list ends in time
/// order with each event once.
#[tokio::test]
async fn out_of_order_and_repeated_events_in_one_batch() {
    let h = Hooked::new(Service::SendGrid, "order").await;
    let id = h.send("m").await;
    let t = jiff::Timestamp::now().as_second() - 60;
    let click = h.event(Happened::Clicked, &id, t + 10);
    let delivered = h.event(Happened::Delivered, &id, t + 1);
    let batch = [click.clone(), delivered.clone(), click.clone()];
    assert_eq!(h.report(&batch).await, [200]);
    assert_eq!(h.report(&batch).await, [200]);
    let m = h.message("m").await;
    assert_eq!(phase(&m), Some(Phase::Delivered));
    assert_eq!(
        events(&m),
        [
            (DeliveryEventType::Delivered, None),
            (DeliveryEventType::Clicked, None)
        ]
    );
}

/// Providers that cannot take webhooks answer 404; a request too large 413.
#[tokio::test]
async fn unknown_providers_and_providers_without_webhook_are_not_found() {
    let h = Hooked::new(Service::Resend, "notfound").await;
    let id = h.send("m").await;
    let request = &h
        .signer
        .requests(&[h.event(Happened::Delivered, &id, 1)], 1)[0];
    let nope = format!("{}/nope", h.receiver.base);
    assert_eq!(post(&h.http, &nope, request).await, 404);
    h.scene
        .api_provider_named(Service::Resend, "http://127.0.0.1:9", "plain")
        .await;
    let plain = format!("{}/plain", h.receiver.base);
    assert_eq!(post(&h.http, &plain, request).await, 404);
    assert_eq!(post_oversized(&h.url(), 2 * 1024 * 1024).await, 413);
}

/// 5,000 events for 1,000 messages, posted 64 at a time as Postmark posts
/// them (one per request): every one is recorded. Two worker threads: the
/// controller, the fake and the receiver share this test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_events_is_recorded_whole() {
    const MESSAGES: usize = 1000;
    let h = Hooked::new(Service::Postmark, "burst").await;
    let messages: Api<EmailMessage> = Api::namespaced(h.scene.client.clone(), &h.scene.ns);
    futures::stream::iter(0..MESSAGES)
        .map(|i| {
            let scene = &h.scene;
            async move { scene.note(&format!("m{i}"), "api", "burst").await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let ids: Vec<(String, String)> = loop {
        let list = messages.list(&Default::default()).await.expect("listing");
        let sent: Vec<_> = list
            .items
            .iter()
            .filter_map(|m| {
                let s = m.status.as_ref()?;
                (s.phase == Some(Phase::Sent)).then(|| {
                    (
                        m.metadata.name.clone().unwrap_or_default(),
                        s.provider_message_id.clone().unwrap_or_default(),
                    )
                })
            })
            .collect();
        if sent.len() == MESSAGES {
            break sent;
        }
        if Instant::now() > deadline {
            // Say where the others are, for whoever reads the failure.
            let mut waiting: std::collections::BTreeMap<String, usize> = Default::default();
            for m in &list.items {
                let s = m.status.clone().unwrap_or_default();
                let reason = condition::find(&s.conditions, "Sent")
                    .map(|c| c.reason.clone())
                    .unwrap_or_default();
                *waiting
                    .entry(format!("{:?}/{reason}", s.phase))
                    .or_default() += 1;
            }
            panic!("{} of {MESSAGES} sent after 240 s: {waiting:?}", sent.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let t = jiff::Timestamp::now().as_second() - 600;
    let kinds = support::webhooks::BURST_EVENTS;
    let now = jiff::Timestamp::now().as_second();
    let requests: Vec<Request> = ids
        .iter()
        .flat_map(|(_, id)| {
            kinds
                .iter()
                .enumerate()
                .map(|(k, happened)| h.event(*happened, id, t + k as i64))
                .collect::<Vec<_>>()
        })
        .flat_map(|event| h.signer.requests(&[event], now))
        .collect();
    assert_eq!(requests.len(), 5000);

    let started = Instant::now();
    let url = h.url();
    let timed: Vec<(u16, Duration, u32)> = futures::stream::iter(requests.iter())
        .map(|request| post_timed(&h.http, &url, request))
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(timed.iter().all(|(s, _, _)| *s == 200), "all acknowledged");

    let mut latencies: Vec<Duration> = timed.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let retried = timed.iter().filter(|(_, _, tries)| *tries > 1).count();
    println!(
        "burst: 5000 events for {MESSAGES} messages in {:.1} s ({:.0} events/s); response p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; {retried} retried after 503",
        elapsed.as_secs_f64(),
        5000.0 / elapsed.as_secs_f64(),
        pct(0.50).as_millis(),
        pct(0.95).as_millis(),
        pct(0.99).as_millis(),
        latencies.last().unwrap().as_millis(),
    );

    let list = messages.list(&Default::default()).await.expect("listing");
    let complete = list
        .items
        .iter()
        .filter(|m| phase(m) == Some(Phase::Delivered) && events(m).len() == kinds.len())
        .count();
    assert_eq!(complete, MESSAGES, "every message holds its 5 events");
}

/// A ClusterEmailProvider's webhook: its own URL, its key from the
/// controller's namespace; the namespaced URL of the same name does not
/// reach its messages.
#[tokio::test]
async fn a_cluster_provider_takes_webhooks_at_its_own_url() {
    let home = Scene::new("hooks-home").await;
    let team = Scene::new("hooks-team").await;
    let fake = mailroom_fakes::Fake::start(mailroom_fakes::Config::with_key(KEY))
        .await
        .expect("fake");
    let signer = Signer::generate(Service::Postmark);
    create::<Secret>(
        &home.client,
        &home.ns,
        json!({"metadata": {"name": "api-key"}, "stringData": {"apiKey": KEY}}),
    )
    .await;
    create::<Secret>(
        &home.client,
        &home.ns,
        json!({"metadata": {"name": "hooks"}, "stringData": signer.secret_data()}),
    )
    .await;
    let name = format!("hooked-{}", support::namespace_suffix());
    let provider: ClusterEmailProvider = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "ClusterEmailProvider",
        "metadata": {"name": name},
        "spec": {"defaultFrom": "platform <platform@mailroom.dev>",
                 "api": {"provider": "Postmark", "secretRef": {"name": "api-key"}, "endpoint": fake.url},
                 "webhook": {"secretRef": {"name": "hooks"}},
                 "allowedNamespaces": {"names": [team.ns]}}
    }))
    .expect("provider JSON");
    Api::<ClusterEmailProvider>::all(home.client.clone())
        .create(&Default::default(), &provider)
        .await
        .expect("creating the cluster provider");

    let settings = mailroom::controller::Settings {
        cluster_provider_namespace: Some(home.ns.clone()),
        ..support::fixtures::settings(&team.ns)
    };
    let _controller = RunningController::start_with_settings(team.client.clone(), settings);
    let spec = json!({"providerRef": {"kind": "ClusterEmailProvider", "name": name},
                      "to": [RECIPIENT], "subject": "shared", "text": "hi"});
    team.message("shared", spec).await;
    let sent = team.wait_phase("shared", Phase::Sent).await;
    let id = sent.status.and_then(|s| s.provider_message_id).expect("id");

    let receiver = Receiver::start_with(&team, team.client.clone(), Some(home.ns.clone())).await;
    let now = jiff::Timestamp::now().as_second();
    let delivered = Event::new(Happened::Delivered, &id, RECIPIENT, now).echoing(fake.echo(&id));
    let request = &signer.requests(&[delivered], now)[0];
    let http = reqwest::Client::new();
    let namespaced = format!("{}/{name}", receiver.base);
    assert_eq!(post(&http, &namespaced, request).await, 404);
    let base = receiver.base.rsplit_once('/').expect("base").0;
    let cluster = format!("{base}/_cluster/{name}");
    assert_eq!(post(&http, &cluster, request).await, 200);
    let m = team.wait_phase("shared", Phase::Delivered).await;
    assert_eq!(events(&m), [(DeliveryEventType::Delivered, None)]);
    Api::<ClusterEmailProvider>::all(home.client.clone())
        .delete(&name, &Default::default())
        .await
        .expect("deleting the cluster provider");
}

/// A webhook Secret that is missing, lacks the key or holds a key in the
/// wrong form shows on the provider (sending is not affected); a webhook on
/// an SMTP provider is refused at apply time.
#[tokio::test]
async fn webhook_settings_are_checked_on_the_provider() {
    let (scene, _fake, _controller) = api_scene(
        Service::SendGrid,
        "hookcheck",
        support::fixtures::VALID_API_KEY,
    )
    .await;
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let webhook = json!({"spec": {"webhook": {"secretRef": {"name": "sg-hook"}}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&webhook))
        .await
        .expect("adding the webhook");
    let reason = |wanted: &'static str| move |p: &EmailProvider| webhook_condition(p).0 == wanted;
    let missing = wait_provider(
        &scene.client,
        &scene.ns,
        "api",
        "SecretNotFound",
        reason("SecretNotFound"),
    )
    .await;
    assert!(
        webhook_condition(&missing).1.contains("sg-hook"),
        "{:?}",
        webhook_condition(&missing)
    );
    assert_eq!(
        support::fixtures::ready_reason(&missing),
        "Verified",
        "sending is not affected"
    );

    create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "sg-hook"}, "stringData": {"verificationKey": "not a key"}}),
    )
    .await;
    let invalid_key = |expected: &'static str| {
        let scene = &scene;
        async move {
            let invalid = wait_provider(
                &scene.client,
                &scene.ns,
                "api",
                "InvalidSpec",
                reason("InvalidSpec"),
            )
            .await;
            assert!(
                webhook_condition(&invalid).1.contains(expected),
                "{:?}",
                webhook_condition(&invalid)
            );
        }
    };
    invalid_key("verificationKey is not an ECDSA P-256 public key").await;

    let signer = Signer::generate(Service::SendGrid);
    let secrets: Api<Secret> = Api::namespaced(scene.client.clone(), &scene.ns);
    secrets
        .patch(
            "sg-hook",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": signer.secret_data()})),
        )
        .await
        .expect("fixing the key");
    wait_provider(
        &scene.client,
        &scene.ns,
        "api",
        "Configured",
        reason("Configured"),
    )
    .await;

    // Bytes that are not UTF-8 are refused as they are, never decoded
    // lossily into another key.
    secrets
        .patch(
            "sg-hook",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"verificationKey": "//79/A=="}})),
        )
        .await
        .expect("a key that is not UTF-8");
    invalid_key("verificationKey is not UTF-8 text").await;

    scene
        .assert_refused(
            "EmailProvider",
            "smtp-hook",
            json!({"smtp": {"host": "smtp.example.com", "port": 587}, "webhook": {"secretRef": {"name": "x"}}}),
            "webhook needs an api provider",
        )
        .await;
}

/// The webhook port faces the internet. Requests naming providers that do
/// not exist cost no apiserver call (the receiver here may list and watch
/// providers and messages but not get one: a per-request read would be
/// refused and answered 503) and are counted as 404s; a body past the limit
/// is refused (413); a client that sends its headers too slowly is cut off;
/// a request that takes too long is answered 408; past the requests allowed
/// at once, 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_port_holds_against_floods_slow_clients_and_large_bodies() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let scene = Scene::new("webhook-port").await;
    let user = format!("webhook-probe-{}", scene.ns);
    create::<Role>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "watch-only"},
               "rules": [{"apiGroups": ["mailroom.dev"], "resources": ["emailproviders", "emailmessages"],
                          "verbs": ["list", "watch"]}]}),
    )
    .await;
    create::<RoleBinding>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "watch-only"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "watch-only"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    )
    .await;
    let client = support::impersonating_client(&user, &[]).await;

    let settings = mailroom::webhook::Settings {
        namespace: Some(scene.ns.clone()),
        // Long enough that the four held requests still hold their slots
        // when the fifth arrives on a busy machine (408 after 5 + 1 s).
        read_timeout_seconds: 5,
        ack_timeout_seconds: 1,
        unknown_grace_seconds: 1,
        max_requests: 4,
        ..Default::default()
    };
    let receiver = Receiver::start_with_settings(&scene, client, settings).await;
    let (addr, base) = (receiver.addr, receiver.base.clone());
    let http = reqwest::Client::new();
    let answers = |code: &str| {
        receiver.metric(
            "mailroom_webhook_answers_total",
            &format!("code=\"{code}\""),
        )
    };

    // Unsigned requests to 2,000 provider names that do not exist.
    let unsigned = Request {
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
    };
    let codes: Vec<u16> = futures::stream::iter(0..2000)
        .map(|i| {
            let (http, url, request) = (&http, format!("{base}/nobody-{i}"), &unsigned);
            async move { post(http, &url, request).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(
        codes.iter().all(|&c| c == 404),
        "{:?}",
        codes.iter().find(|&&c| c != 404)
    );
    assert_eq!(answers("404"), 2000.0);

    // A body past the limit (1 MiB by default): 413, without a length too.
    assert_eq!(
        post_oversized(&format!("{base}/any"), 2 * 1024 * 1024).await,
        413
    );
    let mut chunked = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    let size = 3 * 512 * 1024;
    let mut request = format!(
        "POST /webhooks/{}/any HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{size:x}\r\n",
        scene.ns
    )
    .into_bytes();
    request.extend(vec![b' '; size]);
    request.extend(b"\r\n0\r\n\r\n");
    // The server may answer 413 and close before it has read it all.
    let _ = chunked.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), chunked.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answers("413") >= 1.0);

    // Headers never finished: cut off after the read timeout.
    let mut slow = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    slow.write_all(b"POST /webhooks/x/y HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("half the headers");
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the connection was not closed: {closed:?}"
    );

    // A body that never finishes holds a request slot until 408; past the
    // four allowed at once, 503 at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting");
        stream
            .write_all(b"POST /webhooks/x/y HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            .await
            .expect("headers and a bit of body");
        held.push(stream);
    }
    let busy = support::eventually(
        "a 503 while four requests are held",
        Duration::from_secs(5),
        || async {
            let answer = http.post(format!("{base}/any")).body("{}").send().await;
            answer.ok().filter(|a| a.status().as_u16() == 503).map(drop)
        },
    );
    busy.await;
    let mut first = held.remove(0);
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answers("408") >= 1.0);
    assert!(answers("503") >= 1.0);
}

/// A provider's webhook can only write its own messages: an event signed
/// with another provider's key, naming this provider's message, is
/// acknowledged (the service must not retry it) and counted, and the
/// message is untouched.
#[tokio::test]
async fn a_provider_cannot_write_another_providers_messages() {
    let h = Hooked::new(Service::Postmark, "foreign").await;
    let id = h.send("theirs").await;
    h.scene
        .api_provider_named(Service::Postmark, &h.fake.url, "other")
        .await;
    let other = webhook_provider(&h.scene, Service::Postmark, "other").await;
    wait_provider(&h.scene.client, &h.scene.ns, "other", "its webhook", |p| {
        webhook_condition(p).0 == "Configured"
    })
    .await;
    let now = jiff::Timestamp::now().as_second();
    let forged = h.event(Happened::HardBounce, &id, now);
    let url = format!("{}/other", h.receiver.base);
    let mut answers = Vec::new();
    for request in other.requests(std::slice::from_ref(&forged), now) {
        answers.push(post(&h.http, &url, &request).await);
    }
    assert_eq!(answers, [200]);
    let m = h.message("theirs").await;
    assert_eq!(phase(&m), Some(Phase::Sent));
    assert!(events(&m).is_empty(), "{:?}", events(&m));
    assert_eq!(
        h.receiver
            .metric("mailroom_webhook_unknown_messages_total", ""),
        1.0
    );
    // The same event through the message's own provider is written.
    assert_eq!(h.report(&[forged]).await, [200]);
    assert_eq!(phase(&h.message("theirs").await), Some(Phase::Bounced));
}

/// A bulk message's events count per recipient: each recipient moves
/// forward only, a repeated batch changes nothing, those that bounced or
/// complained are listed, and the message's phase stays Sent.
async fn bulk_scenario(service: Service) {
    let h = Hooked::new(service, "bulk-hooks").await;
    let to: Vec<String> = (0..5).map(|i| format!("r{i}@example.org")).collect();
    let recipients: Vec<_> = to.iter().map(|t| json!({"to": t})).collect();
    h.scene
        .message(
            "many",
            json!({"providerRef": {"name": "api"}, "recipients": recipients,
                   "subject": "news", "text": "hello"}),
        )
        .await;
    let sent = h.scene.wait_phase("many", Phase::Sent).await;
    let id = sent
        .status
        .and_then(|s| s.provider_message_id)
        .unwrap_or_else(|| "bulk".into());
    let t = jiff::Timestamp::now().as_second() - 60;
    let event = |happened, i: usize, at| {
        let echoed = h.fake.echo_to(&to[i]);
        assert!(
            !echoed.is_empty(),
            "{service:?}: the email to {} carried its origin",
            to[i]
        );
        Event::new(happened, &id, &to[i], at).echoing(echoed)
    };
    let batch = [
        event(Happened::Delivered, 0, t),
        event(Happened::HardBounce, 1, t + 1),
        event(Happened::Delivered, 2, t + 2),
        event(Happened::Complained, 2, t + 3),
        event(Happened::Delivered, 1, t + 4),
    ];
    for _ in 0..2 {
        let answers = h.report(&batch).await;
        assert!(
            answers.iter().all(|s| *s == 200),
            "{service:?}: {answers:?}"
        );
    }
    let m = h.message("many").await;
    let status = m.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Sent), "{service:?}");
    let bulk = status.bulk.expect("bulk status");
    assert_eq!(
        (bulk.delivered, bulk.bounced, bulk.complained),
        (1, 1, 1),
        "{service:?}: {bulk:?}"
    );
    assert_eq!(bulk.outcomes.as_deref(), Some("DBC--"), "{service:?}");
    let undelivered: Vec<_> = bulk
        .undelivered
        .iter()
        .map(|f| (f.to.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(
        undelivered,
        [
            ("r1@example.org", "Bounced"),
            ("r2@example.org", "Complained")
        ],
        "{service:?}"
    );
}

#[tokio::test]
async fn mailtrap_bulk_recipients_are_counted() {
    bulk_scenario(Service::Mailtrap).await;
}

#[tokio::test]
async fn resend_bulk_recipients_are_counted() {
    bulk_scenario(Service::Resend).await;
}

#[tokio::test]
async fn postmark_bulk_recipients_are_counted() {
    bulk_scenario(Service::Postmark).await;
}

#[tokio::test]
async fn mailgun_bulk_recipients_are_counted() {
    bulk_scenario(Service::Mailgun).await;
}

#[tokio::test]
async fn sendgrid_bulk_recipients_are_counted() {
    bulk_scenario(Service::SendGrid).await;
}
