//! The sending domain as each service's strict fake sees it: the
//! `DomainVerified` condition and `status.domain` (the records the service
//! wants, found or not), for a verified domain, one with records missing
//! (a warning, or held mail when the provider sets `requireVerifiedDomain`),
//! one the service does not know, and a key that may not read domains
//! (sending goes on). Postmark's domains API takes its account token.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use mailroom::api::{EmailProvider, Phase};
use mailroom_fakes::Service;
use serde_json::json;

use crate::registration::{PUBLIC, scene, start_controller};
use crate::support::fixtures::{self, Scene, VALID_API_KEY};

/// The `DomainVerified` condition's status, reason and message.
fn domain_condition(p: &EmailProvider) -> (String, String, String) {
    fixtures::condition_of(p, "DomainVerified")
}

async fn wait_domain(scene: &Scene, name: &str, reason: &str) -> EmailProvider {
    let what = format!("DomainVerified {reason}");
    fixtures::wait_provider(&scene.client, &scene.ns, name, &what, |p| {
        domain_condition(p).1 == reason
    })
    .await
}

#[tokio::test]
async fn each_service_shows_its_sending_domain_and_the_records_it_wants() {
    for service in Service::ALL {
        let (scene, fake) = scene(service, "domain", VALID_API_KEY).await;
        let controller = start_controller(&scene, PUBLIC);
        if service == Service::Postmark {
            // Postmark's domains API takes the account token only.
            let provider = wait_domain(&scene, "api", "DomainNotChecked").await;
            let (status, _, message) = domain_condition(&provider);
            assert_eq!(status, "Unknown");
            assert!(message.contains("accountTokenSecretRef"), "{message}");
            let token = fake.config().postmark_account_token.clone();
            fixtures::create::<Secret>(
                &scene.client,
                &scene.ns,
                json!({"metadata": {"name": "postmark-account"}, "stringData": {"apiKey": token}}),
            )
            .await;
            let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
            let account = json!({"spec": {"api": {"postmark": {"accountTokenSecretRef": {"name": "postmark-account"}}}}});
            providers
                .patch("api", &PatchParams::default(), &Patch::Merge(&account))
                .await
                .expect("adding the account token");
        }
        let provider = wait_domain(&scene, "api", "DomainVerified").await;
        let domain = provider
            .status
            .and_then(|s| s.domain)
            .expect("status.domain");
        let expected = if service == Service::Mailgun {
            "mg.example.com"
        } else {
            "mailroom.dev"
        };
        assert_eq!(domain.name, expected, "{service:?}");
        assert!(domain.verified);
        assert!(!domain.records.is_empty(), "{service:?}: records");
        assert!(
            domain.records.iter().all(|r| r.found != Some(false)),
            "{service:?}: {:?}",
            domain.records
        );
        controller.stop().await;
    }
}

#[tokio::test]
async fn an_unverified_domain_warns_and_holds_mail_only_when_the_provider_asks() {
    let (scene, fake) = scene(Service::Resend, "pending-domain", VALID_API_KEY).await;
    let providers: Api<EmailProvider> = Api::namespaced(scene.client.clone(), &scene.ns);
    let pending = json!({"spec": {"defaultFrom": "News <news@pending.example.com>"}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&pending))
        .await
        .expect("sending from the pending domain");
    let controller = start_controller(&scene, PUBLIC);
    let provider = wait_domain(&scene, "api", "DomainNotVerified").await;
    let (status, _, message) = domain_condition(&provider);
    assert_eq!(status, "False");
    assert!(
        message.contains("not found yet: SPF MX send.pending.example.com"),
        "{message}"
    );
    let records = provider
        .status
        .clone()
        .and_then(|s| s.domain)
        .expect("domain")
        .records;
    assert!(
        records.iter().any(|r| r.purpose == "DKIM"
            && r.type_ == "TXT"
            && r.name == "resend._domainkey.pending.example.com"
            && r.found == Some(false)),
        "{records:?}"
    );
    // A warning only: mail goes.
    scene.note("warned", "api", "warned").await;
    scene.wait_phase("warned", Phase::Sent).await;

    // Asked to, the provider holds its mail until the domain is verified.
    let require = json!({"spec": {"api": {"requireVerifiedDomain": true}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&require))
        .await
        .expect("requiring a verified domain");
    scene.wait_provider("api", "DomainNotVerified").await;
    let sends = fake.accepted().len();
    scene.note("held", "api", "held").await;
    let held = scene.wait_reason("held", "ProviderNotReady").await;
    let text = held
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Sent")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(text.contains("requireVerifiedDomain"), "{text}");
    assert_eq!(fake.accepted().len(), sends, "nothing sent");

    // A domain the service does not know.
    let unknown = json!({"spec": {"defaultFrom": "a@nowhere.example.org", "api": {"requireVerifiedDomain": false}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&unknown))
        .await
        .expect("an unknown domain");
    let provider = wait_domain(&scene, "api", "DomainNotFound").await;
    assert!(
        domain_condition(&provider)
            .2
            .contains("does not know nowhere.example.org")
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_key_that_may_not_read_domains_leaves_the_domain_unchecked_and_sends() {
    let send_only = format!("{VALID_API_KEY}-send-only");
    let (scene, _fake) = scene(Service::SendGrid, "domain-scope", &send_only).await;
    let controller = start_controller(&scene, PUBLIC);
    let provider = wait_domain(&scene, "api", "DomainNotChecked").await;
    let (status, _, message) = domain_condition(&provider);
    assert_eq!(status, "Unknown");
    assert!(
        message.contains("may not manage") && message.contains("403"),
        "{message}"
    );
    scene.note("sent", "api", "sent anyway").await;
    scene.wait_phase("sent", Phase::Sent).await;
    controller.stop().await;
}
