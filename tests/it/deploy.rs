//! The install paths, proven on the real apiserver: the kustomize base and
//! the Helm chart render the same objects and the apiserver accepts them
//! (server-side dry run), and the controller's ServiceAccount, with exactly
//! the RBAC they grant, can elect a leader, send, and record delivery
//! webhooks, and nothing more.

use crate::support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::fixtures::{RunningController, Scene};
use crate::support::webhooks::{Receiver, post, webhook_provider};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use mailroom::api::{EmailMessage, Phase};
use mailroom_fakes::Service;
use mailroom_fakes::webhook::{Event, Happened};
use serde_json::{Value, json};

const KEY: &str = support::fixtures::VALID_API_KEY;

const NS: &str = "mailroom-system";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:mailroom-system:mailroom";

fn run(program: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {stderr}",
        program.display()
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let kubeconfig = support::env()
        .kubeconfig
        .to_str()
        .expect("path")
        .to_string();
    let mut all = vec!["--kubeconfig", &kubeconfig];
    all.extend_from_slice(args);
    run(&support::tools_bin().join("kubectl"), &all, stdin)
}

fn kustomize_output() -> String {
    let deploy = support::root().join("deploy");
    kubectl(&["kustomize", deploy.to_str().expect("path")], None)
}

fn helm_output() -> String {
    let chart = support::root().join("charts/mailroom");
    let args = [
        "template",
        "mailroom",
        chart.to_str().expect("path"),
        "--namespace",
        NS,
        "--include-crds",
        "--set",
        "namespace.create=true",
    ];
    run(&support::tools_bin().join("helm"), &args, None)
}

/// The objects of a multi-document YAML stream, by kind/namespace/name.
/// CRDs are compared by spec: kustomize labels them, Helm installs its crds/
/// directory as is.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc).expect("YAML document");
        if value.is_null() {
            continue;
        }
        // kustomize does not know these kinds are cluster-scoped and gives
        // them the namespace; kubectl and the apiserver drop it.
        let mut value = value;
        let kind = value["kind"].as_str().unwrap_or_default();
        if kind.starts_with("ValidatingAdmissionPolicy")
            && let Some(meta) = value["metadata"].as_object_mut()
        {
            meta.remove("namespace");
        }
        let key = format!(
            "{}/{}/{}",
            value["kind"].as_str().unwrap_or_default(),
            value["metadata"]["namespace"].as_str().unwrap_or_default(),
            value["metadata"]["name"].as_str().unwrap_or_default()
        );
        let value = if value["kind"] == "CustomResourceDefinition" {
            value["spec"].clone()
        } else {
            value
        };
        out.insert(key, value);
    }
    out
}

#[tokio::test]
async fn kustomize_and_helm_install_the_same_objects_and_the_apiserver_accepts_them() {
    let kustomized = kustomize_output();
    let charted = helm_output();
    let (k, h) = (objects(&kustomized), objects(&charted));
    assert_eq!(
        k.keys().collect::<Vec<_>>(),
        h.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (key, value) in &k {
        assert_eq!(
            value, &h[key],
            "{key} differs between deploy/ and the chart"
        );
    }
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(
            k.keys().any(|key| key.starts_with(&format!("{kind}/"))),
            "deploy/ installs a {kind}"
        );
    }
    let deployment = &k["Deployment/mailroom-system/mailroom"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The dry run the README documents: the namespace first (a dry run
    // checks each object against the cluster as it is, and a namespaced
    // object needs its namespace), then the whole of deploy/.
    let deploy = support::root().join("deploy");
    let namespace = deploy.join("base/namespace.yaml");
    let namespace = namespace.to_str().expect("path");
    kubectl(&["apply", "--server-side", "-f", namespace], None);
    let dry_run = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
    ];
    let kustomized_run = kubectl(
        &[&dry_run[..], &["-k", deploy.to_str().expect("path")]].concat(),
        None,
    );
    let charted_run = kubectl(&[&dry_run[..], &["-f", "-"]].concat(), Some(&charted));
    for (what, out) in [("deploy/", &kustomized_run), ("the chart", &charted_run)] {
        for applied in [
            "deployment.apps/mailroom serverside-applied (server dry run)",
            "validatingadmissionpolicy.admissionregistration.k8s.io/mailroom-message-tracking serverside-applied (server dry run)",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/mailroom-message-tracking-cluster serverside-applied (server dry run)",
        ] {
            assert!(out.contains(applied), "{what}: {out}");
        }
    }
}

async fn install_rbac() {
    let yaml = kustomize_output();
    let rbac: Vec<String> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).ok()?;
            let kind = value["kind"].as_str()?.to_string();
            let own_secrets = value["metadata"]["name"] == "mailroom-own-secrets";
            ([
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
            ]
            .contains(&kind.as_str())
                || own_secrets)
                .then(|| serde_yaml_ng::to_string(&value).expect("yaml"))
        })
        .collect();
    kubectl(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&rbac.join("---\n")),
    );
}

#[tokio::test]
async fn the_service_account_can_lead_and_send_and_nothing_more() {
    install_rbac().await;
    let groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:mailroom-system",
        "system:authenticated",
    ];
    let sa = support::impersonating_client(SERVICE_ACCOUNT, &groups).await;

    // Leader election with exactly the Role's permissions.
    let elected = mailroom::controller::leader::lead(
        sa.clone(),
        "mailroom-rbac-test",
        NS,
        "rbac-test",
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("leader election with the ServiceAccount's RBAC");
    let mailroom::controller::leader::Leading::Elected(lease) = elected else {
        panic!("not elected")
    };

    // A whole send, as the ServiceAccount.
    let scene = Scene::new("rbac-send").await;
    scene.mailpit_provider().await;
    let with_events = mailroom::controller::Settings {
        sent_events: true,
        ..support::fixtures::settings(&scene.ns)
    };
    let controller = RunningController::start_with_settings(sa.clone(), with_events);
    let subject = support::unique("sent with the ServiceAccount's RBAC");
    scene.note("rbac", "mailpit", &subject).await;
    let sent = scene.wait_phase("rbac", Phase::Sent).await;
    assert_eq!(sent.status.expect("status").attempts, 1);
    support::received(&subject).await;
    // It could record the Event (published after the status write).
    support::eventually(
        "the Sent Event of rbac",
        std::time::Duration::from_secs(30),
        || async {
            let events = support::fixtures::events_for(&scene.client, &scene.ns, "rbac").await;
            events.iter().any(|(_, r, _)| r == "Sent").then_some(())
        },
    )
    .await;
    controller.stop().await;
    drop(lease);
    // It recorded the send in the namespace's ledger.
    let pages: Api<mailroom::api::EmailLedger> = Api::namespaced(scene.client.clone(), &scene.ns);
    let page = support::eventually(
        "the ledger page",
        std::time::Duration::from_secs(30),
        || async { pages.get_opt("sent-000001").await.ok().flatten() },
    )
    .await;
    assert_eq!(page.spec.entries[0].name, "rbac");
    // It claimed the send in the namespace's claim journal first.
    let journals: Api<mailroom::api::EmailJournal> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    let journal = journals
        .get_opt(mailroom::api::journal::JOURNAL_NAME)
        .await
        .expect("reading the journal");
    assert!(
        journal.is_some(),
        "the journal was written as the ServiceAccount"
    );

    // Hosted unsubscribe as the ServiceAccount: the key Secret made in its
    // own namespace, the link in the mail POSTed to a receiver running as
    // it, the unsubscribe recorded.
    let key_secret = format!("mailroom-unsubscribe-{}", support::namespace_suffix());
    let hosting = mailroom::controller::Settings {
        unsubscribe_key_secret: Some(format!("{NS}/{key_secret}")),
        ..support::fixtures::settings(&scene.ns)
    };
    let controller = RunningController::start_with_settings(sa.clone(), hosting);
    let subject = support::unique("hosted unsubscribe with the ServiceAccount's RBAC");
    scene
        .message(
            "rbac-list",
            json!({"providerRef": {"name": "mailpit"}, "to": ["ann@example.org"], "list": "news",
                   "subject": subject, "text": "t",
                   "unsubscribe": {"hosted": {"baseURL": "https://mail.example.test"}}}),
        )
        .await;
    scene.wait_phase("rbac-list", Phase::Sent).await;
    controller.stop().await;
    let own: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(scene.client.clone(), NS);
    assert!(
        own.get_opt(&key_secret).await.expect("reading").is_some(),
        "the key Secret was made in {NS}"
    );
    let receiver = Receiver::start_with_settings(
        &scene,
        sa.clone(),
        mailroom::webhook::Settings {
            namespace: Some(scene.ns.clone()),
            unsubscribe_key_secret: Some(format!("{NS}/{key_secret}")),
            ..Default::default()
        },
    )
    .await;
    let received = support::received(&subject).await;
    let headers = support::mailpit::Mailpit::shared()
        .headers(&received[0].id)
        .await;
    let link = headers["List-Unsubscribe"][0].clone();
    let path = link
        .trim_matches(|c| c == '<' || c == '>')
        .strip_prefix("https://mail.example.test")
        .expect("the hosted link")
        .to_string();
    let answer = reqwest::Client::new()
        .post(format!("http://{}{path}", receiver.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status().as_u16(), 200);
    let suppression = mailroom::api::suppression::name_for_list("news", "ann@example.org");
    let suppressions: Api<mailroom::api::EmailSuppression> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    assert!(
        suppressions
            .get_opt(&suppression)
            .await
            .expect("reading")
            .is_some()
    );
    own.delete(&key_secret, &DeleteParams::default())
        .await
        .expect("cleaning up");

    // Delivery webhooks as the ServiceAccount: the provider and its webhook
    // Secret read, the message read, the event written into status.
    let hooks = Scene::new("rbac-hooks").await;
    let fake = mailroom_fakes::Fake::start(mailroom_fakes::Config::with_key(KEY))
        .await
        .expect("fake");
    hooks.api_provider(Service::Resend, &fake.url, KEY).await;
    let signer = webhook_provider(&hooks, Service::Resend, "api").await;
    let controller = RunningController::start_with(sa.clone(), &hooks.ns);
    hooks.note("hooked", "api", "hooked").await;
    let sent = hooks.wait_phase("hooked", Phase::Sent).await;
    let id = sent.status.and_then(|s| s.provider_message_id).expect("id");
    let receiver = Receiver::start(&hooks, sa.clone()).await;
    let now = jiff::Timestamp::now().as_second();
    let delivered =
        Event::new(Happened::Delivered, &id, "x@example.org", now).echoing(fake.echo(&id));
    let request = &signer.requests(&[delivered], now)[0];
    let url = format!("{}/api", receiver.base);
    assert_eq!(post(&reqwest::Client::new(), &url, request).await, 200);
    hooks.wait_phase("hooked", Phase::Delivered).await;
    controller.stop().await;

    // What ClusterEmailProviders need: list them, read one Namespace's labels.
    let cluster_providers: Api<mailroom::api::ClusterEmailProvider> = Api::all(sa.clone());
    cluster_providers
        .list(&ListParams::default())
        .await
        .expect("listing ClusterEmailProviders");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sa.clone());
    namespaces
        .get(&scene.ns)
        .await
        .expect("reading a Namespace's labels");

    // And nothing more.
    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} should be forbidden, got {other:?}"),
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(sa.clone(), &scene.ns);
    // A Secret not labelled as mailroom's: the ClusterRole lets the
    // controller create Secrets (webhook.register), the admission policy
    // mailroom-own-secrets refuses any but its own (once it is in force).
    let admin_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    let mut attempt = 0;
    let refused = support::eventually(
        "the controller refused a Secret that is not its own",
        std::time::Duration::from_secs(30),
        || {
            attempt += 1;
            let name = format!("keys-{attempt}");
            let (secrets, admin_secrets) = (secrets.clone(), admin_secrets.clone());
            async move {
                let object =
                    serde_json::from_value(json!({"metadata": {"name": name}})).expect("secret");
                match secrets.create(&PostParams::default(), &object).await {
                    Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Some(s.message),
                    Ok(_) => {
                        let _ = admin_secrets.delete(&name, &DeleteParams::default()).await;
                        None
                    }
                    Err(e) => panic!("creating a Secret: {e}"),
                }
            }
        },
    )
    .await;
    assert!(refused.contains("only Secrets labelled"), "{refused}");
    let labelled = serde_json::from_value(json!({"metadata": {"name": "own-keys",
        "labels": {"app.kubernetes.io/managed-by": "mailroom"}}}))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &labelled)
        .await
        .expect("its own Secret");
    let relabel = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    let merge = |patch| kube::api::Patch::Merge(patch);
    let params = kube::api::PatchParams::default();
    forbidden(
        secrets
            .patch("own-keys", &params, &merge(&relabel))
            .await
            .map(|_| ()),
        "taking the label off its own Secret",
    );
    let tenants = json!({"data": {"password": "c3RvbGVu"}});
    forbidden(
        secrets
            .patch("smtp-credentials", &params, &merge(&tenants))
            .await
            .map(|_| ()),
        "changing a tenant's Secret",
    );
    forbidden(
        secrets
            .delete("smtp-credentials", &DeleteParams::default())
            .await
            .map(|_| ()),
        "deleting a Secret",
    );
    let secret = serde_json::from_value(json!({"metadata": {"name": "new"}})).expect("secret");
    forbidden(
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .map(|_| ()),
        "creating a Secret",
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(sa.clone(), &scene.ns);
    forbidden(
        pods.list(&ListParams::default()).await.map(|_| ()),
        "listing Pods",
    );
    let messages: Api<EmailMessage> = Api::namespaced(sa.clone(), &scene.ns);
    let providers: Api<mailroom::api::EmailProvider> = Api::namespaced(sa.clone(), &scene.ns);
    let deleted = providers
        .delete("mailpit", &DeleteParams::default())
        .await
        .map(|_| ());
    forbidden(deleted, "deleting a provider");
    let new_message = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage", "metadata": {"name": "forged"},
        "spec": {"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": "s", "text": "t"}
    }))
    .expect("message");
    forbidden(
        messages
            .create(&PostParams::default(), &new_message)
            .await
            .map(|_| ()),
        "creating a message",
    );
    forbidden(
        namespaces.list(&ListParams::default()).await.map(|_| ()),
        "listing Namespaces",
    );
    let forged_provider = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "ClusterEmailProvider", "metadata": {"name": "forged"},
        "spec": {"smtp": {"host": "smtp.example.org"}}
    }))
    .expect("cluster provider");
    forbidden(
        cluster_providers
            .create(&PostParams::default(), &forged_provider)
            .await
            .map(|_| ()),
        "creating a ClusterEmailProvider",
    );
    let own_pages: Api<mailroom::api::EmailLedger> = Api::namespaced(sa.clone(), &scene.ns);
    forbidden(
        own_pages
            .replace("sent-000001", &PostParams::default(), &page)
            .await
            .map(|_| ()),
        "replacing a ledger page whole",
    );
    let own_journal: Api<mailroom::api::EmailJournal> = Api::namespaced(sa.clone(), &scene.ns);
    forbidden(
        own_journal
            .delete(
                mailroom::api::journal::JOURNAL_NAME,
                &DeleteParams::default(),
            )
            .await
            .map(|_| ()),
        "deleting the claim journal",
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(sa.clone(), &scene.ns);
    let lease_object =
        serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).expect("lease");
    forbidden(
        leases
            .create(&PostParams::default(), &lease_object)
            .await
            .map(|_| ()),
        "a Lease outside its namespace",
    );
}
