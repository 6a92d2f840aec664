//! One-click unsubscribe and tracking as each transport carries them: the
//! RFC 2369/8058 headers in every service's request (as its reference names
//! custom headers) and in the mail mailpit receives, rendered per recipient;
//! tracking in each service's own fields; a bulk message without
//! unsubscribe warned about; a per-message tracking setting its service
//! cannot take refused at apply by the admission policy, or by the
//! controller before anything is sent when the provider came later.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use mailroom::api::{EmailMessage, EmailProvider, Phase};
use mailroom_fakes::{Fake, Recorded, Service};
use serde_json::{Value, json};

use crate::support::fixtures::{self, Scene};
use crate::support::mailpit::Mailpit;
use crate::support::{self};

const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// Reads the headers as a mail client does (an independent RFC 2369/8058
/// parser) and asserts they offer one-click unsubscribe at `url`.
fn assert_one_click(list_unsubscribe: &str, post: Option<&str>, url: &str) {
    match list_unsubscribe::parse_with_post(list_unsubscribe, post) {
        list_unsubscribe::UnsubscribeMethod::OneClick { url: found } => {
            assert_eq!(found.as_str(), url, "{list_unsubscribe}")
        }
        other => panic!("not one-click: {other:?} from {list_unsubscribe:?} / {post:?}"),
    }
}

/// The provider default: rendered with each bulk recipient's data.
fn default_unsubscribe() -> Value {
    json!({"url": "https://lists.example.com/u?list=news&r={{recipient}}&id={{userId}}",
           "mailto": "unsubscribe@example.com"})
}

/// What each service takes per message: Postmark, Mailgun and SendGrid.
fn tracks_per_message(service: Service) -> bool {
    matches!(
        service,
        Service::Postmark | Service::Mailgun | Service::SendGrid
    )
}

/// A provider `name` for `fake` (its key in Secret `api-key`), with the
/// default unsubscribe, and tracking where the service takes it.
async fn provider(scene: &Scene, service: Service, fake: &Fake, name: &str) {
    let mut api = json!({"provider": format!("{service:?}"), "secretRef": {"name": "api-key"},
                         "endpoint": fake.url, "timeoutSeconds": 5});
    if service == Service::Mailgun {
        api["mailgun"] = json!({"domain": "mg.example.com"});
    }
    let mut spec = json!({"defaultFrom": "News <news@mailroom.dev>", "api": api,
                          "unsubscribe": default_unsubscribe()});
    if tracks_per_message(service) {
        spec["tracking"] = json!({"opens": true, "clicks": true});
    }
    create_provider(scene, name, spec).await;
}

/// Creates EmailProvider `name` with `spec`.
async fn create_provider(scene: &Scene, name: &str, spec: Value) {
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// The bare address of `text` (`Name <a@b>` or `a@b`).
fn bare(text: &str) -> String {
    match (text.find('<'), text.rfind('>')) {
        (Some(start), Some(end)) if start < end => text[start + 1..end].to_string(),
        _ => text.trim().to_string(),
    }
}

/// One email of a recorded request: its recipient, its custom headers, and
/// the JSON object (or form fields) it was described by.
struct Sent {
    to: String,
    headers: BTreeMap<String, String>,
    fields: Value,
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The items of a batch body (an array), or the one email of a single send.
fn one_or_many(body: &Value) -> Vec<Value> {
    body.as_array()
        .cloned()
        .unwrap_or_else(|| vec![body.clone()])
}

/// The emails of `request`, read as each service's reference lays them out
/// (single and batch forms).
fn emails(service: Service, request: &Recorded) -> Vec<Sent> {
    let body = &request.body;
    match service {
        Service::Mailtrap => {
            let items = match body.get("requests").and_then(Value::as_array) {
                Some(batch) => batch.clone(),
                None => vec![body.clone()],
            };
            items
                .into_iter()
                .map(|e| Sent {
                    to: e["to"][0]["email"].as_str().unwrap_or_default().to_string(),
                    headers: string_map(&e["headers"]),
                    fields: e,
                })
                .collect()
        }
        Service::Resend => one_or_many(body)
            .into_iter()
            .map(|e| {
                let to = e["to"]
                    .as_array()
                    .and_then(|l| l.first())
                    .or(Some(&e["to"]))
                    .and_then(Value::as_str)
                    .map(bare)
                    .unwrap_or_default();
                Sent {
                    to,
                    headers: string_map(&e["headers"]),
                    fields: e,
                }
            })
            .collect(),
        Service::Postmark => one_or_many(body)
            .into_iter()
            .map(|e| {
                let headers = e["Headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        let text = |k: &str| h[k].as_str().unwrap_or_default().to_string();
                        (text("Name"), text("Value"))
                    })
                    .collect();
                Sent {
                    to: bare(e["To"].as_str().unwrap_or_default()),
                    headers,
                    fields: e,
                }
            })
            .collect(),
        Service::Mailgun => {
            let pairs: Vec<(String, String)> = body
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let text = |i: usize| f[i].as_str().unwrap_or_default().to_string();
                    (text(0), text(1))
                })
                .collect();
            let headers = pairs
                .iter()
                .filter_map(|(n, v)| Some((n.strip_prefix("h:")?.to_string(), v.clone())))
                .collect();
            let tos: Vec<String> = pairs
                .iter()
                .filter(|(n, _)| n == "to")
                .map(|(_, v)| bare(v))
                .collect();
            assert_eq!(tos.len(), 1, "one recipient per request: {pairs:?}");
            vec![Sent {
                to: tos[0].clone(),
                headers,
                fields: body.clone(),
            }]
        }
        Service::SendGrid => {
            let common = string_map(&body["headers"]);
            body["personalizations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let mut headers = common.clone();
                    headers.extend(string_map(&p["headers"]));
                    Sent {
                        to: p["to"][0]["email"].as_str().unwrap_or_default().to_string(),
                        headers,
                        fields: body.clone(),
                    }
                })
                .collect()
        }
    }
}

/// The tracking an email asked for, read back from the service's fields:
/// (opens, clicks).
fn tracking(service: Service, sent: &Sent) -> (Option<bool>, Option<bool>) {
    let fields = &sent.fields;
    match service {
        Service::Postmark => (
            fields["TrackOpens"].as_bool(),
            fields["TrackLinks"].as_str().map(|l| match l {
                "HtmlAndText" => true,
                "None" => false,
                other => panic!("TrackLinks {other}"),
            }),
        ),
        Service::SendGrid => {
            let settings = &fields["tracking_settings"];
            let clicks = &settings["click_tracking"];
            assert_eq!(clicks["enable"], clicks["enable_text"], "{settings}");
            (
                settings["open_tracking"]["enable"].as_bool(),
                clicks["enable"].as_bool(),
            )
        }
        Service::Mailgun => {
            let option = |name: &str| {
                fields
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|f| f[0] == name)
                    .map(|f| match f[1].as_str() {
                        Some("yes") => true,
                        Some("no") => false,
                        other => panic!("{name} {other:?}"),
                    })
            };
            (option("o:tracking-opens"), option("o:tracking-clicks"))
        }
        Service::Mailtrap | Service::Resend => {
            let text = fields.to_string().to_lowercase();
            assert!(!text.contains("track"), "{text}");
            (None, None)
        }
    }
}

#[tokio::test]
async fn unsubscribe_and_tracking_reach_each_service_as_it_documents_them() {
    for service in Service::ALL {
        let fake = Fake::start(mailroom_fakes::Config::with_key(fixtures::VALID_API_KEY))
            .await
            .expect("starting the fake");
        let label = format!("{service:?}").to_lowercase();
        let scene = Scene::new(&format!("{label}-unsubscribe")).await;
        fixtures::create::<Secret>(
            &scene.client,
            &scene.ns,
            json!({"metadata": {"name": "api-key"}, "stringData": {"apiKey": fixtures::VALID_API_KEY}}),
        )
        .await;
        provider(&scene, service, &fake, "api").await;
        let controller = scene.controller().await;
        scene
            .message(
                "news",
                json!({"providerRef": {"name": "api"}, "subject": "News", "text": "news",
                       "html": "<p><a href=\"https://mailroom.dev\">news</a></p>",
                       "recipients": [{"to": "Ann <ann@example.org>", "data": {"userId": "u 1"}},
                                      {"to": "bo+news@example.org", "data": {"userId": "u/2"}}]}),
            )
            .await;
        let mut receipt = json!({"providerRef": {"name": "api"}, "to": ["cy@example.org"],
                                 "subject": "Receipt", "text": "paid",
                                 "unsubscribe": {"url": "https://shop.example.com/stop/{{recipient}}"}});
        if tracks_per_message(service) {
            receipt["tracking"] = json!({"clicks": false});
        }
        scene.message("receipt", receipt).await;
        scene
            .message(
                "plain",
                json!({"providerRef": {"name": "api"}, "to": ["di@example.org"],
                       "subject": "Plain", "text": "hi"}),
            )
            .await;
        let news = scene.wait_phase("news", Phase::Sent).await;
        scene.wait_phase("receipt", Phase::Sent).await;
        scene.wait_phase("plain", Phase::Sent).await;
        let conditions = news.status.expect("status").conditions;
        assert!(
            conditions.iter().all(|c| c.type_ != "Warning"),
            "{label}: the provider's unsubscribe covers the bulk message: {conditions:?}"
        );

        let sent: Vec<Sent> = fake
            .accepted()
            .iter()
            .flat_map(|r| emails(service, r))
            .collect();
        let by = |to: &str| {
            sent.iter()
                .find(|s| s.to == to)
                .unwrap_or_else(|| panic!("{label}: nothing sent to {to}"))
        };
        assert_eq!(sent.len(), 4, "{label}");
        for (to, id) in [
            ("ann@example.org", "u%201"),
            ("bo+news@example.org", "u%2F2"),
        ] {
            let email = by(to);
            let encoded = to.replace('+', "%2B").replace('@', "%40");
            assert_eq!(
                email.headers.get("List-Unsubscribe").map(String::as_str),
                Some(format!("<https://lists.example.com/u?list=news&r={encoded}&id={id}>, <mailto:unsubscribe@example.com?subject=unsubscribe>").as_str()),
                "{label} {to}"
            );
            assert_eq!(
                email
                    .headers
                    .get("List-Unsubscribe-Post")
                    .map(String::as_str),
                Some(ONE_CLICK),
                "{label} {to}"
            );
            assert_one_click(
                &email.headers["List-Unsubscribe"],
                Some(ONE_CLICK),
                &format!("https://lists.example.com/u?list=news&r={encoded}&id={id}"),
            );
        }
        let receipt = by("cy@example.org");
        assert_eq!(
            receipt.headers.get("List-Unsubscribe").map(String::as_str),
            Some("<https://shop.example.com/stop/cy%40example.org>"),
            "{label}"
        );
        assert_eq!(
            receipt
                .headers
                .get("List-Unsubscribe-Post")
                .map(String::as_str),
            Some(ONE_CLICK)
        );
        assert_one_click(
            &receipt.headers["List-Unsubscribe"],
            Some(ONE_CLICK),
            "https://shop.example.com/stop/cy%40example.org",
        );
        // The provider's unsubscribe is for bulk mail only.
        let plain = by("di@example.org");
        assert!(
            !plain.headers.contains_key("List-Unsubscribe"),
            "{label}: {:?}",
            plain.headers
        );

        if tracks_per_message(service) {
            assert_eq!(
                tracking(service, by("ann@example.org")),
                (Some(true), Some(true)),
                "{label}"
            );
            assert_eq!(
                tracking(service, by("di@example.org")),
                (Some(true), Some(true)),
                "{label}"
            );
            // The message's own setting overrides the provider's, one by one.
            assert_eq!(
                tracking(service, receipt),
                (Some(true), Some(false)),
                "{label}"
            );
        } else {
            for email in &sent {
                assert_eq!(tracking(service, email), (None, None));
            }
            // A per-message setting the service cannot take is refused,
            // naming the field, and nothing is sent. Created before its
            // provider, the admission policy cannot judge it: the
            // controller does.
            scene
                .message(
                    "tracked",
                    json!({"providerRef": {"name": "later"}, "to": ["ed@example.org"],
                           "subject": "Tracked", "text": "hi", "tracking": {"opens": true}}),
                )
                .await;
            provider(&scene, service, &fake, "later").await;
            let failed = scene.wait_phase("tracked", Phase::Failed).await;
            let error = failed.status.and_then(|s| s.last_error).expect("lastError");
            assert_eq!(error.reason, "InvalidRequest");
            assert!(
                error.message.contains("spec.tracking")
                    && error.message.contains("per sending domain"),
                "{label}: {}",
                error.message
            );
            let after: usize = fake
                .accepted()
                .iter()
                .map(|r| emails(service, r).len())
                .sum();
            assert_eq!(after, 4, "{label}: nothing more was sent");
        }
        controller.stop().await;
    }
}

/// The headers mailpit received for the one mail with `subject` sent to `to`.
async fn received_headers(subject: &str, to: &str) -> BTreeMap<String, Vec<String>> {
    let mailpit = Mailpit::shared();
    let found = mailpit
        .wait_for(
            &format!("subject:\"{subject}\" to:{to}"),
            1,
            Duration::from_secs(30),
        )
        .await;
    mailpit.headers(&found[0].id).await
}

/// The `mailpit` provider, and `lists`: mailpit over SMTP with `unsubscribe`.
pub(crate) async fn lists_provider(scene: &Scene, unsubscribe: Value) {
    scene.mailpit_provider().await;
    let mut smtp = fixtures::mailpit_smtp("smtp-credentials");
    smtp["pool"] = json!({"maxConnections": 2});
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
               "metadata": {"name": "lists"},
               "spec": {"defaultFrom": "News <news@mailroom.dev>", "smtp": smtp,
                        "unsubscribe": unsubscribe}}),
    )
    .await;
}

#[tokio::test]
async fn bulk_mail_over_smtp_takes_the_providers_unsubscribe_and_warns_without_one() {
    let scene = Scene::new("unsubscribe-smtp").await;
    let unsubscribe = json!({"url": "https://lists.mailroom.dev/{{list}}/u?r={{recipient}}",
                             "mailto": "leave@mailroom.dev"});
    lists_provider(&scene, unsubscribe).await;
    let controller = scene.controller().await;
    let digest = support::unique("digest");
    scene
        .message(
            "digest",
            json!({"providerRef": {"name": "lists"}, "subject": digest, "text": "this week",
                   "data": {"list": "weekly"},
                   "recipients": [{"to": "ann@example.org"}, {"to": "bo@example.org"}]}),
        )
        .await;
    let bare_subject = support::unique("no unsubscribe");
    scene
        .message(
            "bare",
            json!({"providerRef": {"name": "mailpit"}, "subject": bare_subject, "text": "hello",
                   "recipients": [{"to": "cy@example.org"}, {"to": "di@example.org"}]}),
        )
        .await;
    // Created before its provider, so the admission policy cannot judge it.
    scene
        .message(
            "tracked",
            json!({"providerRef": {"name": "relay"}, "to": ["ed@example.org"],
                   "subject": support::unique("tracked"), "text": "hi",
                   "tracking": {"clicks": true}}),
        )
        .await;
    fixtures::provider(
        &scene.client,
        &scene.ns,
        "relay",
        fixtures::mailpit_smtp("smtp-credentials"),
    )
    .await;

    let sent = scene.wait_phase("digest", Phase::Sent).await;
    assert!(
        sent.status
            .expect("status")
            .conditions
            .iter()
            .all(|c| c.type_ != "Warning")
    );
    for who in ["ann", "bo"] {
        let headers = received_headers(&digest, &format!("{who}@example.org")).await;
        assert_eq!(
            headers.get("List-Unsubscribe"),
            Some(&vec![format!(
                "<https://lists.mailroom.dev/weekly/u?r={who}%40example.org>, <mailto:leave@mailroom.dev?subject=unsubscribe>"
            )]),
            "{headers:?}"
        );
        assert_eq!(
            headers.get("List-Unsubscribe-Post"),
            Some(&vec![ONE_CLICK.to_string()])
        );
        assert_one_click(
            &headers["List-Unsubscribe"][0],
            Some(&headers["List-Unsubscribe-Post"][0]),
            &format!("https://lists.mailroom.dev/weekly/u?r={who}%40example.org"),
        );
    }

    // Sent, and warned about: Gmail and Yahoo require one-click unsubscribe.
    let bare = scene.wait_phase("bare", Phase::Sent).await;
    let warning = bare
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Warning")
        .expect("a Warning condition");
    assert_eq!(
        (warning.status.as_str(), warning.reason.as_str()),
        ("True", "UnsubscribeMissing")
    );
    assert!(
        warning.message.contains("spec.unsubscribe"),
        "{}",
        warning.message
    );
    let event = support::eventually(
        "the UnsubscribeMissing event",
        Duration::from_secs(30),
        || async {
            fixtures::events_for(&scene.client, &scene.ns, "bare")
                .await
                .into_iter()
                .find(|(kind, reason, _)| kind == "Warning" && reason == "UnsubscribeMissing")
        },
    )
    .await;
    assert!(event.2.contains("Gmail and Yahoo"), "{event:?}");
    for who in ["cy", "di"] {
        let headers = received_headers(&bare_subject, &format!("{who}@example.org")).await;
        assert!(!headers.contains_key("List-Unsubscribe"), "{headers:?}");
    }

    // SMTP servers do not track: refused naming the field, nothing sent.
    let failed = scene.wait_phase("tracked", Phase::Failed).await;
    let error = failed.status.and_then(|s| s.last_error).expect("lastError");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error
            .message
            .contains("spec.tracking: an SMTP server does not track"),
        "{}",
        error.message
    );
    let messages: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let tracked = messages.get("tracked").await.expect("get");
    assert_eq!(tracked.status.map(|s| s.attempts), Some(0));
    controller.stop().await;
}

/// Whether the apiserver would refuse `spec` as a new EmailMessage (a dry
/// run through admission): its message if so.
pub(crate) async fn dry_run_refusal(scene: &Scene, spec: &Value) -> Option<String> {
    use kube::api::{ApiResource, DynamicObject, PostParams};
    let resource = ApiResource::erase::<EmailMessage>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(scene.client.clone(), &scene.ns, &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"generateName": "probe-"}, "spec": spec
    }))
    .expect("object");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(format!("{} {}", status.code, status.message)),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_tracking_setting_the_named_provider_cannot_take_is_refused_at_apply() {
    let scene = Scene::new("tracking-apply").await;
    let api = |provider: &str| {
        let mut api = json!({"provider": provider, "secretRef": {"name": "api-key"}});
        if provider == "Mailgun" {
            api["mailgun"] = json!({"domain": "mg.example.com"});
        }
        json!({"api": api})
    };
    // Created in this order, and the apiserver's watch of providers
    // delivers them in order: once Resend (the last) is judged, every
    // other one is known to the policy too, so an acceptance below means
    // the policy let it through, not that it had not seen it yet.
    let providers = [
        ("postmark", api("Postmark")),
        ("mailgun", api("Mailgun")),
        ("sendgrid", api("SendGrid")),
        ("relay", json!({"smtp": {"host": "smtp.example.com"}})),
        ("mailtrap", api("Mailtrap")),
        ("resend", api("Resend")),
    ];
    for (name, spec) in providers {
        create_provider(&scene, name, spec).await;
    }
    let tracked = |provider: &str| {
        json!({"providerRef": {"name": provider}, "to": ["a@example.org"], "subject": "s",
               "text": "t", "tracking": {"opens": true}})
    };
    // The apiserver learns of new providers through a watch: the first
    // refusal may take a moment.
    let refused = support::eventually(
        "the refusal of tracking through Resend",
        Duration::from_secs(30),
        || async { dry_run_refusal(&scene, &tracked("resend")).await },
    )
    .await;
    assert!(
        refused.starts_with("422 ")
            && refused.contains("spec.tracking: EmailProvider resend sends through Resend, which sets tracking per sending domain"),
        "{refused}"
    );
    for (name, expected) in [
        (
            "mailtrap",
            Some("sends through Mailtrap, which sets tracking per sending domain"),
        ),
        (
            "relay",
            Some("sends over SMTP, and SMTP servers do not track opens or clicks"),
        ),
        ("postmark", None),
        ("mailgun", None),
        ("sendgrid", None),
        // A provider that does not exist yet: judged when the message is sent.
        ("later", None),
    ] {
        let got = dry_run_refusal(&scene, &tracked(name)).await;
        match (expected, got) {
            (Some(text), Some(got)) => assert!(got.contains(text), "{name}: {got}"),
            (None, None) => {}
            (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
        }
    }
    // Without tracking, any provider will do.
    let mut plain = tracked("resend");
    plain.as_object_mut().expect("object").remove("tracking");
    assert_eq!(dry_run_refusal(&scene, &plain).await, None);
}
