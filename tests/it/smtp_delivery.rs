//! SMTP delivery end to end: the controller runs against the real apiserver
//! and sends to a real mailpit; each test checks the message's status and
//! what mailpit received.

use crate::support;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use kube::api::Api;
use mailroom::api::{EmailMessage, Phase};
use serde_json::json;

#[tokio::test]
async fn text_message_is_sent_once_with_its_ids_in_status() {
    let scene = Scene::new("text-message").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("plain text");
    scene
        .message(
            "welcome",
            json!({"providerRef": {"name": "mailpit"}, "to": ["Alice <alice@example.com>"],
                   "subject": subject, "text": "Hello Alice"}),
        )
        .await;

    let sent = scene.wait_phase("welcome", Phase::Sent).await;
    let status = sent.status.clone().expect("status");
    assert_eq!(status.attempts, 1);
    assert_eq!(fixtures::sent_reason(&sent), "Accepted");
    let reply = status.server_reply.expect("server reply");
    assert_eq!(reply.code, 250);
    let queue_id = status.provider_message_id.expect("provider message id");
    assert!(
        reply.message.contains(&queue_id),
        "queue id {queue_id} comes from {:?}",
        reply.message
    );
    assert!(status.sent_time.is_some());

    let found = support::received(&subject).await;
    assert_eq!(found.len(), 1, "exactly one copy received");
    let mail = Mailpit::shared().message(&found[0].id).await;
    let identity = mailroom::ledger::Identity::of(&sent);
    assert_eq!(
        format!("<{}>", mail.message_id),
        status.message_id.expect("message id")
    );
    assert_eq!(
        mail.message_id,
        format!("{}@mailroom.dev", identity.as_str()),
        "Message-ID derives from the message's identity"
    );
    assert_eq!(
        mail.from.expect("from").address,
        "tests@mailroom.dev",
        "the provider's defaultFrom"
    );
    assert_eq!(mail.to[0].address, "alice@example.com");
    assert_eq!(mail.text.trim_end(), "Hello Alice");
    assert!(mail.html.is_empty());

    controller.stop().await;
}

#[tokio::test]
async fn html_and_text_are_sent_as_multipart_alternative() {
    let scene = Scene::new("html-text").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("html and text");
    scene
        .message(
            "newsletter",
            json!({"providerRef": {"name": "mailpit"}, "from": "News <news@example.com>",
                   "to": ["reader@example.org"], "subject": subject,
                   "text": "Plain version", "html": "<h1>Rich version</h1>"}),
        )
        .await;
    scene.wait_phase("newsletter", Phase::Sent).await;

    let found = support::received(&subject).await;
    let mailpit = Mailpit::shared();
    let mail = mailpit.message(&found[0].id).await;
    assert_eq!(mail.text.trim_end(), "Plain version");
    assert!(mail.html.contains("<h1>Rich version</h1>"), "{}", mail.html);
    assert_eq!(mail.from.expect("from").address, "news@example.com");
    let headers = mailpit.client_headers(&found[0].id).await;
    assert!(
        headers.contains("Content-Type: multipart/alternative;"),
        "{headers}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn cc_and_bcc_are_delivered_and_bcc_stays_out_of_the_headers() {
    let scene = Scene::new("cc-bcc").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("cc and bcc");
    scene
        .message(
            "team",
            json!({"providerRef": {"name": "mailpit"}, "to": ["to@example.org"],
                   "cc": ["Carol <carol@example.org>"], "bcc": ["secret-bob@example.org"],
                   "replyTo": ["Support <support@example.com>"], "subject": subject,
                   "text": "team update", "headers": {"X-Campaign": "spring-2026"}}),
        )
        .await;
    scene.wait_phase("team", Phase::Sent).await;

    let found = support::received(&subject).await;
    assert_eq!(found.len(), 1, "one message for all recipients");
    let mailpit = Mailpit::shared();
    let mail = mailpit.message(&found[0].id).await;
    assert_eq!(mail.cc[0].address, "carol@example.org");
    assert_eq!(mail.reply_to[0].address, "support@example.com");
    let envelope_only: Vec<_> = mail.bcc.iter().map(|a| a.address.as_str()).collect();
    assert_eq!(
        envelope_only,
        ["secret-bob@example.org"],
        "bcc received through the envelope"
    );

    let headers = mailpit.client_headers(&found[0].id).await;
    assert!(
        headers.contains("Cc: Carol <carol@example.org>"),
        "{headers}"
    );
    assert!(headers.contains("X-Campaign: spring-2026"), "{headers}");
    let bcc_headers = headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("bcc:"))
        .count();
    assert_eq!(bcc_headers, 0, "no Bcc header was sent:\n{headers}");
    assert!(
        !headers.contains("secret-bob"),
        "the bcc address is in no header:\n{headers}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn message_waits_for_a_missing_secret_then_is_sent_once() {
    let scene = Scene::new("missing-secret").await;
    fixtures::ca_config_map(&scene.client, &scene.ns).await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "mailpit",
        fixtures::mailpit_smtp("arrives-later"),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("after the secret");
    scene.note("patient", "mailpit", &subject).await;

    let provider = scene.wait_provider("mailpit", "SecretNotFound").await;
    let ready = &provider.status.expect("status").conditions[0];
    assert!(
        ready.message.contains("\"arrives-later\""),
        "names the Secret: {}",
        ready.message
    );
    let waiting = scene.wait_reason("patient", "ProviderNotReady").await;
    let status = waiting.status.expect("status");
    assert_eq!(
        (status.phase, status.attempts),
        (Some(Phase::Pending), 0),
        "nothing attempted"
    );

    fixtures::smtp_secret(
        &scene.client,
        &scene.ns,
        "arrives-later",
        &support::env().smtp_password,
    )
    .await;
    let sent = scene.wait_phase("patient", Phase::Sent).await;
    assert_eq!(sent.status.expect("status").attempts, 1);
    assert_eq!(support::received(&subject).await.len(), 1);
    controller.stop().await;
}

#[tokio::test]
async fn message_waits_for_a_missing_provider() {
    let scene = Scene::new("missing-provider").await;
    let controller = scene.controller().await;
    let subject = support::unique("provider later");
    scene.note("early", "mailpit", &subject).await;
    let waiting = scene.wait_reason("early", "ProviderNotFound").await;
    assert_eq!(waiting.status.and_then(|s| s.phase), Some(Phase::Pending));

    scene.mailpit_provider().await;
    scene.wait_phase("early", Phase::Sent).await;
    assert_eq!(support::received(&subject).await.len(), 1);
    controller.stop().await;
}

#[tokio::test]
async fn wrong_credentials_make_the_provider_auth_failed_and_nothing_is_sent() {
    let scene = Scene::new("wrong-credentials").await;
    fixtures::smtp_secret(
        &scene.client,
        &scene.ns,
        "smtp-credentials",
        "not-the-password",
    )
    .await;
    fixtures::ca_config_map(&scene.client, &scene.ns).await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "mailpit",
        fixtures::mailpit_smtp("smtp-credentials"),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("wrong credentials");
    scene.note("blocked", "mailpit", &subject).await;

    let provider = scene.wait_provider("mailpit", "AuthFailed").await;
    let ready = &provider.status.expect("status").conditions[0];
    assert_eq!(ready.status, "False");
    assert!(
        !ready.message.contains("not-the-password"),
        "no credential in status: {}",
        ready.message
    );
    let status = scene
        .wait_reason("blocked", "ProviderNotReady")
        .await
        .status
        .expect("status");
    assert_eq!((status.phase, status.attempts), (Some(Phase::Pending), 0));
    assert!(
        status.conditions[0].message.contains("AuthFailed"),
        "{}",
        status.conditions[0].message
    );
    assert_eq!(support::received_count(&subject).await, 0);
    controller.stop().await;
}

/// A provider `name` for an extra mailpit that speaks no TLS and takes any AUTH.
async fn plain_server_provider(
    scene: &Scene,
    name: &str,
    extra: serde_json::Value,
) -> (String, String) {
    let server = format!("{name}-{}", scene.ns);
    let (smtp, api) = fixtures::extra_mailpit(
        &server,
        &["--", "--smtp-auth-accept-any", "--smtp-auth-allow-insecure"],
    );
    let (host, port) = smtp.rsplit_once(':').expect("host:port");
    let mut smtp_spec =
        json!({"host": host, "port": port.parse::<u16>().expect("port"), "timeoutSeconds": 5});
    if let (Some(spec), Some(extra)) = (smtp_spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    fixtures::provider(&scene.client, &scene.ns, name, smtp_spec).await;
    (server, api)
}

#[tokio::test]
async fn starttls_required_against_a_server_without_it_sends_nothing_in_clear_text() {
    let scene = Scene::new("starttls-required").await;
    fixtures::smtp_secret(&scene.client, &scene.ns, "smtp-credentials", "secret").await;
    let auth = json!({"auth": {"secretRef": {"name": "smtp-credentials"}}});
    let (_, api) = plain_server_provider(&scene, "plain", auth).await;
    let controller = scene.controller().await;
    scene.note("careful", "plain", "never in clear text").await;

    let provider = scene.wait_provider("plain", "TLSFailed").await;
    let message = &provider.status.expect("status").conditions[0].message;
    assert!(
        message.to_ascii_lowercase().contains("starttls"),
        "{message}"
    );
    scene.wait_reason("careful", "ProviderNotReady").await;
    assert_eq!(
        Mailpit::new(&api).count().await,
        0,
        "the plain-text server received nothing"
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_server_that_goes_away_fails_the_attempt_with_a_reason_and_retries_later() {
    let scene = Scene::new("server-gone").await;
    let (server, _) = plain_server_provider(&scene, "fragile", json!({"tls": "None"})).await;
    let controller = scene.controller().await;
    scene.wait_provider("fragile", "Verified").await;

    fixtures::stop_extra_mailpit(&server);
    scene.note("unlucky", "fragile", "server gone").await;
    let waiting = scene
        .wait_message("unlucky", "a failed attempt", |m| {
            m.status
                .as_ref()
                .is_some_and(|s| s.attempts == 1 && s.last_error.is_some())
        })
        .await;
    let status = waiting.status.expect("status");
    let error = status.last_error.expect("last error");
    assert_eq!(status.phase, Some(Phase::Pending), "retryable: not Failed");
    assert_eq!(error.reason, "Unreachable", "{error:?}");
    assert!(error.retryable);
    assert!(
        status.next_attempt_time.is_some(),
        "the next attempt is scheduled"
    );
    let provider = scene.wait_provider("fragile", "Unreachable").await;
    assert_eq!(
        provider.status.expect("status").conditions[0].status,
        "False"
    );
    controller.stop().await;
}

#[tokio::test]
async fn bad_addresses_and_header_injection_are_rejected_at_apply_time() {
    let scene = Scene::new("apply-time").await;
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let base = json!({"providerRef": {"name": "p"}, "to": ["ok@example.org"], "subject": "s", "text": "t"});
    let cases = [
        ("to", json!(["alice@"]), "spec.to[0]"),
        (
            "cc",
            json!(["Bob <bob@example.org>, eve@example.org"]),
            "spec.cc[0]",
        ),
        (
            "headers",
            json!({"X-Note": "hi\r\nBcc: eve@example.org"}),
            "header values may not contain CR or LF",
        ),
        (
            "headers",
            json!({"Bcc": "eve@example.org"}),
            "headers may not set",
        ),
        (
            "subject",
            json!("Hi\r\nBcc: eve@example.org"),
            "spec.subject",
        ),
    ];
    for (i, (field, value, expected)) in cases.into_iter().enumerate() {
        let mut spec = base.clone();
        spec[field] = value;
        scene
            .assert_refused("EmailMessage", &format!("bad-{i}"), spec, expected)
            .await;
    }
    assert!(
        api.list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn an_address_the_schema_lets_through_fails_the_message_naming_the_field() {
    let scene = Scene::new("invalid-request").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("invalid local part");
    scene
        .message(
            "odd",
            json!({"providerRef": {"name": "mailpit"}, "to": ["fine@example.org", "two..dots@example.org"],
                   "subject": subject, "text": "hi"}),
        )
        .await;
    let failed = scene.wait_phase("odd", Phase::Failed).await;
    let error = failed
        .status
        .expect("status")
        .last_error
        .expect("last error");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(error.message.starts_with("spec.to[1]"), "{}", error.message);
    assert!(!error.retryable);
    // The Warning Event is published after the status is written.
    support::eventually(
        "a Warning Event for odd",
        std::time::Duration::from_secs(30),
        || async {
            let events = fixtures::events_for(&scene.client, &scene.ns, "odd").await;
            events
                .iter()
                .any(|(t, r, _)| t == "Warning" && r == "Failed")
                .then_some(())
        },
    )
    .await;
    assert_eq!(support::received_count(&subject).await, 0);
    controller.stop().await;
}

#[tokio::test]
async fn a_restarted_controller_does_not_send_a_sent_message_again() {
    let scene = Scene::new("restart").await;
    scene.mailpit_provider().await;
    let first = scene.controller().await;
    let subject = support::unique("only once");
    scene.note("once", "mailpit", &subject).await;
    let sent = scene.wait_phase("once", Phase::Sent).await;
    first.stop().await;

    // A new controller starts from nothing and sees the Sent message; a second
    // message sent by it shows it has caught up with the namespace.
    let second = scene.controller().await;
    let marker = support::unique("after restart");
    scene.note("marker", "mailpit", &marker).await;
    scene.wait_phase("marker", Phase::Sent).await;
    support::received(&marker).await;

    assert_eq!(
        support::received_count(&subject).await,
        1,
        "still exactly one copy"
    );
    let after: EmailMessage = Api::namespaced(scene.client.clone(), &scene.ns)
        .get("once")
        .await
        .expect("get");
    assert_eq!(
        fixtures::version(&after),
        fixtures::version(&sent),
        "nothing wrote to the Sent message"
    );
    second.stop().await;
}

/// A server that stalls after the message body costs only its own messages:
/// each attempt is cut off at twice the provider's timeoutSeconds (the wait
/// for the reply to DATA included), and the provider holds at most its share
/// of the send slots, so another provider's message is sent meanwhile.
#[tokio::test]
async fn a_stalled_server_delays_only_its_own_messages() {
    use mailroom::controller::Settings;
    use support::stalling_smtp::StallingSmtp;

    let scene = Scene::new("stalled-server").await;
    scene.mailpit_provider().await;
    let stalling = StallingSmtp::start().await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "stalled",
        json!({"host": "127.0.0.1", "port": stalling.port, "tls": "None", "timeoutSeconds": 2}),
    )
    .await;
    // Four slots: the stalled provider may hold one of them.
    let settings = Settings {
        max_concurrent_sends: 4,
        ..fixtures::settings(&scene.ns)
    };
    let controller =
        fixtures::RunningController::start_with_settings(scene.client.clone(), settings);
    scene.wait_provider("stalled", "Verified").await;
    for i in 0..4 {
        let spec = json!({"providerRef": {"name": "stalled"}, "to": ["x@example.org"],
                          "subject": format!("stalled {i}"), "text": "t", "deliveryPolicy": "AtMostOnce"});
        scene.message(&format!("stalled-{i}"), spec).await;
    }
    support::eventually(
        "the stalled server holding a message",
        std::time::Duration::from_secs(30),
        || async { (stalling.bodies() >= 1).then_some(()) },
    )
    .await;

    let subject = support::unique("not behind the stalled server");
    scene.note("other", "mailpit", &subject).await;
    scene.wait_phase("other", Phase::Sent).await;
    let messages = fixtures::all_messages(&scene.client, &scene.ns).await;
    let stalled_done = messages
        .iter()
        .filter(|m| {
            m.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("stalled-"))
        })
        .filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(Phase::Unknown))
        .count();
    assert!(
        stalled_done < 4,
        "the other provider's message did not wait for all the stalled ones ({stalled_done} done)"
    );
    assert_eq!(support::received(&subject).await.len(), 1);

    // Each stalled attempt ends at its limit (2 x 2 s), not when the server
    // answers (never): AtMostOnce, so Unknown, and the reason says why.
    let unknown = scene.wait_phase("stalled-0", Phase::Unknown).await;
    let error = unknown
        .status
        .expect("status")
        .last_error
        .expect("lastError");
    assert!(
        error
            .message
            .contains("did not finish answering within 4 s"),
        "{}",
        error.message
    );
    for i in 1..4 {
        scene
            .wait_phase(&format!("stalled-{i}"), Phase::Unknown)
            .await;
    }
    controller.stop().await;
}

/// A display name with characters RFC 5322 allows only quoted (`:` `()`
/// `[]`) passes apply, is sent quoted, and arrives with the name as given.
#[tokio::test]
async fn a_display_name_with_specials_is_sent_quoted() {
    let scene = Scene::new("display-name").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("quoted name");
    scene
        .message(
            "named",
            json!({"providerRef": {"name": "mailpit"}, "to": ["Support: Team (EU) [ops] <help@example.org>"],
                   "subject": subject, "text": "hi"}),
        )
        .await;
    scene.wait_phase("named", Phase::Sent).await;
    let found = support::received(&subject).await;
    let mail = Mailpit::shared().message(&found[0].id).await;
    assert_eq!(mail.to[0].address, "help@example.org");
    assert_eq!(mail.to[0].name, "Support: Team (EU) [ops]");
    controller.stop().await;
}

/// With the default pool, a provider opens 16 connections at first and more
/// while messages wait for one; a server that takes at most 20 from one
/// client (as Postfix caps each client) refuses the 21st with a 421, and
/// the pool goes back to the 20 it took. Every message reaches the
/// server once and is Sent at its first attempt: the send that met the
/// refusal goes on one of the connections the server took.
#[tokio::test]
async fn a_busy_pool_grows_until_the_server_refuses_one_more() {
    use support::stalling_smtp::StallingSmtp;

    let scene = Scene::new("pool-grows").await;
    let capped = StallingSmtp::capped(std::time::Duration::from_millis(500), 20).await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "relay",
        json!({"host": "127.0.0.1", "port": capped.port, "tls": "None", "timeoutSeconds": 10}),
    )
    .await;
    let controller = scene.controller().await;
    scene.wait_provider("relay", "Verified").await;
    let count = 200;
    for i in 0..count {
        let spec = json!({"providerRef": {"name": "relay"}, "to": ["x@example.org"],
                          "subject": format!("pool {i}"), "text": "t"});
        scene.message(&format!("pool-{i}"), spec).await;
    }
    let mut retried = 0;
    for i in 0..count {
        let sent = scene.wait_phase(&format!("pool-{i}"), Phase::Sent).await;
        if sent.status.expect("status").attempts > 1 {
            retried += 1;
        }
    }
    assert_eq!(
        capped.bodies(),
        count,
        "each message reached the server once"
    );
    assert_eq!(
        capped.most_connections(),
        20,
        "the pool grew past its first 16 to all the server takes"
    );
    // Each send past the cap in flight when the first refusal came back is
    // refused too; after that the pool holds at 20 for ten minutes.
    let refused = capped.refused();
    assert!(
        (1..=3).contains(&refused),
        "{refused} refusals: asked past the cap only while growing into it"
    );
    assert_eq!(retried, 0, "no attempt failed for the refusal");
    controller.stop().await;
}

/// `pool.maxConnections` bounds the connections open at once: six messages
/// through a provider allowing two, at a server that takes a second over
/// each body, all reach it and are Sent, never more than two connections
/// open at once (lettre's own pool bounds only its idle connections).
#[tokio::test]
async fn a_provider_opens_at_most_its_pools_connections() {
    use support::stalling_smtp::StallingSmtp;

    let scene = Scene::new("pool-cap").await;
    let slow = StallingSmtp::answering_after(std::time::Duration::from_secs(1)).await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "capped",
        json!({"host": "127.0.0.1", "port": slow.port, "tls": "None", "timeoutSeconds": 10,
               "pool": {"maxConnections": 2}}),
    )
    .await;
    let controller = scene.controller().await;
    scene.wait_provider("capped", "Verified").await;
    for i in 0..6 {
        let spec = json!({"providerRef": {"name": "capped"}, "to": ["x@example.org"],
                          "subject": format!("capped {i}"), "text": "t"});
        scene.message(&format!("capped-{i}"), spec).await;
    }
    for i in 0..6 {
        scene.wait_phase(&format!("capped-{i}"), Phase::Sent).await;
    }
    assert_eq!(slow.bodies(), 6, "each message reached the server once");
    assert_eq!(
        slow.most_connections(),
        2,
        "never more connections open than pool.maxConnections"
    );
    controller.stop().await;
}
