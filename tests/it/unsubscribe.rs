//! Hosted one-click unsubscribe, end to end: a bulk message goes out with
//! mailroom's own unsubscribe URL, each received mail's header is read with
//! an independent RFC 2369/8058 parser, the URL is POSTed as a mail client
//! would (to the receiver, standing in for the Ingress), and the test checks
//! what a user would: the EmailSuppression on that list only, the next
//! mails on the list and off it, and clear answers to forged, moved,
//! replayed, oversized and GET requests. The mailto form is read from the
//! bounce mailbox.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams};
use mailroom::api::{EmailProvider, EmailSuppression, Phase, SuppressionReason};
use mailroom::controller::Settings;
use serde_json::json;

use crate::support::fixtures::{self, RunningController, Scene};
use crate::support::mailpit::Mailpit;
use crate::support::webhooks::Receiver;
use crate::support::{self};

/// Where the test pretends the receiver is reached from the internet.
const PUBLIC: &str = "https://mail.example.test/mr";

/// The Secret with the unsubscribe keys, in the test's namespace.
fn key_secret(scene: &Scene) -> String {
    format!("{}/unsubscribe-keys", scene.ns)
}

fn controller(scene: &Scene) -> RunningController {
    RunningController::start_with_settings(
        scene.client.clone(),
        Settings {
            unsubscribe_key_secret: Some(key_secret(scene)),
            ..fixtures::settings(&scene.ns)
        },
    )
}

/// A receiver serving every namespace (so a link moved to another
/// namespace is refused by its token, not by the path).
async fn receiver(scene: &Scene) -> Receiver {
    let settings = mailroom::webhook::Settings {
        namespace: None,
        unsubscribe_key_secret: Some(key_secret(scene)),
        ..Default::default()
    };
    Receiver::start_with_settings(scene, scene.client.clone(), settings).await
}

/// The one-click URL of the mail with `subject` to `to`, as an independent
/// parser reads its headers.
async fn one_click_url(mailpit: &Mailpit, subject: &str, to: &str) -> String {
    let query = format!("subject:\"{subject}\" to:{to}");
    let found = mailpit.wait_for(&query, 1, Duration::from_secs(60)).await;
    let headers = mailpit.headers(&found[0].id).await;
    let first = |name: &str| headers.get(name).and_then(|v| v.first()).cloned();
    let list = first("List-Unsubscribe").expect("a List-Unsubscribe header");
    let post = first("List-Unsubscribe-Post");
    match list_unsubscribe::parse_with_post(&list, post.as_deref()) {
        list_unsubscribe::UnsubscribeMethod::OneClick { url } => url.to_string(),
        other => panic!("not one-click: {other:?} from {list:?} / {post:?}"),
    }
}

/// The URL as the receiver in this test serves it.
fn local(receiver: &Receiver, url: &str) -> String {
    let path = url.strip_prefix(PUBLIC).expect("the public base URL");
    format!("http://{}{path}", receiver.addr)
}

/// POSTs the RFC 8058 body to `url`: its status and body.
async fn one_click(url: &str, body: impl Into<String>) -> (u16, String) {
    let answer = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.into())
        .send()
        .await
        .expect("POST");
    let status = answer.status().as_u16();
    (status, answer.text().await.expect("body"))
}

/// The unsubscribes of the namespace: address to list.
async fn unsubscribed(scene: &Scene) -> BTreeMap<String, String> {
    Api::<EmailSuppression>::namespaced(scene.client.clone(), &scene.ns)
        .list(&ListParams::default())
        .await
        .expect("suppressions")
        .items
        .into_iter()
        .filter(|s| s.spec.reason == SuppressionReason::Unsubscribed)
        .map(|s| (s.spec.address, s.spec.list.unwrap_or_default()))
        .collect()
}

/// Merges `patch` into object `name`.
async fn merge<K>(api: &Api<K>, name: &str, patch: &serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::PatchParams::default();
    api.patch(name, &params, &kube::api::Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patching {name}: {e}"));
}

/// A bulk message `name` to `recipients`, extra spec fields in `more`.
async fn bulk(
    scene: &Scene,
    name: &str,
    subject: &str,
    recipients: &[&str],
    more: serde_json::Value,
) {
    let mut spec = json!({"providerRef": {"name": "lists"}, "subject": subject, "text": "news",
        "recipients": recipients.iter().map(|to| json!({"to": to})).collect::<Vec<_>>()});
    if let (Some(spec), Some(more)) = (spec.as_object_mut(), more.as_object()) {
        spec.extend(more.clone());
    }
    scene.message(name, spec).await;
}

#[tokio::test]
async fn a_one_click_post_unsubscribes_that_recipient_from_that_list_only() {
    let scene = Scene::new("unsubscribe-hosted").await;
    let unsubscribe = json!({"hosted": {"baseURL": PUBLIC}, "list": "news"});
    crate::deliverability::lists_provider(&scene, unsubscribe).await;
    let controller = controller(&scene);
    let receiver = receiver(&scene).await;
    let mailpit = Mailpit::shared();
    let (ann, bo) = ("ann@example.org", "bo@example.org");

    let first = support::unique("news 1");
    bulk(&scene, "news-1", &first, &[ann, bo], json!({})).await;
    scene.wait_phase("news-1", Phase::Sent).await;
    let ann_url = one_click_url(&mailpit, &first, ann).await;
    let bo_url = one_click_url(&mailpit, &first, bo).await;
    let prefix = format!("{PUBLIC}/unsubscribe/{}/news/", scene.ns);
    assert!(ann_url.starts_with(&prefix), "{ann_url}");
    assert!(
        !ann_url.contains("ann"),
        "the URL shows nothing of the address: {ann_url}"
    );
    assert_ne!(ann_url, bo_url);

    // A GET shows the page and unsubscribes nobody.
    let page = reqwest::get(local(&receiver, &bo_url)).await.expect("GET");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("page");
    assert!(html.contains(r#"<form method="post">"#), "{html}");
    assert!(
        !html.contains("example.org") && !html.contains('@'),
        "{html}"
    );

    // The one-click POST: 200, no page, ann on news.
    let (status, body) = one_click(&local(&receiver, &ann_url), "List-Unsubscribe=One-Click").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let expected = BTreeMap::from([(ann.to_string(), "news".to_string())]);
    assert_eq!(unsubscribed(&scene).await, expected);

    // Refused, each with a clear answer, and nothing recorded.
    let bo_local = local(&receiver, &bo_url);
    let token = bo_local.rsplit('/').next().expect("token").to_string();
    let mut forged = token.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let at = |namespace: &str, list: &str, token: &str| {
        format!(
            "http://{}/unsubscribe/{namespace}/{list}/{token}",
            receiver.addr
        )
    };
    let other = support::namespace(&scene.client, "unsubscribe-other").await;
    for (what, url, want) in [
        ("a forged token", at(&scene.ns, "news", &forged), 404),
        ("another namespace's path", at(&other, "news", &token), 404),
        ("another list's path", at(&scene.ns, "offers", &token), 404),
        (
            "a token of no key",
            at(
                &scene.ns,
                "news",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            404,
        ),
    ] {
        let (status, body) = one_click(&url, "List-Unsubscribe=One-Click").await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(
            body.contains("not a valid unsubscribe link"),
            "{what}: {body}"
        );
    }
    let (status, body) = one_click(&bo_local, "List-Unsubscribe=Please").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("List-Unsubscribe=One-Click"), "{body}");
    let oversized = format!("List-Unsubscribe=One-Click&pad={}", "x".repeat(8192));
    let (status, _) = one_click(&bo_local, oversized).await;
    assert_eq!(status, 413);
    // A replay answers as the first did and records nothing more.
    let (status, _) = one_click(&local(&receiver, &ann_url), "List-Unsubscribe=One-Click").await;
    assert_eq!(status, 200);
    assert_eq!(unsubscribed(&scene).await, expected, "only ann, once");
    let counted = receiver.metric("mailroom_unsubscribes_total", "outcome=\"recorded\"");
    assert_eq!(counted, 1.0);
    assert_eq!(
        receiver.metric("mailroom_unsubscribes_total", "outcome=\"already\""),
        1.0
    );
    assert_eq!(
        receiver.metric("mailroom_unsubscribes_total", "outcome=\"invalid\""),
        4.0
    );

    // A rotation: the Secret's key moves to `previous` and a new one is
    // `current`. A link sealed with the new key is taken once the receiver's
    // watch of the Secret shows it (refused at once before: a key it does
    // not hold), and one of the old key still is.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    let old = secrets
        .get("unsubscribe-keys")
        .await
        .expect("the key Secret, made on first use");
    let old_key = old
        .data
        .as_ref()
        .and_then(|d| d.get("current"))
        .expect("current")
        .0
        .clone();
    let new_key = vec![7u8; 32];
    let rotated = json!({"data": {
        "current": k8s_openapi::ByteString(new_key.clone()),
        "previous": k8s_openapi::ByteString(old_key.clone())}});
    merge(&secrets, "unsubscribe-keys", &rotated).await;
    use mailroom::delivery::unsubscribe::token::{KeyRing, SealKey};
    let ring = KeyRing {
        current: SealKey::new(&new_key).expect("key"),
        previous: Some(SealKey::new(&old_key).expect("key")),
    };
    let cy = "cy@example.org";
    let cy_token = ring.seal(&scene.ns, "news", cy);
    let cy_url = at(&scene.ns, "news", &cy_token);
    support::eventually(
        "the receiver to take a link of the new key",
        Duration::from_secs(10),
        || async {
            let (status, body) = one_click(&cy_url, "List-Unsubscribe=One-Click").await;
            assert!(
                status == 200 || status == 404,
                "a link of the new key: {status} {body}"
            );
            (status == 200).then_some(())
        },
    )
    .await;
    let (status, body) = one_click(&bo_local, "List-Unsubscribe=One-Click").await;
    assert_eq!(status, 200, "a link of the previous key: {body}");
    let expected = BTreeMap::from([
        (ann.to_string(), "news".to_string()),
        (bo.to_string(), "news".to_string()),
        (cy.to_string(), "news".to_string()),
    ]);
    assert_eq!(unsubscribed(&scene).await, expected);
    // bo subscribes again for the rest of the test.
    let suppressions: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
    let bo_suppression = mailroom::api::suppression::name_for_list("news", bo);
    suppressions
        .delete(&bo_suppression, &DeleteParams::default())
        .await
        .expect("deleting");

    // The next mail on news skips ann and reaches bo; another list and a
    // transactional message still reach ann.
    let second = support::unique("news 2");
    bulk(&scene, "news-2", &second, &[ann, bo], json!({})).await;
    let offers = support::unique("offers");
    bulk(&scene, "offers", &offers, &[ann], json!({"list": "offers"})).await;
    let receipt = support::unique("receipt");
    scene
        .message(
            "receipt",
            json!({"providerRef": {"name": "lists"}, "to": [ann], "subject": receipt, "text": "paid"}),
        )
        .await;
    let news2 = scene.wait_phase("news-2", Phase::Sent).await;
    let progress = news2.status.and_then(|s| s.bulk).expect("bulk progress");
    assert_eq!((progress.sent, progress.failed), (1, 1), "{progress:?}");
    assert_eq!(progress.failures[0].to, ann);
    assert_eq!(progress.failures[0].reason, "Suppressed");
    assert!(
        progress.failures[0]
            .message
            .contains("unsubscribed from list \"news\""),
        "{:?}",
        progress.failures[0]
    );
    mailpit
        .wait_for(
            &format!("subject:\"{second}\" to:{bo}"),
            1,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(support::received(&second).await.len(), 1, "bo only");
    scene.wait_phase("offers", Phase::Sent).await;
    let offer_url = one_click_url(&mailpit, &offers, ann).await;
    assert!(offer_url.contains("/offers/"), "{offer_url}");
    scene.wait_phase("receipt", Phase::Sent).await;
    let found = mailpit
        .wait_for(
            &format!("subject:\"{receipt}\""),
            1,
            Duration::from_secs(60),
        )
        .await;
    let headers = mailpit.headers(&found[0].id).await;
    assert!(
        !headers.contains_key("List-Unsubscribe"),
        "a transactional message carries none"
    );

    // Deleting the suppression subscribes ann again.
    let name = mailroom::api::suppression::name_for_list("news", ann);
    suppressions
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting");
    support::wait_gone(&suppressions, &name).await;
    let third = support::unique("news 3");
    bulk(&scene, "news-3", &third, &[ann], json!({})).await;
    scene.wait_phase("news-3", Phase::Sent).await;
    mailpit
        .wait_for(
            &format!("subject:\"{third}\" to:{ann}"),
            1,
            Duration::from_secs(60),
        )
        .await;
    controller.stop().await;
}

#[tokio::test]
async fn a_services_unsubscribe_event_suppresses_on_the_messages_list() {
    use mailroom_fakes::Service;
    let h = crate::delivery_events::Hooked::new(Service::SendGrid, "unsubscribe-event").await;
    let http = reqwest::Client::new();
    // SendGrid reports a global unsubscribe and an unsubscribe from an
    // unsubscribe group alike; each is from the message's list.
    for (name, to, event, list) in [
        ("news", "ann@example.org", "unsubscribe", "news"),
        ("plain", "bo@example.org", "group_unsubscribe", "default"),
    ] {
        let mut spec = json!({"providerRef": {"name": "api"}, "to": [to], "subject": name,
                              "text": "t"});
        if name == "news" {
            spec["list"] = json!(list);
        }
        h.scene.message(name, spec).await;
        let sent = h.scene.wait_phase(name, Phase::Sent).await;
        let id = sent
            .status
            .and_then(|s| s.provider_message_id)
            .expect("an id");
        let now = jiff::Timestamp::now().as_second();
        // SendGrid's documented event shape, with the origin it echoes.
        let mut record = json!({"email": to, "timestamp": now, "event": event,
            "sg_event_id": format!("ev-{name}"), "sg_message_id": id, "asm_group_id": 7,
            "useragent": "Mozilla/5.0", "ip": "192.0.2.1"});
        for (key, value) in h.fake.echo(&id) {
            record[key] = json!(value);
        }
        let request = h.signer.sign(&json!([record]), now);
        let status = crate::support::webhooks::post(&http, &h.url(), &request).await;
        assert_eq!(status, 200, "{name}");
        let suppressions: Api<EmailSuppression> =
            Api::namespaced(h.scene.client.clone(), &h.scene.ns);
        let object = mailroom::api::suppression::name_for_list(list, to);
        let found =
            support::eventually(&format!("{to} off {list}"), Duration::from_secs(15), || {
                let (suppressions, object) = (suppressions.clone(), object.clone());
                async move { suppressions.get_opt(&object).await.ok().flatten() }
            })
            .await;
        assert_eq!(found.spec.reason, SuppressionReason::Unsubscribed);
        assert_eq!(found.spec.list.as_deref(), Some(list));
        assert!(
            found
                .spec
                .detail
                .unwrap_or_default()
                .contains("reported it")
        );
    }
}

#[tokio::test]
async fn an_unsubscribe_mail_to_the_bounce_mailbox_is_recorded() {
    let scene = Scene::new("unsubscribe-mail").await;
    let mailbox = crate::bounces::setup(&scene, "unsub-mail", "secret-mailbox").await;
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let hosted = json!({"spec": {"unsubscribe": {"hosted": {"baseURL": PUBLIC}}}});
    merge(&providers, "relay", &hosted).await;
    let controller = controller(&scene);
    let subject = support::unique("weekly");
    scene
        .message(
            "weekly",
            json!({"providerRef": {"name": "relay"}, "to": ["ann@example.org"], "list": "weekly",
                   "subject": subject, "text": "this week"}),
        )
        .await;
    scene.wait_phase("weekly", Phase::Sent).await;
    let found = mailbox
        .mailpit
        .wait_for(
            &format!("subject:\"{subject}\""),
            1,
            Duration::from_secs(60),
        )
        .await;
    let headers = mailbox.mailpit.headers(&found[0].id).await;
    let list = headers["List-Unsubscribe"][0].clone();
    let (address, asked) = match list_unsubscribe::parse(&list) {
        list_unsubscribe::UnsubscribeMethod::Mailto { address, subject } => (address, subject),
        other => panic!("no mailto: {other:?} from {list:?}"),
    };
    assert_eq!(address, crate::bounces::BOUNCES);
    let asked = asked.expect("a subject to send");
    // What a mail client sends for the mailto link.
    let raw = format!(
        "From: Ann <ann@example.org>\r\nTo: {address}\r\nSubject: {asked}\r\nMessage-ID: <u1@example.org>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nunsubscribe\r\n"
    );
    mailbox.deliver(&address, &raw).await;
    let is_there =
        |all: &[crate::support::mailpit::Summary]| all.iter().any(|m| m.subject == asked);
    assert!(
        is_there(&mailbox.mailpit.all().await),
        "delivered to the mailbox"
    );
    let suppressions: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
    let object = mailroom::api::suppression::name_for_list("weekly", "ann@example.org");
    let recorded = support::eventually("ann off weekly", Duration::from_secs(60), || {
        let (suppressions, object) = (suppressions.clone(), object.clone());
        async move { suppressions.get_opt(&object).await.ok().flatten() }
    })
    .await;
    assert_eq!(recorded.spec.reason, SuppressionReason::Unsubscribed);
    assert_eq!(recorded.spec.detail.as_deref(), Some("an unsubscribe mail"));
    // Recorded mails are deleted from the mailbox.
    support::eventually(
        "the unsubscribe mail deleted",
        Duration::from_secs(60),
        || async {
            mailbox
                .mailpit
                .search(&format!("subject:\"{asked}\""))
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    controller.stop().await;
}
