//! The local environment itself: a real apiserver that stores and validates
//! the project's resources and enforces RBAC, and a real SMTP server.

use crate::support;

use std::time::Duration;

use crate::support::Mailpit;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailroom::api::EmailMessage;

#[tokio::test]
async fn custom_resource_is_stored_and_schema_violations_are_rejected() {
    let client = support::client().await;
    let ns = support::namespace(&client, "crd-roundtrip").await;
    let messages: Api<EmailMessage> = Api::namespaced(client, &ns);

    let good: EmailMessage = serde_json::from_value(serde_json::json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"name": "hello"},
        "spec": {"providerRef": {"name": "p"}, "to": ["Alice <alice@example.com>"],
                 "subject": "Hello", "text": "Hi Alice"}
    }))
    .expect("message object");
    messages
        .create(&PostParams::default(), &good)
        .await
        .expect("creating a valid message");
    let read = messages.get("hello").await.expect("reading it back");
    assert_eq!(read.spec.to, vec!["Alice <alice@example.com>".to_string()]);
    assert_eq!(read.spec.subject, "Hello");
    assert!(
        read.spec.cc.is_empty(),
        "the server applied the schema default for cc"
    );

    let mut bad = good.clone();
    bad.metadata.name = Some("bad-address".into());
    bad.spec.to = vec!["not-an-address".into()];
    let err = messages
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("bad address accepted");
    let kube::Error::Api(status) = err else {
        panic!("unexpected error: {err}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("spec.to[0]"), "{}", status.message);
    assert!(
        messages
            .get_opt("bad-address")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn mail_sent_over_smtp_is_received_by_mailpit() {
    let env = support::env();
    let (host, port) = env.smtp.rsplit_once(':').expect("host:port");
    let tls = TlsParameters::builder(host.to_string())
        .add_root_certificate(Certificate::from_pem(env.ca_pem.as_bytes()).expect("CA"))
        .build_rustls()
        .expect("TLS parameters");
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port.parse().expect("port"))
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(
            env.smtp_username.clone(),
            env.smtp_password.clone(),
        ))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let subject = format!("control-plane smtp check {}", std::process::id());
    let email = Message::builder()
        .from(
            "Sender <sender@example.com>"
                .parse::<Mailbox>()
                .expect("from"),
        )
        .to("Receiver <receiver@example.org>"
            .parse::<Mailbox>()
            .expect("to"))
        .subject(&subject)
        .body("hello through STARTTLS".to_string())
        .expect("email");
    let reply = transport
        .send(email)
        .await
        .expect("mailpit accepted the mail");
    assert!(reply.is_positive());

    let mailpit = Mailpit::shared();
    let found = mailpit
        .wait_for(
            &format!("subject:\"{subject}\""),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(found.len(), 1);
    let message = mailpit.message(&found[0].id).await;
    assert_eq!(message.to[0].address, "receiver@example.org");
    assert_eq!(message.from.expect("from").address, "sender@example.com");
    assert_eq!(message.text.trim_end(), "hello through STARTTLS");
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let admin = support::client().await;
    let ns = support::namespace(&admin, "rbac").await;
    let user = format!("system:serviceaccount:{ns}:app");
    let groups = ["system:serviceaccounts", "system:authenticated"];
    let as_app: Api<ConfigMap> =
        Api::namespaced(support::impersonating_client(&user, &groups).await, &ns);

    let err = as_app
        .list(&Default::default())
        .await
        .expect_err("listed without a Role");
    let kube::Error::Api(status) = err else {
        panic!("unexpected error: {err}")
    };
    assert_eq!(status.code, 403, "{status:?}");

    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]
    }))
    .expect("binding");
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    support::eventually(
        "the Role to take effect",
        Duration::from_secs(10),
        || async { as_app.list(&Default::default()).await.ok() },
    )
    .await;
    let err = as_app
        .create(&PostParams::default(), &ConfigMap::default())
        .await
        .expect_err("created without the verb");
    let kube::Error::Api(status) = err else {
        panic!("unexpected error: {err}")
    };
    assert_eq!(status.code, 403, "the Role grants list only: {status:?}");
}

/// `kubectl apply --dry-run=server` of one file into `ns`.
fn dry_run(ns: &str, file: &std::path::Path) -> std::process::Output {
    let file = file.to_str().expect("utf-8 path");
    support::kubectl(
        &support::env().kubeconfig,
        &["apply", "--dry-run=server", "-n", ns, "-f", file],
    )
}

#[tokio::test]
async fn examples_are_accepted_by_the_apiserver_and_the_bad_one_refused() {
    let client = support::client().await;
    let ns = support::namespace(&client, "examples").await;
    let examples = support::root().join("examples");
    // Every example folder but the demo's, whose rejected.yaml is meant to fail.
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .filter(|dir| dir.is_dir() && !dir.ends_with("demo"))
        .flat_map(|dir| std::fs::read_dir(dir).expect("examples dir"))
        .map(|e| e.expect("entry").path())
        .collect();
    files.push(examples.join("demo/messages.yaml"));
    files.push(examples.join("demo/after-bounce.yaml"));
    for file in &files {
        let out = dry_run(&ns, file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} was refused: {stderr}",
            file.display()
        );
    }
    let out = dry_run(&ns, &examples.join("demo/rejected.yaml"));
    assert!(!out.status.success(), "the invalid example was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.to[0]") && stderr.contains("CR or LF"),
        "{stderr}"
    );
}
