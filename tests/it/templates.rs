//! EmailTemplate: Handlebars subject and bodies rendered strictly with each
//! message's data; a missing variable or a syntax error fails the message
//! before anything is sent.

use crate::support;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use mailroom::api::{EmailTemplate, Phase};
use serde_json::{Value, json};

async fn template(scene: &Scene, name: &str, spec: Value) -> EmailTemplate {
    let object = json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailTemplate",
                        "metadata": {"name": name}, "spec": spec});
    fixtures::create(&scene.client, &scene.ns, object).await
}

fn welcome() -> Value {
    json!({"subject": "Welcome {{name}}", "text": "Hi {{name}}, your plan is {{plan}}.",
           "html": "<p>Hi {{name}}</p><ul>{{#each items}}<li>{{this}}</li>{{/each}}</ul>"})
}

async fn template_reason(scene: &Scene, name: &str, reason: &str) -> EmailTemplate {
    let api: kube::Api<EmailTemplate> = kube::Api::namespaced(scene.client.clone(), &scene.ns);
    support::eventually(
        &format!("template {name} {reason}"),
        std::time::Duration::from_secs(30),
        || async {
            api.get(name).await.ok().filter(|t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| fixtures::reason_of(&s.conditions, "Ready") == reason)
            })
        },
    )
    .await
}

#[tokio::test]
async fn a_templated_message_is_rendered_with_its_data_and_html_escaped() {
    let scene = Scene::new("template-render").await;
    scene.mailpit_provider().await;
    template(&scene, "welcome", welcome()).await;
    let controller = scene.controller().await;
    template_reason(&scene, "welcome", "Parsed").await;
    let name = support::unique("<Ann & Co>");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["ann@example.org"], "templateRef": {"name": "welcome"},
                      "data": {"name": name, "plan": "pro", "items": ["one", "two"]}});
    scene.message("templated", spec).await;
    scene.wait_phase("templated", Phase::Sent).await;

    let found = support::received(&format!("Welcome {name}")).await;
    let mail = Mailpit::shared().message(&found[0].id).await;
    assert_eq!(
        mail.subject,
        format!("Welcome {name}"),
        "the subject is not escaped"
    );
    assert_eq!(
        mail.text.trim_end(),
        format!("Hi {name}, your plan is pro.")
    );
    let escaped = name
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        mail.html.contains(&format!("<p>Hi {escaped}</p>")),
        "{}",
        mail.html
    );
    assert!(
        mail.html.contains("<li>one</li><li>two</li>"),
        "{}",
        mail.html
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_missing_variable_fails_the_message_before_any_send() {
    let scene = Scene::new("template-missing").await;
    scene.mailpit_provider().await;
    template(&scene, "welcome", welcome()).await;
    let controller = scene.controller().await;
    let to = format!("missing-{}@example.org", support::namespace_suffix());
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": [to], "templateRef": {"name": "welcome"},
                      "data": {"name": "Ann", "items": []}});
    scene.message("incomplete", spec).await;
    let failed = scene.wait_phase("incomplete", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("error");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error.message.contains("\"plan\""),
        "names the variable: {}",
        error.message
    );
    assert_eq!(status.attempts, 0, "nothing was attempted");
    assert!(
        Mailpit::shared()
            .search(&format!("to:{to}"))
            .await
            .is_empty()
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_template_that_does_not_parse_is_not_ready_and_fails_its_messages() {
    let scene = Scene::new("template-syntax").await;
    scene.mailpit_provider().await;
    template(
        &scene,
        "broken",
        json!({"subject": "Hi", "html": "<p>{{#if name}}never closed</p>"}),
    )
    .await;
    let controller = scene.controller().await;
    let broken = template_reason(&scene, "broken", "InvalidTemplate").await;
    let ready = &broken.status.expect("status").conditions[0];
    assert!(ready.message.starts_with("spec.html"), "{}", ready.message);
    scene.message("doomed", json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "templateRef": {"name": "broken"}, "data": {"name": "x"}})).await;
    let failed = scene.wait_phase("doomed", Phase::Failed).await;
    assert_eq!(fixtures::sent_reason(&failed), "InvalidRequest");
    controller.stop().await;
}

#[tokio::test]
async fn a_message_waits_for_its_template_and_templates_are_checked_at_apply_time() {
    let scene = Scene::new("template-later").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let plan = support::unique("later");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "templateRef": {"name": "welcome"},
                      "data": {"name": "Bo", "plan": plan, "items": []}});
    scene.message("early", spec).await;
    scene.wait_reason("early", "TemplateNotFound").await;
    template(&scene, "welcome", welcome()).await;
    scene.wait_phase("early", Phase::Sent).await;
    controller.stop().await;

    let with_subject = json!({"providerRef": {"name": "p"}, "to": ["x@example.org"], "subject": "s", "templateRef": {"name": "t"}});
    scene
        .assert_refused(
            "EmailMessage",
            "both",
            with_subject,
            "templateRef supplies the subject and body",
        )
        .await;
    let data_alone = json!({"providerRef": {"name": "p"}, "to": ["x@example.org"], "subject": "s", "text": "t", "data": {"a": 1}});
    scene
        .assert_refused(
            "EmailMessage",
            "data",
            data_alone,
            "data is only used with a templateRef",
        )
        .await;
}

#[tokio::test]
async fn a_template_that_its_example_data_cannot_satisfy_is_not_valid() {
    let scene = Scene::new("template-example").await;
    template(
        &scene,
        "receipt",
        json!({"subject": "Receipt {{order}}", "text": "Hi {{name}}, total {{total}}",
               "exampleData": {"order": "A-17", "name": "Ann"}}),
    )
    .await;
    let controller = scene.controller().await;
    let invalid = template_reason(&scene, "receipt", "InvalidTemplate").await;
    let conditions = invalid.status.expect("status").conditions;
    let valid = conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .expect("Valid");
    assert_eq!(valid.status, "False");
    assert!(
        valid
            .message
            .contains("text uses \"total\", which spec.exampleData does not set"),
        "{}",
        valid.message
    );
    let api: kube::Api<EmailTemplate> = kube::Api::namespaced(scene.client.clone(), &scene.ns);
    let fixed =
        json!({"spec": {"exampleData": {"order": "A-17", "name": "Ann", "total": "12 EUR"}}});
    api.patch(
        "receipt",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&fixed),
    )
    .await
    .expect("fixing the example");
    let parsed = template_reason(&scene, "receipt", "Parsed").await;
    let conditions = parsed.status.expect("status").conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Valid" && c.status == "True")
    );
    controller.stop().await;
}

/// `mailroom render --from-cluster`, as a person runs it: a manifest whose
/// message names a template and a provider the file does not hold renders
/// with the ones in the cluster; without the flag it says what is missing.
#[tokio::test]
async fn render_from_the_cluster_takes_the_template_and_provider_the_message_names() {
    let scene = Scene::new("render-from-cluster").await;
    template(&scene, "welcome", welcome()).await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "relay",
        fixtures::mailpit_smtp("unused"),
    )
    .await;
    let manifest = support::env().dir.join(format!("{}-render.yaml", scene.ns));
    std::fs::write(
        &manifest,
        "apiVersion: mailroom.dev/v1alpha1\nkind: EmailMessage\nmetadata: {name: hello}\n\
         spec:\n  providerRef: {name: relay}\n  templateRef: {name: welcome}\n  \
         to: [ann@example.org]\n  data: {name: Ann, plan: gold, items: [tea]}\n",
    )
    .expect("writing the manifest");
    let render = |from_cluster: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"));
        command.arg("render").arg("-f").arg(&manifest);
        if from_cluster {
            command.args(["--from-cluster", "-n", &scene.ns]);
        }
        command
            .args(["-o", "eml"])
            .env("KUBECONFIG", &support::env().kubeconfig)
            .output()
            .expect("running mailroom render")
    };

    let out = render(true);
    let eml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eml.contains("Subject: Welcome Ann"), "{eml}");
    assert!(eml.contains("Hi Ann, your plan is gold."), "{eml}");
    assert!(
        eml.contains("tests@mailroom.dev"),
        "the provider's defaultFrom: {eml}"
    );

    let out = render(false);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "without the cluster's template: {eml}"
    );
    assert!(error.contains("welcome"), "names the template: {error}");
}
