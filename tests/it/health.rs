//! Health as GitOps tools compute it: kstatus (Flux; the real library,
//! built into `.cache/tools/bin/kstatus` from sigs.k8s.io/cli-utils) and the
//! Argo CD health checks in deploy/argocd (run by Lua 5.1, the dialect of
//! Argo CD's interpreter), over messages and providers in every phase, read
//! back from the apiserver.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use mailroom::api::condition::{self, DELIVERED, Reason, SENT};
use mailroom::api::{EmailMessage, EmailMessageStatus, EmailProvider, Phase};
use mlua::LuaSerdeExt;
use serde_json::{Value, json};

use crate::support;
use crate::support::fixtures::{self, RunningController, Scene, settings};

/// Each object's verdict from the kstatus library: `Kind/name` → status.
fn kstatus(objects: &[Value]) -> BTreeMap<String, String> {
    let mut child = Command::new(support::tools_bin().join("kstatus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kstatus (make tools builds it)");
    let mut stdin = child.stdin.take().expect("stdin");
    for object in objects {
        serde_json::to_writer(&mut stdin, object).expect("write");
    }
    stdin.flush().expect("flush");
    drop(stdin);
    let out = child.wait_with_output().expect("kstatus ran");
    assert!(out.status.success(), "kstatus failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// What the Argo CD check in `script` says of `object`: status and message.
fn argo_cd(script: &str, object: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let obj = lua.to_value_with(object, options).expect("obj");
    lua.globals().set("obj", obj).expect("set obj");
    let hs: mlua::Table = lua.load(script).eval().expect("the check runs");
    (
        hs.get("status").expect("status"),
        hs.get("message").expect("message"),
    )
}

fn script(kind: &str) -> String {
    let path = support::root().join(format!("deploy/argocd/{kind}.lua"));
    std::fs::read_to_string(&path).expect("the Argo CD health check")
}

/// Every object of `K` in `namespace`, as the apiserver serves it.
async fn raw<K>(client: &Client, namespace: &str) -> Vec<Value>
where
    K: kube::Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("json"))
        .collect()
}

/// A status in `phase` with the conditions the controller writes for it.
fn status_in(phase: Phase, sent: Reason, delivered: Option<(bool, Reason)>) -> EmailMessageStatus {
    let mut status = EmailMessageStatus {
        phase: Some(phase),
        observed_generation: Some(1),
        ..Default::default()
    };
    let accepted = matches!(
        phase,
        Phase::Sent | Phase::Delivered | Phase::Bounced | Phase::Complained
    );
    condition::set(
        &mut status.conditions,
        SENT,
        accepted,
        sent,
        "as the controller says",
        Some(1),
    );
    if let Some((value, reason)) = delivered {
        condition::set(
            &mut status.conditions,
            DELIVERED,
            value,
            reason,
            "the service said so",
            Some(1),
        );
    }
    mailroom::api::health::message(&mut status, Some(1));
    status
}

/// Phases only a crash or a service's events bring, written as the
/// controller and the webhook receiver write them, and a message no
/// controller has seen.
async fn write_phases(client: &Client, namespace: &str) {
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), namespace);
    let phases = [
        ("sending", status_in(Phase::Sending, Reason::Sending, None)),
        (
            "unknown",
            status_in(Phase::Unknown, Reason::OutcomeUnknown, None),
        ),
        (
            "delivered",
            status_in(
                Phase::Delivered,
                Reason::Accepted,
                Some((true, Reason::Delivered)),
            ),
        ),
        (
            "bounced",
            status_in(
                Phase::Bounced,
                Reason::Accepted,
                Some((false, Reason::Bounced)),
            ),
        ),
        (
            "complained",
            status_in(
                Phase::Complained,
                Reason::Accepted,
                Some((true, Reason::Complained)),
            ),
        ),
    ];
    for (name, status) in phases {
        let spec = json!({"providerRef": {"name": "elsewhere"}, "to": ["x@example.org"], "subject": name, "text": "t"});
        let mut message = fixtures::message(client, namespace, name, spec).await;
        message.status = Some(status);
        api.replace_status(name, &PostParams::default(), &message)
            .await
            .expect("status written");
    }
    // And one no controller has seen yet: created, with no status written.
    let spec = json!({"providerRef": {"name": "elsewhere"}, "to": ["x@example.org"], "subject": "unseen", "text": "t"});
    fixtures::message(client, namespace, "unseen", spec).await;
}

#[tokio::test]
async fn kstatus_and_the_argo_cd_checks_read_every_phase() {
    let scene = Scene::new("health").await;
    scene.mailpit_provider().await;
    let controller = RunningController::start_with_settings(
        scene.client.clone(),
        mailroom::controller::Settings {
            allowed_endpoint_hosts: Vec::new(),
            ..settings(&scene.ns)
        },
    );
    // Providers: Ready, refused for good, waiting for a Secret, suspended.
    scene
        .api_provider(
            mailroom_fakes::Service::Resend,
            "https://127.0.0.1:9",
            "re_key",
        )
        .await;
    let missing = fixtures::mailpit_smtp("no-such-secret");
    fixtures::provider(&scene.client, &scene.ns, "no-secret", missing).await;
    let paused = fixtures::mailpit_smtp("smtp-credentials");
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider", "metadata": {"name": "paused"},
               "spec": {"defaultFrom": "t@mailroom.dev", "suspend": true, "smtp": paused}}),
    )
    .await;
    scene.wait_provider("mailpit", "Verified").await;
    scene.wait_provider("api", "InvalidSpec").await;
    scene.wait_provider("no-secret", "SecretNotFound").await;

    // Messages the controller takes to each phase it decides.
    let subject = support::unique("health");
    let keyed = |key: &str| json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject, "text": "t", "idempotencyKey": key});
    scene.message("sent", keyed("health-1")).await;
    scene.wait_reason("sent", "Accepted").await;
    scene.message("again", keyed("health-1")).await;
    scene
        .note("waiting", "absent", "waits for its provider")
        .await;
    let mut scheduled = keyed("health-2");
    scheduled["sendAt"] = json!("2099-01-01T00:00:00Z");
    scene.message("scheduled", scheduled).await;
    let mut failed = keyed("health-3");
    failed["providerTemplate"] = json!({"id": "welcome"});
    failed.as_object_mut().expect("spec").remove("text");
    scene.message("failed", failed).await;
    // Sent, with a Warning: a bulk message without one-click unsubscribe.
    scene
        .message(
            "warned",
            json!({"providerRef": {"name": "mailpit"}, "subject": subject, "text": "t",
                   "recipients": [{"to": "a@example.org"}, {"to": "b@example.org"}]}),
        )
        .await;
    scene.wait_reason("warned", "Accepted").await;
    scene.wait_reason("again", "AlreadySent").await;
    scene.wait_reason("waiting", "ProviderNotFound").await;
    scene.wait_reason("scheduled", "Scheduled").await;
    scene.wait_reason("failed", "InvalidRequest").await;
    controller.stop().await;

    // And those only a crash or a service's events bring.
    let written = support::namespace(&scene.client, "health-written").await;
    write_phases(&scene.client, &written).await;

    let mut messages = raw::<EmailMessage>(&scene.client, &scene.ns).await;
    messages.extend(raw::<EmailMessage>(&scene.client, &written).await);
    let providers = raw::<EmailProvider>(&scene.client, &scene.ns).await;
    let expected = [
        ("EmailMessage/sent", "Current", "Healthy"),
        ("EmailMessage/warned", "Current", "Healthy"),
        ("EmailMessage/again", "Current", "Healthy"),
        ("EmailMessage/waiting", "InProgress", "Progressing"),
        ("EmailMessage/scheduled", "InProgress", "Progressing"),
        ("EmailMessage/failed", "Failed", "Degraded"),
        ("EmailMessage/sending", "InProgress", "Progressing"),
        ("EmailMessage/unseen", "InProgress", "Progressing"),
        ("EmailMessage/unknown", "Failed", "Degraded"),
        ("EmailMessage/delivered", "Current", "Healthy"),
        ("EmailMessage/bounced", "Failed", "Degraded"),
        ("EmailMessage/complained", "Current", "Healthy"),
        ("EmailProvider/mailpit", "Current", "Healthy"),
        ("EmailProvider/api", "Failed", "Degraded"),
        ("EmailProvider/no-secret", "InProgress", "Progressing"),
        ("EmailProvider/paused", "Current", "Suspended"),
    ];
    let flux = kstatus(&[messages.clone(), providers.clone()].concat());
    let mut argo = BTreeMap::new();
    let mut said = BTreeMap::new();
    for (kind, objects) in [("EmailMessage", &messages), ("EmailProvider", &providers)] {
        let check = script(kind);
        for object in objects {
            let name = object["metadata"]["name"].as_str().expect("name");
            let (status, message) = argo_cd(&check, object);
            assert!(!message.is_empty(), "{kind}/{name}: a message");
            argo.insert(format!("{kind}/{name}"), status);
            said.insert(format!("{kind}/{name}"), message);
        }
    }
    for (object, kstatus_says, argo_says) in expected {
        assert_eq!(
            flux.get(object).map(String::as_str),
            Some(kstatus_says),
            "kstatus: {object}: {flux:?}"
        );
        assert_eq!(
            argo.get(object).map(String::as_str),
            Some(argo_says),
            "Argo CD: {object}: {argo:?}"
        );
    }
    assert_eq!(flux.len(), expected.len(), "{flux:?}");
    let warned = &said["EmailMessage/warned"];
    assert!(
        warned.starts_with("Accepted: ") && warned.contains("(warning: UnsubscribeMissing: "),
        "{warned}"
    );
    assert!(!said["EmailMessage/sent"].contains("warning"));
}
