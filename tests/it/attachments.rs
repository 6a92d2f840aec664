//! Attachments from Secret and ConfigMap keys: the MIME tree SMTP receivers
//! get, each service's documented attachment fields, a Secret that appears
//! later, the provider's size cap, and what the schema refuses at apply time.

use crate::support;

use crate::support::Mailpit;
use crate::support::fixtures::{self, Scene};
use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use mailroom::api::{EmailProvider, Phase};
use mailroom_fakes::Service;
use serde_json::{Value, json};

/// A small image: the PNG signature and some bytes that are not UTF-8.
const LOGO: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00, 0xfe, 0x10,
];
const INVOICE: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\n%%EOF\n";
const TERMS: &str = "Terms: be kind.\n";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Secret `images` (logo.png) and ConfigMap `documents` (invoice.pdf as
/// binaryData, terms.txt as data).
async fn files(scene: &Scene) {
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "images", "labels": {"mailroom.dev/attachable": "true"}},
               "data": {"logo.png": b64(LOGO)}}),
    )
    .await;
    documents(scene).await;
}

async fn documents(scene: &Scene) {
    fixtures::create::<ConfigMap>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "documents"}, "binaryData": {"invoice.pdf": b64(INVOICE)},
               "data": {"terms.txt": TERMS}}),
    )
    .await;
}

fn logo_and_invoice() -> Value {
    json!([
        {"filename": "logo.png", "contentId": "logo", "secretKeyRef": {"name": "images", "key": "logo.png"}},
        {"filename": "invoice.pdf", "configMapKeyRef": {"name": "documents", "key": "invoice.pdf"}}
    ])
}

fn content_type(part: &mailparse::ParsedMail<'_>) -> String {
    part.ctype.mimetype.clone()
}

#[tokio::test]
async fn a_templated_html_mail_with_an_inline_image_arrives_with_the_right_mime_tree() {
    let scene = Scene::new("attach-smtp").await;
    scene.mailpit_provider().await;
    files(&scene).await;
    let subject = support::unique("invoice");
    fixtures::create::<mailroom::api::EmailTemplate>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailTemplate", "metadata": {"name": "invoice"},
               "spec": {"subject": format!("{subject} {{{{number}}}}"),
                        "text": "Invoice {{number}} attached.",
                        "html": "<p><img src=\"cid:logo\"> Invoice {{number}} attached.</p>"}}),
    )
    .await;
    let controller = scene.controller().await;
    let mut attachments = logo_and_invoice();
    attachments.as_array_mut().expect("list").push(json!(
        {"filename": "terms.txt", "contentType": "text/plain", "configMapKeyRef": {"name": "documents", "key": "terms.txt"}}
    ));
    scene
        .message(
            "invoice",
            json!({"providerRef": {"name": "mailpit"}, "to": ["customer@example.org"],
                   "templateRef": {"name": "invoice"}, "data": {"number": "A-17"},
                   "attachments": attachments}),
        )
        .await;
    scene.wait_phase("invoice", Phase::Sent).await;

    let found = support::received(&format!("{subject} A-17")).await;
    assert_eq!(found.len(), 1);
    let raw = Mailpit::shared().raw(&found[0].id).await;
    let mail = mailparse::parse_mail(raw.as_bytes()).expect("MIME");
    assert_eq!(content_type(&mail), "multipart/mixed");
    let kinds: Vec<String> = mail.subparts.iter().map(content_type).collect();
    assert_eq!(
        kinds,
        ["multipart/related", "application/pdf", "text/plain"],
        "the body, then the files"
    );

    let related = &mail.subparts[0];
    let kinds: Vec<String> = related.subparts.iter().map(content_type).collect();
    assert_eq!(kinds, ["multipart/alternative", "image/png"]);
    let alternative: Vec<String> = related.subparts[0]
        .subparts
        .iter()
        .map(content_type)
        .collect();
    assert_eq!(alternative, ["text/plain", "text/html"]);
    let html = related.subparts[0].subparts[1].get_body().expect("html");
    assert!(html.contains("cid:logo") && html.contains("A-17"), "{html}");

    let image = &related.subparts[1];
    let header = |part: &mailparse::ParsedMail<'_>, name: &str| {
        use mailparse::MailHeaderMap;
        part.headers.get_first_value(name).unwrap_or_default()
    };
    assert_eq!(header(image, "Content-ID"), "<logo>");
    assert!(header(image, "Content-Disposition").starts_with("inline"));
    assert_eq!(image.get_body_raw().expect("image"), LOGO);

    let invoice = &mail.subparts[1];
    let disposition = invoice.get_content_disposition();
    assert_eq!(
        disposition.disposition,
        mailparse::DispositionType::Attachment
    );
    assert_eq!(
        disposition.params.get("filename").map(String::as_str),
        Some("invoice.pdf")
    );
    assert_eq!(invoice.get_body_raw().expect("pdf"), INVOICE);
    assert_eq!(mail.subparts[2].get_body().expect("terms"), TERMS);
    controller.stop().await;
}

#[tokio::test]
async fn each_service_gets_attachments_in_its_documented_fields() {
    for service in Service::ALL {
        let (scene, fake, controller) =
            fixtures::api_scene(service, "attach", fixtures::VALID_API_KEY).await;
        files(&scene).await;
        scene
            .message(
                "files",
                json!({"providerRef": {"name": "api"}, "to": ["x@example.org"], "subject": "files",
                       "html": "<img src=\"cid:logo\">", "attachments": logo_and_invoice()}),
            )
            .await;
        scene.wait_phase("files", Phase::Sent).await;
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1, "{service:?}");
        let body = accepted[0].body.clone();
        let (logo, invoice) = (b64(LOGO), b64(INVOICE));
        let expected = match service {
            Service::Mailtrap | Service::SendGrid => json!([
                {"content": logo, "filename": "logo.png", "type": "image/png", "disposition": "inline", "content_id": "logo"},
                {"content": invoice, "filename": "invoice.pdf", "type": "application/pdf", "disposition": "attachment"}
            ]),
            Service::Resend => json!([
                {"content": logo, "filename": "logo.png", "content_type": "image/png", "content_id": "logo"},
                {"content": invoice, "filename": "invoice.pdf", "content_type": "application/pdf"}
            ]),
            Service::Postmark => json!([
                {"Content": logo, "Name": "logo.png", "ContentType": "image/png", "ContentID": "cid:logo"},
                {"Content": invoice, "Name": "invoice.pdf", "ContentType": "application/pdf"}
            ]),
            Service::Mailgun => {
                // File parts: the inline one named by its content id.
                let files: Vec<Value> = body
                    .as_array()
                    .expect("form")
                    .iter()
                    .filter(|f| f[1].is_object())
                    .cloned()
                    .collect();
                assert_eq!(
                    files,
                    [
                        json!(["inline", {"filename": "logo", "contentType": "image/png", "size": LOGO.len(), "content": logo}]),
                        json!(["attachment", {"filename": "invoice.pdf", "contentType": "application/pdf", "size": INVOICE.len(), "content": invoice}]),
                    ]
                );
                controller.stop().await;
                continue;
            }
        };
        let key = if service == Service::Postmark {
            "Attachments"
        } else {
            "attachments"
        };
        assert_eq!(body[key], expected, "{service:?}");
        controller.stop().await;
    }
}

#[tokio::test]
async fn a_message_waits_for_its_attachment_and_is_sent_once_it_exists() {
    let scene = Scene::new("attach-later").await;
    scene.mailpit_provider().await;
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "images", "labels": {"mailroom.dev/attachable": "true"}},
               "data": {"logo.png": b64(LOGO)}}),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("attachment later");
    scene
        .message(
            "later",
            json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject,
                   "text": "see attached", "attachments": logo_and_invoice()}),
        )
        .await;
    let waiting = scene.wait_reason("later", "AttachmentNotFound").await;
    let status = waiting.status.expect("status");
    assert_eq!((status.phase, status.attempts), (Some(Phase::Pending), 0));
    let text = &status.conditions[0].message;
    assert!(
        text.contains("spec.attachments[1].configMapKeyRef") && text.contains("documents"),
        "{text}"
    );
    assert_eq!(support::received_count(&subject).await, 0);

    documents(&scene).await;
    scene.wait_phase("later", Phase::Sent).await;
    assert_eq!(support::received(&subject).await.len(), 1);
    controller.stop().await;
}

/// Creating an EmailMessage must not be a way to read Secrets: a Secret the
/// message's author could not read (the SMTP password here) is attached only
/// when its owner labelled it `mailroom.dev/attachable: "true"`.
#[tokio::test]
async fn a_secret_that_did_not_opt_in_is_never_attached_and_nothing_is_sent() {
    let scene = Scene::new("attach-denied").await;
    scene.mailpit_provider().await;
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "images", "labels": {"mailroom.dev/attachable": "false"}},
               "data": {"logo.png": b64(LOGO)}}),
    )
    .await;
    let controller = scene.controller().await;
    let steal = support::unique("steal the password");
    let labelled_false = support::unique("labelled false");
    scene
        .message(
            "steal",
            json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": steal,
                   "text": "t", "attachments": [{"filename": "password.txt",
                   "secretKeyRef": {"name": "smtp-credentials", "key": "password"}}]}),
        )
        .await;
    scene
        .message(
            "false",
            json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": labelled_false,
                   "text": "t", "attachments": [{"filename": "logo.png",
                   "secretKeyRef": {"name": "images", "key": "logo.png"}}]}),
        )
        .await;
    for (name, secret) in [("steal", "smtp-credentials"), ("false", "images")] {
        let failed = scene.wait_phase(name, Phase::Failed).await;
        let status = failed.status.expect("status");
        let error = status.last_error.expect("lastError");
        assert_eq!(error.reason, "AttachmentNotAllowed");
        assert!(
            error.message.contains("spec.attachments[0].secretKeyRef")
                && error.message.contains(secret)
                && error.message.contains("mailroom.dev/attachable"),
            "{}",
            error.message
        );
        assert_eq!(status.attempts, 0, "refused before any attempt");
    }
    assert_eq!(support::received_count(&steal).await, 0);
    assert_eq!(support::received_count(&labelled_false).await, 0);
    controller.stop().await;
}

#[tokio::test]
async fn attachments_over_the_provider_cap_fail_naming_the_attachment_and_nothing_is_sent() {
    let scene = Scene::new("attach-cap").await;
    fixtures::smtp_secret(
        &scene.client,
        &scene.ns,
        "smtp-credentials",
        &support::env().smtp_password,
    )
    .await;
    fixtures::ca_config_map(&scene.client, &scene.ns).await;
    fixtures::create::<EmailProvider>(
        &scene.client,
        &scene.ns,
        json!({"apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider", "metadata": {"name": "mailpit"},
               "spec": {"defaultFrom": "tests@mailroom.dev", "maxAttachmentBytes": 1000,
                        "smtp": fixtures::mailpit_smtp("smtp-credentials")}}),
    )
    .await;
    let chunk = b64(&[7u8; 600]);
    fixtures::create::<Secret>(
        &scene.client,
        &scene.ns,
        json!({"metadata": {"name": "big", "labels": {"mailroom.dev/attachable": "true"}},
               "data": {"a.bin": chunk, "b.bin": chunk}}),
    )
    .await;
    let controller = scene.controller().await;
    let subject = support::unique("too big");
    scene
        .message(
            "big",
            json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject, "text": "t",
                   "attachments": [{"filename": "a.bin", "secretKeyRef": {"name": "big", "key": "a.bin"}},
                                   {"filename": "b.bin", "secretKeyRef": {"name": "big", "key": "b.bin"}}]}),
        )
        .await;
    let failed = scene.wait_phase("big", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("lastError");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error.message.contains("spec.attachments[1]")
            && error.message.contains("1200")
            && error.message.contains("1000"),
        "{}",
        error.message
    );
    assert_eq!(status.attempts, 0, "refused before any attempt");
    assert_eq!(support::received_count(&subject).await, 0);
    controller.stop().await;
}

#[tokio::test]
async fn bad_attachments_are_refused_at_apply_time() {
    let scene = Scene::new("attach-schema").await;
    let with = |attachments: Value| {
        json!({"providerRef": {"name": "p"}, "to": ["x@example.org"], "subject": "s", "text": "t",
               "attachments": attachments})
    };
    let key = json!({"name": "s", "key": "k"});
    let cases = [
        (
            json!([{"filename": "a.pdf", "secretKeyRef": key, "configMapKeyRef": key}]),
            "set exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            json!([{"filename": "a.pdf"}]),
            "set exactly one of secretKeyRef or configMapKeyRef",
        ),
        (
            json!([{"filename": "a.pdf", "secretKeyRef": key}, {"filename": "a.pdf", "secretKeyRef": key}]),
            "attachment filenames must be unique",
        ),
        (
            json!([{"filename": "a.pdf\r\nBcc: x@example.org", "secretKeyRef": key}]),
            "filename",
        ),
        (
            json!([{"filename": "../etc/passwd", "secretKeyRef": key}]),
            "filename",
        ),
        (
            json!([{"filename": "a.png", "contentId": "<logo>", "secretKeyRef": key}]),
            "contentId",
        ),
        (
            json!([{"filename": "a.png", "contentType": "image png", "secretKeyRef": key}]),
            "contentType",
        ),
    ];
    for (i, (attachments, expected)) in cases.into_iter().enumerate() {
        scene
            .assert_refused(
                "EmailMessage",
                &format!("bad-{i}"),
                with(attachments),
                expected,
            )
            .await;
    }
}

/// A file of `size` bytes that is not text.
fn file_of(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// The files of every message being sent share the controller's attachment
/// memory. With 16 MiB (8 MiB for the namespace: two reads at once), eight
/// messages of two 900 KiB files each all arrive whole, each once; a
/// message whose files could never fit in the namespace's half fails,
/// naming the flag, and nothing of it is sent.
#[tokio::test]
async fn messages_share_the_attachment_memory_and_every_one_arrives_whole() {
    use support::fixtures::{RunningController, settings};

    let scene = Scene::new("attach-memory").await;
    scene.mailpit_provider().await;
    let one = file_of(900 * 1024, 1);
    let two = file_of(900 * 1024, 2);
    for (name, bytes) in [("one", &one), ("two", &two)] {
        fixtures::create::<ConfigMap>(
            &scene.client,
            &scene.ns,
            json!({"metadata": {"name": name}, "binaryData": {"file.bin": b64(bytes)}}),
        )
        .await;
    }
    let controller = RunningController::start_with_settings(
        scene.client.clone(),
        mailroom::controller::Settings {
            max_attachment_memory_mib: 16,
            ..settings(&scene.ns)
        },
    );
    let file = |n: usize, map: &str| json!({"filename": format!("f{n}.bin"), "configMapKeyRef": {"name": map, "key": "file.bin"}});
    let subject = support::unique("shared memory");
    for i in 0..8 {
        scene
            .message(
                &format!("m{i}"),
                json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"],
                       "subject": format!("{subject} {i}"), "text": "files",
                       "attachments": [file(0, "one"), file(1, "two")]}),
            )
            .await;
    }
    let six: Vec<Value> = (0..6)
        .map(|n| file(n, if n % 2 == 0 { "one" } else { "two" }))
        .collect();
    scene
        .message(
            "too-much",
            json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"],
                   "subject": format!("{subject} too much"), "text": "files", "attachments": six}),
        )
        .await;

    for i in 0..8 {
        let sent = scene.wait_phase(&format!("m{i}"), Phase::Sent).await;
        assert_eq!(sent.status.expect("status").attempts, 1);
        let found = support::received(&format!("{subject} {i}")).await;
        assert_eq!(found.len(), 1, "message {i} arrived once");
        let raw = Mailpit::shared().raw(&found[0].id).await;
        let mail = mailparse::parse_mail(raw.as_bytes()).expect("MIME");
        let files: Vec<Vec<u8>> = mail.subparts[1..]
            .iter()
            .map(|part| part.get_body_raw().expect("file"))
            .collect();
        assert!(
            files == [one.clone(), two.clone()],
            "message {i}: both files whole"
        );
    }

    let failed = scene.wait_phase("too-much", Phase::Failed).await;
    let status = failed.status.expect("status");
    let error = status.last_error.expect("lastError");
    assert_eq!(error.reason, "InvalidRequest");
    assert!(
        error.message.contains("spec.attachments[5]")
            && error.message.contains("--max-attachment-memory-mib"),
        "{}",
        error.message
    );
    assert_eq!(status.attempts, 0, "refused before any attempt");
    assert_eq!(
        support::received_count(&format!("{subject} too much")).await,
        0
    );
    controller.stop().await;
}
