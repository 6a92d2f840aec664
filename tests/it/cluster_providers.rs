//! ClusterEmailProvider: one provider for many namespaces, its credentials in
//! the controller's namespace, and an allow-list of namespace names and
//! labels. A message from a namespace it does not allow ends Denied and
//! nothing is sent.
//!
//! Cluster-scoped objects are seen by every controller that serves them, so
//! this file holds one test with its own controllers.

use crate::support;

use crate::support::fixtures::{self, RunningController, Scene};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use mailroom::api::{ClusterEmailProvider, Phase};
use serde_json::json;

/// A controller for `namespace` that serves ClusterEmailProviders with
/// Secrets in `secrets`.
fn serving(scene: &Scene, secrets: &str) -> RunningController {
    fixtures::serving_cluster_providers(scene, secrets)
}

fn note(provider: &str, subject: &str) -> serde_json::Value {
    json!({"providerRef": {"kind": "ClusterEmailProvider", "name": provider},
           "to": ["x@example.org"], "subject": subject, "text": "hi"})
}

#[tokio::test]
async fn a_cluster_provider_sends_for_the_namespaces_it_allows_and_denies_the_rest() {
    // The controller's namespace holds the credentials; no other does.
    let home = fixtures::cluster_home("cluster-home").await;

    let by_name = Scene::new("cluster-by-name").await;
    let by_label = Scene::new("cluster-by-label").await;
    let other = Scene::new("cluster-other").await;
    let team = support::namespace_suffix();
    let namespaces: Api<Namespace> = Api::all(home.client.clone());
    namespaces
        .patch(
            &by_label.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mailroom.dev/team": team}}})),
        )
        .await
        .expect("labelling the namespace");

    let name = format!("shared-{team}");
    let provider: ClusterEmailProvider = serde_json::from_value(json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "ClusterEmailProvider",
               "metadata": {"name": name},
               "spec": {"defaultFrom": "platform <platform@mailroom.dev>",
                        "smtp": fixtures::mailpit_smtp("smtp-credentials"),
                        "allowedNamespaces": {"names": [by_name.ns],
                                              "selector": {"matchLabels": {"mailroom.dev/team": team}}}}}),
    )
    .expect("provider JSON");
    let providers: Api<ClusterEmailProvider> = Api::all(home.client.clone());
    providers
        .create(&Default::default(), &provider)
        .await
        .expect("creating the cluster provider");

    let controllers = [
        serving(&by_name, &home.ns),
        serving(&by_label, &home.ns),
        serving(&other, &home.ns),
    ];
    let ready = support::eventually(
        "the cluster provider Verified",
        std::time::Duration::from_secs(30),
        || async {
            providers.get(&name).await.ok().filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.first())
                    .is_some_and(|c| c.reason == "Verified")
            })
        },
    )
    .await;
    assert_eq!(
        ready.status.and_then(|s| s.transport).as_deref(),
        Some("SMTP")
    );

    let (subject_a, subject_b, subject_c) = (
        support::unique("cluster by name"),
        support::unique("cluster by label"),
        support::unique("cluster denied"),
    );
    by_name.message("hello", note(&name, &subject_a)).await;
    by_label.message("hello", note(&name, &subject_b)).await;
    other.message("hello", note(&name, &subject_c)).await;
    by_name
        .message("nowhere", note("no-such-provider", "x"))
        .await;

    by_name.wait_phase("hello", Phase::Sent).await;
    by_label.wait_phase("hello", Phase::Sent).await;
    let received = support::received(&subject_a).await;
    assert_eq!(received.len(), 1);
    support::received(&subject_b).await;

    let denied = other.wait_phase("hello", Phase::Failed).await;
    let status = denied.status.expect("status");
    let error = status.last_error.expect("lastError");
    assert_eq!(error.reason, "Denied");
    assert!(
        error.message.contains(&other.ns) && error.message.contains(&name),
        "{}",
        error.message
    );
    assert_eq!(status.attempts, 0);
    assert_eq!(support::received_count(&subject_c).await, 0, "nothing sent");

    let missing = by_name.wait_reason("nowhere", "ProviderNotFound").await;
    let text = &missing.status.expect("status").conditions[0].message;
    assert!(text.contains("ClusterEmailProvider"), "{text}");

    // A kind that does not exist is refused at apply time.
    let mut bad = note(&name, "s");
    bad["providerRef"]["kind"] = json!("Provider");
    by_name
        .assert_refused("EmailMessage", "bad-kind", bad, "Unsupported value")
        .await;

    // Its Secret is watched (metadata only) in the controller's namespace:
    // a changed password verifies the provider again at once, and so does
    // the fix.
    let reason_is = |want: &'static str| {
        let providers = providers.clone();
        let name = name.clone();
        async move {
            support::eventually(want, std::time::Duration::from_secs(30), || async {
                providers.get(&name).await.ok().filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.first())
                        .is_some_and(|c| c.reason == want)
                })
            })
            .await
        }
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(home.client.clone(), &home.ns);
    let password = |p: &str| Patch::Merge(json!({"stringData": {"password": p}}));
    secrets
        .patch(
            "smtp-credentials",
            &PatchParams::default(),
            &password("not-it"),
        )
        .await
        .expect("changing the cluster provider's Secret");
    reason_is("AuthFailed").await;
    secrets
        .patch(
            "smtp-credentials",
            &PatchParams::default(),
            &password(&support::env().smtp_password),
        )
        .await
        .expect("fixing the cluster provider's Secret");
    reason_is("Verified").await;

    // Its ttlSecondsAfterFinished applies to the messages sent through it.
    let generation = providers
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttlSecondsAfterFinished": 1}})),
        )
        .await
        .expect("setting the cluster provider's TTL")
        .metadata
        .generation;
    support::eventually(
        "the TTL seen by the controllers",
        std::time::Duration::from_secs(30),
        || async {
            providers.get(&name).await.ok().filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == generation)
            })
        },
    )
    .await;
    let subject_ttl = support::unique("cluster ttl");
    by_name
        .message("short-lived", note(&name, &subject_ttl))
        .await;
    let messages: Api<mailroom::api::EmailMessage> =
        Api::namespaced(by_name.client.clone(), &by_name.ns);
    support::eventually(
        "the message deleted after the cluster provider's TTL",
        std::time::Duration::from_secs(30),
        || async { matches!(messages.get_opt("short-lived").await, Ok(None)).then_some(()) },
    )
    .await;
    assert_eq!(
        support::received(&subject_ttl).await.len(),
        1,
        "sent once before it was deleted"
    );

    for controller in controllers {
        controller.stop().await;
    }
    providers
        .delete(&name, &Default::default())
        .await
        .expect("deleting the cluster provider");
}
