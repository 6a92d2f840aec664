//! Delivery truth for SMTP: mailpit is the bounce mailbox (read over POP3
//! with TLS and a password). Messages go out through it with an envelope
//! sender that names them; reports in the shapes of Postfix, Exim (both its
//! DSN and its classic text), Microsoft 365 and Gmail, an ARF complaint, an
//! out-of-office reply, a malformed report, another provider's bounce, soft
//! bounces and a delay are then dropped into the mailbox, and the test checks
//! what a user would: the message phases, the suppression list, what is left
//! in the mailbox, and the provider's `BouncesReady` condition.

use std::time::Duration;

use kube::api::{Api, ListParams};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mailroom::api::{
    BounceKind, DeliveryEventType, EmailMessage, EmailProvider, EmailSuppression, Phase,
    SuppressionReason,
};
use serde_json::{Value, json};

use crate::support::fixtures::{self, Scene};
use crate::support::mailpit::Mailpit;
use crate::support::{self, env};

pub(crate) const BOUNCES: &str = "bounces@mailroom.dev";

/// A mailpit that takes SMTP in clear and serves its mail over POP3 with TLS.
pub(crate) struct Mailbox {
    smtp_port: u16,
    pop3_port: u16,
    pub(crate) mailpit: Mailpit,
}

impl Mailbox {
    fn start(name: &str, password: &str) -> Self {
        let dir = env().dir.clone();
        let auth = dir.join(format!("{name}-pop3-auth"));
        std::fs::write(&auth, format!("bounces:{password}\n")).expect("auth file");
        let pop3_port = support::free_port();
        let pki = dir.join("pki");
        let (smtp, api) = fixtures::extra_mailpit(
            name,
            &[
                "--",
                "--pop3",
                &format!("127.0.0.1:{pop3_port}"),
                "--pop3-auth-file",
                auth.to_str().expect("path"),
                "--pop3-tls-cert",
                pki.join("serving.crt").to_str().expect("path"),
                "--pop3-tls-key",
                pki.join("serving.key").to_str().expect("path"),
            ],
        );
        let smtp_port = smtp
            .rsplit_once(':')
            .expect("port")
            .1
            .parse()
            .expect("port");
        Self {
            smtp_port,
            pop3_port,
            mailpit: Mailpit::new(&api),
        }
    }

    /// Delivers `raw` to `to` with a null envelope sender, as a bounce comes.
    pub(crate) async fn deliver(&self, to: &str, raw: &str) {
        self.deliver_bytes(to, raw.as_bytes()).await;
    }

    /// Delivers `raw` (its lines ended anew with CRLF) to `to` with a null
    /// envelope sender.
    pub(crate) async fn deliver_bytes(&self, to: &str, raw: &[u8]) {
        let mut crlf = Vec::with_capacity(raw.len() + raw.len() / 40);
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.smtp_port)
            .build();
        let envelope = Envelope::new(None, vec![to.parse().expect("address")]).expect("envelope");
        transport
            .send_raw(&envelope, &crlf)
            .await
            .expect("delivering a report to the mailbox");
    }
}

/// The SMTP spec of a provider sending through `mailbox` and reading its
/// bounces from POP3 port `pop3`.
fn smtp(mailbox: &Mailbox, pop3: u16, secret: &str) -> Value {
    json!({
        "host": "127.0.0.1", "port": mailbox.smtp_port, "tls": "None", "timeoutSeconds": 10,
        "bounces": {
            "address": BOUNCES,
            "pop3": {"host": "127.0.0.1", "port": pop3,
                     "caBundle": {"configMapKeyRef": {"name": "smtp-ca", "key": "ca.crt"}}},
            "secretRef": {"name": secret},
            "pollSeconds": 10
        }
    })
}

pub(crate) async fn setup(scene: &Scene, name: &str, password: &str) -> Mailbox {
    let mailbox = Mailbox::start(&format!("{name}-{}", support::namespace_suffix()), password);
    fixtures::ca_config_map(&scene.client, &scene.ns).await;
    mailbox_secret(scene, "bounce-mailbox", password).await;
    let mut spec = smtp(&mailbox, mailbox.pop3_port, "bounce-mailbox");
    spec["bounces"]["pollSeconds"] = json!(10);
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "relay"},
               "spec": {"defaultFrom": "mailroom tests <tests@mailroom.dev>", "smtp": spec,
                        "softBounces": {"limit": 2, "windowHours": 24}}}),
    )
    .await;
    mailbox
}

async fn mailbox_secret(scene: &Scene, name: &str, password: &str) {
    fixtures::create::<k8s_openapi::api::core::v1::Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": name},
               "stringData": {"username": "bounces", "password": password}}),
    )
    .await;
}

fn to(address: &str, provider: &str, subject: &str) -> Value {
    json!({"providerRef": {"name": provider}, "to": [address], "subject": subject, "text": "Your order has shipped."})
}

/// Sends message `name` to `address` and returns what mailpit received:
/// (envelope sender, Message-ID with brackets).
pub(crate) async fn sent(
    scene: &Scene,
    mailbox: &Mailbox,
    name: &str,
    provider: &str,
    address: &str,
) -> (String, String) {
    let subject = support::unique(name);
    scene.message(name, to(address, provider, &subject)).await;
    received(scene, mailbox, name, &subject).await
}

/// Waits for message `name`, sent with `subject`, to be Sent and in
/// mailpit; answers its (envelope sender, Message-ID with brackets).
pub(crate) async fn received(
    scene: &Scene,
    mailbox: &Mailbox,
    name: &str,
    subject: &str,
) -> (String, String) {
    scene.wait_phase(name, Phase::Sent).await;
    let found = mailbox
        .mailpit
        .wait_for(
            &format!("subject:\"{subject}\""),
            1,
            Duration::from_secs(30),
        )
        .await;
    let received = mailbox.mailpit.message(&found[0].id).await;
    (received.return_path, format!("<{}>", received.message_id))
}

fn fill(fixture: &str, envelope: &str, recipient: &str, message_id: &str) -> String {
    let path = support::root().join("tests/fixtures/bounces").join(fixture);
    std::fs::read_to_string(path)
        .expect("fixture")
        .replace("{{ENVELOPE}}", envelope)
        .replace("{{RECIPIENT}}", recipient)
        .replace("{{MESSAGE_ID}}", message_id)
        .replace("{{BOUNCES}}", BOUNCES)
        .replace("{{REPORT_ID}}", &support::unique("r").replace(' ', "-"))
}

async fn suppressions(scene: &Scene, count: usize) -> Vec<EmailSuppression> {
    let api: Api<EmailSuppression> = Api::namespaced(scene.client.clone(), &scene.ns);
    support::eventually("the suppression list", READ_WITHIN, || async {
        let items = api.list(&ListParams::default()).await.expect("list").items;
        (items.len() == count).then_some(items)
    })
    .await
}

/// How long a report may take to be read: a few polls of 10 s on a busy
/// machine.
pub(crate) const READ_WITHIN: Duration = Duration::from_secs(180);

/// Waits until the provider's `BouncesReady` passes `check` (reason,
/// message); returns its message. On timeout, says what it last said.
pub(crate) async fn bounces_ready(
    scene: &Scene,
    provider: &str,
    check: impl Fn(&str, &str) -> bool,
) -> String {
    let api: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let deadline = tokio::time::Instant::now() + READ_WITHIN;
    let mut last = String::from("no BouncesReady condition");
    while tokio::time::Instant::now() < deadline {
        let condition = api
            .get(provider)
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "BouncesReady"));
        if let Some(c) = condition {
            if check(&c.reason, &c.message) {
                return c.message;
            }
            last = format!("{}: {}", c.reason, c.message);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("provider {provider}: BouncesReady did not pass within {READ_WITHIN:?}; it says {last}");
}

/// Waits until message `name` is in `phase`, as the mailbox is read.
async fn wait_read(scene: &Scene, name: &str, phase: Phase) -> EmailMessage {
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    support::eventually(
        &format!("message {name} {phase:?}"),
        READ_WITHIN,
        || async {
            api.get(name)
                .await
                .ok()
                .filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(phase))
        },
    )
    .await
}

#[tokio::test]
async fn bounces_from_postfix_exim_microsoft_365_and_gmail_turn_messages_bounced() {
    let scene = Scene::new("bounces-formats").await;
    let mailbox = setup(&scene, "bounces-formats", "pop3-secret-1").await;
    let controller = scene.controller().await;
    let shapes = [
        ("postfix", "postfix.eml", "5.1.1"),
        ("exim", "exim.eml", "5.1.1"),
        ("exim-text", "exim-text.eml", "5.1.1"),
        ("office365", "office365.eml", "5.1.10"),
        ("gmail", "gmail.eml", "5.1.1"),
    ];
    let mut reports = Vec::new();
    for (name, fixture, _) in shapes {
        let address = format!("gone-{name}@example.org");
        let (envelope, message_id) = sent(&scene, &mailbox, name, "relay", &address).await;
        assert!(
            envelope.starts_with("bounces+") && envelope.ends_with("@mailroom.dev"),
            "the envelope sender names the message: {envelope}"
        );
        assert!(
            !message_id.contains(&envelope[8..47]),
            "the token is not the Message-ID"
        );
        reports.push((
            envelope.clone(),
            fill(fixture, &envelope, &address, &message_id),
        ));
    }
    let before = mailbox.mailpit.count().await;
    for (envelope, raw) in &reports {
        mailbox.deliver(envelope, raw).await;
    }
    for (name, _, status) in shapes {
        let bounced = wait_read(&scene, name, Phase::Bounced).await;
        let status_text = bounced.status.expect("status");
        let event = status_text
            .delivery_events
            .iter()
            .find(|e| e.type_ == DeliveryEventType::Bounced)
            .expect("a bounce event");
        assert_eq!(event.bounce, Some(BounceKind::Hard), "{name}");
        assert_eq!(
            event.recipient.as_deref(),
            Some(format!("gone-{name}@example.org").as_str())
        );
        assert!(
            event
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with(status)),
            "{name}: {:?}",
            event.detail
        );
    }
    let listed = suppressions(&scene, shapes.len()).await;
    assert!(listed.iter().all(|s| {
        s.spec.reason == SuppressionReason::HardBounce
            && s.spec
                .provider_ref
                .as_ref()
                .is_some_and(|p| p.name == "relay")
    }));
    // The reports it recorded are deleted from the mailbox; the sent mail stays.
    support::eventually("the recorded reports deleted", READ_WITHIN, || async {
        (mailbox.mailpit.count().await == before).then_some(())
    })
    .await;
    let condition = bounces_ready(&scene, "relay", |reason, message| {
        reason == "MailboxRead" && message.contains("5 hard bounces recorded")
    })
    .await;
    assert!(condition.starts_with(BOUNCES), "{condition}");

    // The next message to a bounced address is refused, naming why.
    scene
        .message("again", to("Gone-Gmail@example.org", "relay", "again"))
        .await;
    let refused = scene.wait_reason("again", "Suppressed").await;
    let text = refused
        .status
        .and_then(|s| s.last_error)
        .expect("error")
        .message;
    assert!(
        text.contains("gone-gmail@example.org is suppressed: it bounced for good"),
        "{text}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn complaints_soft_bounces_and_delays_are_recorded_and_the_rest_left_alone() {
    let scene = Scene::new("bounces-kinds").await;
    let mailbox = setup(&scene, "bounces-kinds", "pop3-secret-2").await;
    // Another provider: its own key, and a mailbox that is down.
    mailbox_secret(&scene, "other-mailbox", "another-password").await;
    let closed = support::free_port();
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "other"},
               "spec": {"defaultFrom": "mailroom tests <tests@mailroom.dev>",
                        "smtp": smtp(&mailbox, closed, "other-mailbox")}}),
    )
    .await;
    let controller = scene.controller().await;

    let (complaint_env, complaint_id) =
        sent(&scene, &mailbox, "complaint", "relay", "angry@example.org").await;
    let (away_env, away_id) = sent(&scene, &mailbox, "away", "relay", "away@example.org").await;
    let (full_env, full_id) = sent(&scene, &mailbox, "full", "relay", "full@example.org").await;
    let (slow_env, slow_id) = sent(&scene, &mailbox, "slow", "relay", "slow@example.org").await;
    let (other_env, other_id) =
        sent(&scene, &mailbox, "foreign", "other", "theirs@example.org").await;
    // The mailbox being down does not stop the other provider sending.
    let message = bounces_ready(&scene, "other", |reason, _| reason == "Unreachable").await;
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );

    let before = mailbox.mailpit.count().await;
    // Two soft bounces (each report its own): the provider's limit.
    let mailbox_full = || {
        fill(
            "postfix-mailbox-full.eml",
            &full_env,
            "full@example.org",
            &full_id,
        )
    };
    let drops = [
        (
            complaint_env.clone(),
            fill(
                "arf.eml",
                &complaint_env,
                "angry@example.org",
                &complaint_id,
            ),
        ),
        (
            away_env.clone(),
            fill("out-of-office.eml", &away_env, "away@example.org", &away_id),
        ),
        (full_env.clone(), mailbox_full()),
        (full_env.clone(), mailbox_full()),
        (
            slow_env.clone(),
            fill(
                "postfix-delayed.eml",
                &slow_env,
                "slow@example.org",
                &slow_id,
            ),
        ),
        (
            other_env.clone(),
            fill("postfix.eml", &other_env, "theirs@example.org", &other_id),
        ),
        (
            slow_env.clone(),
            fill("malformed.eml", &slow_env, "slow@example.org", &slow_id),
        ),
    ];
    // The complaint goes to the feedback address (the plain bounce address).
    mailbox.deliver(BOUNCES, &drops[0].1).await;
    for (envelope, raw) in &drops[1..] {
        mailbox.deliver(envelope, raw).await;
    }
    let condition = bounces_ready(&scene, "relay", |_, message| {
        [
            "1 complaints recorded",
            "2 soft bounces recorded",
            "1 delays recorded",
            "1 auto-replies left",
            "1 malformed reports left",
            "1 reports for another provider left",
        ]
        .iter()
        .all(|part| message.contains(part))
    })
    .await;
    assert!(!condition.contains("hard bounces"), "{condition}");

    wait_read(&scene, "complaint", Phase::Complained).await;
    let full = scene.wait_phase("full", Phase::Sent).await;
    let soft = full.status.expect("status").delivery_events;
    assert_eq!(
        soft.iter()
            .filter(|e| e.bounce == Some(BounceKind::Soft))
            .count(),
        2,
        "{soft:?}"
    );
    let slow = scene
        .wait_phase("slow", Phase::Sent)
        .await
        .status
        .expect("status");
    assert!(
        slow.delivery_events
            .iter()
            .any(|e| e.type_ == DeliveryEventType::Deferred)
    );
    for name in ["away", "foreign"] {
        let m: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
        let phase = m.get(name).await.expect("get").status.and_then(|s| s.phase);
        assert_eq!(phase, Some(Phase::Sent), "{name} is not bounced");
    }
    let listed = suppressions(&scene, 2).await;
    let reason_of = |address: &str| {
        listed
            .iter()
            .find(|s| s.spec.address == address)
            .map(|s| s.spec.reason)
    };
    assert_eq!(
        reason_of("angry@example.org"),
        Some(SuppressionReason::Complaint)
    );
    assert_eq!(
        reason_of("full@example.org"),
        Some(SuppressionReason::SoftBounces)
    );
    // Recorded: the complaint, two soft bounces, the delay. Left: the
    // auto-reply, another provider's bounce, the malformed report.
    assert_eq!(mailbox.mailpit.count().await, before + 3);
    controller.stop().await;
}

#[tokio::test]
async fn a_full_mailbox_is_read_to_the_last_mail_and_left_mail_is_deleted_after_the_keep_time() {
    let scene = Scene::new("bounces-full").await;
    let mailbox = setup(&scene, "bounces-full", "pop3-secret-4").await;
    // Left mail is deleted on the poll after the one that left it. (mailpit's
    // POP3 lists the newest 100 mails only; deleting what was read is what
    // brings the older ones into view, as it would on a real server.)
    let mut settings = fixtures::settings(&scene.ns);
    settings.bounce_mailbox_keep_hours = 0;
    let controller =
        fixtures::RunningController::start_with_settings(scene.client.clone(), settings);
    let address = "full@example.org";
    let (envelope, message_id) = sent(&scene, &mailbox, "last", "relay", address).await;
    // 149 mails that are no bounce, of a few sizes, ahead of the one that is:
    // the UIDL and LIST answers span many reads.
    let others = 149;
    for i in 0..others {
        let body = "All well here. ".repeat(1 + (i % 7) * 300);
        let raw = format!(
            "From: someone{i}@example.org\nTo: {BOUNCES}\nSubject: note {i}\nMessage-ID: <note-{i}-{}@example.org>\n\n{body}\n",
            scene.ns
        );
        mailbox.deliver(BOUNCES, &raw).await;
    }
    mailbox
        .deliver(
            &envelope,
            &fill("postfix.eml", &envelope, address, &message_id),
        )
        .await;
    assert_eq!(mailbox.mailpit.count().await, others as u64 + 2);

    let bounced = wait_read(&scene, "last", Phase::Bounced).await;
    let recipient = bounced.status.expect("status").delivery_events[0]
        .recipient
        .clone();
    assert_eq!(recipient.as_deref(), Some(address));
    // Every mail is read: the bounce recorded and deleted, the others (the
    // sent mail among them) left once and deleted on a later poll.
    support::eventually("the mailbox emptied", READ_WITHIN, || async {
        (mailbox.mailpit.count().await == 0).then_some(())
    })
    .await;
    // Each of the 150 other mails was left, then deleted.
    let count = |message: &str, phrase: &str| -> u64 {
        message
            .split(", ")
            .find(|part| part.ends_with(phrase))
            .and_then(|part| part.rsplit(": ").next()?.split(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let condition = bounces_ready(&scene, "relay", |reason, message| {
        reason == "MailboxRead"
            && message.contains("1 hard bounces recorded")
            && count(message, "other messages left") >= 150
            && count(message, "left messages deleted after the keep time") >= 150
    })
    .await;
    assert!(condition.starts_with(BOUNCES), "{condition}");
    controller.stop().await;
}
