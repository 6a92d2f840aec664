//! A shared provider bounds each namespace on its own (`spec.tenants`):
//! one namespace over its hourly quota waits while another sends; a
//! sender outside the allowed list is refused; a staging namespace's mail
//! to customers goes to the redirect address with `X-Original-To`; a
//! namespace whose bounces pass the limit is held, the others still send,
//! until a person releases it; the usage survives a controller restart.
//!
//! Cluster-scoped objects are seen by every controller that serves them, so
//! this file holds one test of the cluster provider with its own
//! controllers, and one of bad input.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use mailroom::api::{ClusterEmailProvider, EmailMessage, EmailUsage, Phase};
use serde_json::{Value, json};

use crate::support::fixtures::{self, RunningController, Scene};
use crate::support::{self, Mailpit};

fn serving(scene: &Scene, secrets: &str) -> RunningController {
    fixtures::serving_cluster_providers(scene, secrets)
}

fn note(provider: &str, to: &str, subject: &str) -> Value {
    json!({"providerRef": {"kind": "ClusterEmailProvider", "name": provider},
           "to": [to], "subject": subject, "text": "hi"})
}

fn sent_text(m: &EmailMessage) -> String {
    m.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Sent"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn usage(
    scene: &Scene,
    provider: &str,
    what: &str,
    check: impl Fn(&EmailUsage) -> bool,
) -> EmailUsage {
    let api: Api<EmailUsage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let name = format!("clusteremailprovider.{provider}");
    support::eventually(what, Duration::from_secs(30), || async {
        api.get(&name).await.ok().filter(|u| check(u))
    })
    .await
}

/// Marks message `name` bounced, as the services' webhooks or the bounce
/// mailbox would write it.
async fn bounce(scene: &Scene, name: &str) {
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"phase": "Bounced", "conditions": [
        {"type": "Sent", "status": "True", "reason": "Accepted", "message": "accepted", "lastTransitionTime": now},
        {"type": "Delivered", "status": "False", "reason": "Bounced", "message": "550 5.1.1 no such user", "lastTransitionTime": now}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("marking the message bounced");
}

#[tokio::test]
async fn a_shared_provider_bounds_each_namespace_on_its_own() {
    let home = fixtures::cluster_home("tenants-home").await;
    let (busy, staging, noisy) = (
        Scene::new("tenants-busy").await,
        Scene::new("tenants-staging").await,
        Scene::new("tenants-noisy").await,
    );
    let name = format!("shared-{}", support::namespace_suffix());
    let provider: ClusterEmailProvider = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "ClusterEmailProvider",
        "metadata": {"name": name},
        "spec": {"defaultFrom": "platform <platform@mailroom.dev>",
                 "smtp": fixtures::mailpit_smtp("smtp-credentials"),
                 "allowedNamespaces": {"names": [busy.ns, staging.ns, noisy.ns]},
                 "tenants": [
                     {"namespaces": {"names": [busy.ns]}, "messagesPerHour": 3,
                      "senders": ["*@mailroom.dev"]},
                     {"namespaces": {"names": [staging.ns]},
                      "recipients": {"allow": ["*@mailroom.dev"], "redirectTo": "qa@mailroom.dev"}},
                     {"namespaces": {"names": [noisy.ns]},
                      "reputation": {"maxBouncePercent": 40, "minimumSent": 2}}]}
    }))
    .expect("provider JSON");
    let providers: Api<ClusterEmailProvider> = Api::all(home.client.clone());
    providers
        .create(&Default::default(), &provider)
        .await
        .expect("creating the cluster provider");
    let mut busy_controller = serving(&busy, &home.ns);
    let controllers = [serving(&staging, &home.ns), serving(&noisy, &home.ns)];

    // The busy namespace sends five; its quota is three an hour. The
    // staging namespace writes to a customer at the same time.
    let hour = jiff::Timestamp::now().as_second() / 3600;
    for i in 0..5 {
        let subject = support::unique(&format!("busy {i}"));
        busy.message(&format!("m{i}"), note(&name, "x@example.org", &subject))
            .await;
    }
    let customer_subject = support::unique("staging to a customer");
    staging
        .message(
            "to-customer",
            note(&name, "customer@example.org", &customer_subject),
        )
        .await;
    // A spoofed sender is refused at apply (the admission policy sees the
    // provider); a spoofed reply-to, which it does not judge, by the
    // controller before anything is sent.
    let spoofed = json!({"providerRef": {"kind": "ClusterEmailProvider", "name": name},
                         "from": "payroll@company.example", "to": ["x@example.org"],
                         "subject": "pay", "text": "hi"});
    let refused = support::eventually(
        "the spoofed sender refused",
        Duration::from_secs(30),
        || async { crate::deliverability::dry_run_refusal(&busy, &spoofed).await },
    )
    .await;
    assert!(
        refused.contains("spec.from: payroll@company.example is not among the senders"),
        "{refused}"
    );
    let reply_spoofed = json!({"providerRef": {"kind": "ClusterEmailProvider", "name": name},
                               "replyTo": ["payroll@company.example"], "to": ["x@example.org"],
                               "subject": "pay", "text": "hi"});
    busy.message("spoofed", reply_spoofed).await;

    let all = support::eventually("3 sent, 2 over quota", Duration::from_secs(60), || async {
        let all = fixtures::all_messages(&busy.client, &busy.ns).await;
        let phase = |m: &EmailMessage| m.status.as_ref().and_then(|s| s.phase);
        let sent = all.iter().filter(|m| phase(m) == Some(Phase::Sent)).count();
        let waiting = all
            .iter()
            .filter(|m| fixtures::sent_reason(m) == "QuotaExceeded")
            .count();
        (sent == 3 && waiting == 2).then_some(all)
    })
    .await;
    let over = all
        .iter()
        .find(|m| fixtures::sent_reason(m) == "QuotaExceeded")
        .expect("one over quota");
    assert!(
        sent_text(over).contains("3 of its 3 messages this hour"),
        "{}",
        sent_text(over)
    );
    let refused = busy.wait_phase("spoofed", Phase::Failed).await;
    assert_eq!(fixtures::sent_reason(&refused), "SenderNotAllowed");
    assert!(
        sent_text(&refused).starts_with("spec.replyTo[0]: payroll@company.example"),
        "{}",
        sent_text(&refused)
    );

    // Staging: the customer got nothing; the redirect address got it, with
    // the original recipient kept.
    let redirected = staging.wait_phase("to-customer", Phase::Sent).await;
    let status = redirected.status.clone().expect("status");
    assert_eq!(status.redirected_to.as_deref(), Some("qa@mailroom.dev"));
    assert!(sent_text(&redirected).contains("redirected to qa@mailroom.dev"));
    let got = support::received(&customer_subject).await;
    assert_eq!(got.len(), 1);
    let headers = Mailpit::shared().headers(&got[0].id).await;
    assert_eq!(
        headers.get("To").map(|v| v.join(",")).as_deref(),
        Some("qa@mailroom.dev")
    );
    assert_eq!(
        headers.get("X-Original-To").map(|v| v.join(",")).as_deref(),
        Some("customer@example.org")
    );

    // The busy namespace's usage, where its team can read it; and it
    // survives a controller restart.
    let counted = usage(&busy, &name, "3 sent this hour", |u| {
        u.status
            .as_ref()
            .and_then(|s| s.hour.as_ref())
            .is_some_and(|h| h.messages == 3 && h.limit == Some(3))
    })
    .await;
    assert_eq!(counted.spec.provider_ref.name, name);
    busy_controller.stop().await;
    busy_controller = serving(&busy, &home.ns);
    busy.message(
        "after-restart",
        note(&name, "x@example.org", "after restart"),
    )
    .await;
    // (Unless the clock hour turned meanwhile: then the quota starts anew.)
    if jiff::Timestamp::now().as_second() / 3600 == hour {
        busy.wait_reason("after-restart", "QuotaExceeded").await;
    }

    // The noisy namespace: two sent, both bounce; the next is held, the
    // staging namespace still sends.
    for i in 0..2 {
        noisy
            .message(
                &format!("n{i}"),
                note(&name, "x@example.org", &support::unique("noisy")),
            )
            .await;
        noisy.wait_phase(&format!("n{i}"), Phase::Sent).await;
        bounce(&noisy, &format!("n{i}")).await;
    }
    noisy
        .message(
            "held",
            note(&name, "x@example.org", &support::unique("held")),
        )
        .await;
    let held = noisy.wait_reason("held", "ReputationHold").await;
    assert!(
        sent_text(&held).contains("2 of 2 messages"),
        "{}",
        sent_text(&held)
    );
    let events = fixtures::events_for(&noisy.client, &noisy.ns, "held").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "ReputationHold"),
        "{events:?}"
    );
    staging
        .message(
            "still-sends",
            note(&name, "dev@mailroom.dev", &support::unique("still")),
        )
        .await;
    staging.wait_phase("still-sends", Phase::Sent).await;
    let on_hold = usage(&noisy, &name, "the hold written", |u| {
        u.status.as_ref().is_some_and(|s| s.hold.is_some())
    })
    .await;
    assert_eq!(on_hold.status.expect("status").totals.bounced, 2);

    // A person releases it: the held message goes.
    let api: Api<EmailUsage> = Api::namespaced(noisy.client.clone(), &noisy.ns);
    let release = json!({"metadata": {"annotations": {"mailroom.dev/release-hold": "true"}}});
    api.patch(
        &format!("clusteremailprovider.{name}"),
        &PatchParams::default(),
        &Patch::Merge(&release),
    )
    .await
    .expect("releasing the hold");
    noisy.wait_phase("held", Phase::Sent).await;

    busy_controller.stop().await;
    for controller in controllers {
        controller.stop().await;
    }
    providers
        .delete(&name, &Default::default())
        .await
        .expect("deleting the cluster provider");
}

#[tokio::test]
async fn a_sender_the_provider_does_not_allow_is_refused_at_apply() {
    let scene = Scene::new("tenants-sender-apply").await;
    let _: mailroom::api::EmailProvider = fixtures::create(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "shared"},
               "spec": {"defaultFrom": "Team <team@mailroom.dev>",
                        "smtp": {"host": "smtp.example.org", "port": 587},
                        "tenants": [{"senders": ["*@mailroom.dev", "ceo@company.example"]}]}}),
    )
    .await;
    let from = |from: Option<&str>| {
        let mut spec = json!({"providerRef": {"name": "shared"}, "to": ["a@example.org"],
                              "subject": "s", "text": "t"});
        if let Some(from) = from {
            spec["from"] = json!(from);
        }
        spec
    };
    // The apiserver learns of the provider through a watch.
    let refused = support::eventually("the refusal", Duration::from_secs(30), || async {
        crate::deliverability::dry_run_refusal(
            &scene,
            &from(Some("Payroll <payroll@company.example>")),
        )
        .await
    })
    .await;
    assert!(
        refused.starts_with("403 ") || refused.starts_with("422 "),
        "{refused}"
    );
    assert!(
        refused.contains("spec.from: payroll@company.example is not among the senders EmailProvider shared allows"),
        "{refused}"
    );
    for allowed in [
        Some("Ops <OPS@MAILROOM.DEV>"),
        Some("ceo@company.example"),
        None,
    ] {
        assert_eq!(
            crate::deliverability::dry_run_refusal(&scene, &from(allowed)).await,
            None,
            "{allowed:?}"
        );
    }
}

#[tokio::test]
async fn bad_tenant_policies_are_refused_at_apply() {
    let scene = Scene::new("tenants-bad-input").await;
    let with = |tenants: Value| {
        json!({"defaultFrom": "a@example.org", "smtp": {"host": "smtp.example.org", "port": 587},
               "tenants": tenants})
    };
    scene
        .assert_refused(
            "EmailProvider",
            "negative",
            with(json!([{"messagesPerHour": -1}])),
            "should be greater than or equal to 1",
        )
        .await;
    scene
        .assert_refused(
            "EmailProvider",
            "pattern",
            with(json!([{"senders": ["not an address"]}])),
            "spec.tenants[0].senders[0]",
        )
        .await;
    scene
        .assert_refused(
            "EmailProvider",
            "share",
            with(json!([{"rateSharePercent": 50}])),
            "tenants[].rateSharePercent is a share of rateLimit",
        )
        .await;
    scene
        .assert_refused(
            "EmailProvider",
            "reputation",
            with(json!([{"reputation": {"minimumSent": 10}}])),
            "set maxBouncePercent, maxComplaintPerMille or both",
        )
        .await;
    scene
        .assert_refused(
            "EmailProvider",
            "redirect",
            with(json!([{"recipients": {"allow": ["*@example.org"], "redirectTo": "qa"}}])),
            "spec.tenants[0].recipients.redirectTo",
        )
        .await;
}
