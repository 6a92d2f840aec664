//! The delivery contract's choices, on the real apiserver: what an
//! interrupted attempt leads to under each delivery policy, the retry
//! annotation, suspend, rate limits, and retry limits.

use crate::support;

use std::time::Duration;

use crate::support::fixtures::{self, Scene};
use futures::TryStreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use mailroom::api::journal::JOURNAL_NAME;
use mailroom::api::{EmailJournal, EmailMessage, EmailMessageStatus, Phase};
use mailroom_fakes::{Config, Failure, Fake, Service};
use serde_json::json;

/// Leaves a message as a controller that died mid-send would: claimed
/// (Sending, attempt 1) with no result.
async fn interrupted_message(
    scene: &Scene,
    provider: &str,
    subject: &str,
    policy: &str,
) -> EmailMessage {
    let spec = json!({"providerRef": {"name": provider}, "to": ["x@example.org"], "subject": subject,
                      "text": "hi", "deliveryPolicy": policy});
    claimed_with_no_result(scene, spec).await
}

/// Message `interrupted` with `spec`, claimed (Sending, attempt 1) with no
/// result.
async fn claimed_with_no_result(scene: &Scene, spec: serde_json::Value) -> EmailMessage {
    let mut message = scene.message("interrupted", spec).await;
    message.status = Some(EmailMessageStatus {
        phase: Some(Phase::Sending),
        attempts: 1,
        ..Default::default()
    });
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    api.replace_status("interrupted", &PostParams::default(), &message)
        .await
        .expect("writing the claim")
}

/// A person's `mailroom.dev/retry=true` on message `interrupted`; the
/// message once Sent.
async fn retried_until_sent(scene: &Scene) -> EmailMessage {
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let patch = json!({"metadata": {"annotations": {"mailroom.dev/retry": "true"}}});
    api.patch(
        "interrupted",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .expect("annotate");
    scene.wait_phase("interrupted", Phase::Sent).await
}

#[tokio::test]
async fn at_most_once_interrupted_attempt_ends_unknown_until_a_person_retries_it() {
    let scene = Scene::new("at-most-once").await;
    scene.mailpit_provider().await;
    let subject = support::unique("at most once");
    interrupted_message(&scene, "mailpit", &subject, "AtMostOnce").await;
    let controller = scene.controller().await;

    let unknown = scene.wait_phase("interrupted", Phase::Unknown).await;
    assert_eq!(fixtures::sent_reason(&unknown), "Interrupted");
    let text = &unknown.status.clone().expect("status").conditions[0].message;
    assert!(
        text.contains("mailroom.dev/retry=true"),
        "tells how to retry: {text}"
    );
    assert_eq!(
        support::received_count(&subject).await,
        0,
        "not sent again on its own"
    );

    let sent = retried_until_sent(&scene).await;
    assert_eq!(sent.status.clone().expect("status").attempts, 2);
    assert!(
        !sent.annotations().contains_key("mailroom.dev/retry"),
        "the request is used up"
    );
    support::received(&subject).await;
    assert_eq!(support::received_count(&subject).await, 1);
    controller.stop().await;
}

/// The retry annotation is taken only on an Unknown message: on a Sent one
/// it is answered with a Warning Event and removed, and nothing is sent.
#[tokio::test]
async fn a_retry_asked_of_a_sent_message_is_refused_and_removed() {
    let scene = Scene::new("retry-sent").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("retry a sent one");
    scene.note("done", "mailpit", &subject).await;
    scene.wait_phase("done", Phase::Sent).await;

    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let patch = json!({"metadata": {"annotations": {"mailroom.dev/retry": "true"}}});
    api.patch("done", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let answered = scene
        .wait_message("done", "the retry annotation removed", |m| {
            !m.annotations().contains_key("mailroom.dev/retry")
        })
        .await;
    assert_eq!(answered.status.expect("status").phase, Some(Phase::Sent));
    let events = support::eventually(
        "the RetryRefused Event",
        Duration::from_secs(10),
        || async {
            let events = fixtures::events_for(&scene.client, &scene.ns, "done").await;
            events
                .into_iter()
                .find(|(_, reason, _)| reason == "RetryRefused")
        },
    )
    .await;
    assert_eq!(events.0, "Warning");
    assert!(events.2.contains("Sent"), "{}", events.2);
    assert_eq!(support::received_count(&subject).await, 1, "sent once");
    controller.stop().await;
}

#[tokio::test]
async fn at_least_once_interrupted_attempt_is_sent_again() {
    let scene = Scene::new("at-least-once").await;
    scene.mailpit_provider().await;
    let subject = support::unique("at least once");
    interrupted_message(&scene, "mailpit", &subject, "AtLeastOnce").await;
    let controller = scene.controller().await;
    let sent = scene.wait_phase("interrupted", Phase::Sent).await;
    let status = sent.status.expect("status");
    assert_eq!(status.attempts, 2);
    assert!(
        status.conditions[0].message.contains("attempt 2"),
        "{}",
        status.conditions[0].message
    );
    support::received(&subject).await;
    controller.stop().await;
}

/// A message whose sends keep bringing the controller down is not sent
/// again after every restart: an interrupted last attempt (here the only
/// one its `retry.maxAttempts` allows) ends Unknown under AtLeastOnce too,
/// until a person retries it.
#[tokio::test]
async fn an_interrupted_last_attempt_ends_unknown_under_at_least_once() {
    let scene = Scene::new("interrupted-last").await;
    scene.mailpit_provider().await;
    let subject = support::unique("interrupted last");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject,
                      "text": "hi", "retry": {"maxAttempts": 1}});
    claimed_with_no_result(&scene, spec).await;
    let controller = scene.controller().await;

    let unknown = scene.wait_phase("interrupted", Phase::Unknown).await;
    assert_eq!(fixtures::sent_reason(&unknown), "Interrupted");
    let text = &unknown.status.clone().expect("status").conditions[0].message;
    assert!(
        text.contains("last of the 1 allowed") && text.contains("mailroom.dev/retry=true"),
        "says why and how to retry: {text}"
    );
    assert_eq!(support::received_count(&subject).await, 0, "not sent again");

    let sent = retried_until_sent(&scene).await;
    assert_eq!(sent.status.expect("status").attempts, 2);
    support::received(&subject).await;
    assert_eq!(support::received_count(&subject).await, 1);
    controller.stop().await;
}

/// The same for a bulk message, counted per batch: its batch under way cut
/// off as often as `retry.maxAttempts` allows ends it Unknown, and a
/// person's retry goes on from that batch.
#[tokio::test]
async fn a_bulk_batch_cut_off_as_often_as_allowed_ends_unknown() {
    let scene = Scene::new("interrupted-batch").await;
    scene.mailpit_provider().await;
    let subject = support::unique("interrupted batch");
    let spec = json!({"providerRef": {"name": "mailpit"}, "subject": subject, "text": "hi",
                      "recipients": [{"to": "a@example.org"}, {"to": "b@example.org"}],
                      "retry": {"maxAttempts": 2}});
    let mut message = scene.message("interrupted", spec).await;
    // Its first batch was cut off once (the claim after it counted that)
    // and now again.
    message.status = Some(
        serde_json::from_value(json!({"phase": "Sending", "attempts": 3,
            "bulk": {"total": 2, "sent": 0, "failed": 0, "next": 0, "retries": 1}}))
        .expect("status"),
    );
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    api.replace_status("interrupted", &PostParams::default(), &message)
        .await
        .expect("writing the claim");
    let controller = scene.controller().await;

    let unknown = scene.wait_phase("interrupted", Phase::Unknown).await;
    assert_eq!(fixtures::sent_reason(&unknown), "Interrupted");
    let text = &unknown.status.clone().expect("status").conditions[0].message;
    assert!(text.contains("2 times in a row"), "says why: {text}");
    assert_eq!(support::received_count(&subject).await, 0, "not sent again");

    let sent = retried_until_sent(&scene).await;
    let bulk = sent.status.expect("status").bulk.expect("bulk");
    assert_eq!((bulk.sent, bulk.retries), (2, 0));
    support::received(&subject).await;
    assert_eq!(
        support::received_count(&subject).await,
        2,
        "each recipient once"
    );
    controller.stop().await;
}

#[tokio::test]
async fn an_idempotent_service_sends_an_interrupted_at_most_once_message_again() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Resend, "idempotent", fixtures::VALID_API_KEY).await;
    let message = interrupted_message(&scene, "api", "resend interrupted", "AtMostOnce").await;
    scene.wait_phase("interrupted", Phase::Sent).await;
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 1);
    let key = accepted[0].headers.get("idempotency-key").expect("key");
    let identity = mailroom::ledger::Identity::of(&message);
    assert_eq!(key, &format!("mailroom/{}", identity.as_str()));
    controller.stop().await;
}

/// The phase of every status `created` goes through until Sent (at its
/// first attempt), as a watch from its create delivers them: nothing
/// written is missed.
async fn phases_until_sent(scene: &Scene, created: &EmailMessage) -> Vec<Option<Phase>> {
    let api: Api<EmailMessage> = Api::namespaced(scene.client.clone(), &scene.ns);
    let params = WatchParams::default().fields(&format!("metadata.name={}", created.name_any()));
    let version = created.resource_version().expect("resourceVersion");
    let mut versions = Box::pin(api.watch(&params, &version).await.expect("watch"));
    let mut phases = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), versions.try_next())
        .await
        .expect("the message Sent within 30 s")
        .expect("watch")
    {
        if let WatchEvent::Modified(message) = event {
            let status = message.status.unwrap_or_default();
            phases.push(status.phase);
            if status.phase == Some(Phase::Sent) {
                assert_eq!(status.attempts, 1);
                break;
            }
        }
    }
    phases
}

#[tokio::test]
async fn an_idempotent_service_is_sent_with_one_status_write_and_no_claim() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::Resend, "one-write", fixtures::VALID_API_KEY).await;
    scene.wait_provider("api", "Configured").await;
    let created = scene.note("once", "api", "resend, one write").await;
    assert_eq!(
        phases_until_sent(&scene, &created).await,
        [Some(Phase::Sent)],
        "one status write, the outcome: Resend drops a repeat by its Idempotency-Key, so no claim"
    );
    assert_eq!(fake.accepted().len(), 1);
    controller.stop().await;
}

#[tokio::test]
async fn a_suspended_provider_holds_its_messages_until_resumed() {
    let scene = Scene::new("suspend").await;
    scene.mailpit_provider().await;
    let providers: Api<mailroom::api::EmailProvider> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    providers
        .patch(
            "mailpit",
            &PatchParams::default(),
            &Patch::Merge(&suspend(true)),
        )
        .await
        .expect("suspend");
    let controller = scene.controller().await;
    let subject = support::unique("suspended");
    scene.note("held", "mailpit", &subject).await;
    let held = scene.wait_reason("held", "Suspended").await;
    assert_eq!(held.status.expect("status").attempts, 0);
    assert_eq!(support::received_count(&subject).await, 0);

    providers
        .patch(
            "mailpit",
            &PatchParams::default(),
            &Patch::Merge(&suspend(false)),
        )
        .await
        .expect("resume");
    scene.wait_phase("held", Phase::Sent).await;
    support::received(&subject).await;
    controller.stop().await;
}

#[tokio::test]
async fn a_rate_limit_spaces_the_sends_and_fails_none() {
    let fake = Fake::start(Config::with_key("k")).await.expect("fake");
    let scene = Scene::new("rate-limit").await;
    scene.api_provider(Service::Postmark, &fake.url, "k").await;
    let providers: Api<mailroom::api::EmailProvider> =
        Api::namespaced(scene.client.clone(), &scene.ns);
    let limit = json!({"spec": {"rateLimit": {"messagesPerSecond": 2, "burst": 1}}});
    providers
        .patch("api", &PatchParams::default(), &Patch::Merge(&limit))
        .await
        .expect("rate limit");
    let controller = scene.controller().await;
    scene.wait_provider("api", "Verified").await;
    let count = 6;
    for i in 0..count {
        scene
            .note(&format!("m{i}"), "api", &format!("limited {i}"))
            .await;
    }
    for i in 0..count {
        scene.wait_phase(&format!("m{i}"), Phase::Sent).await;
    }
    let mut times: Vec<_> = fake.accepted().into_iter().map(|r| r.at).collect();
    times.sort();
    assert_eq!(times.len(), count);
    let span = times[count - 1].duration_since(times[0]).expect("ordered");
    // 2 per second with a burst of 1: six sends need at least 2.5 s.
    assert!(
        span >= Duration::from_millis(2400),
        "six sends within {span:?}"
    );
    controller.stop().await;
}

#[tokio::test]
async fn a_message_gives_up_after_its_own_max_attempts() {
    let (scene, fake, controller) =
        fixtures::api_scene(Service::SendGrid, "max-attempts", fixtures::VALID_API_KEY).await;
    scene.wait_provider("api", "Verified").await;
    fake.fail_next(Failure {
        status: 503,
        retry_after: None,
        times: 10,
        delay: Duration::ZERO,
    });
    let spec = json!({"providerRef": {"name": "api"}, "to": ["x@example.org"], "subject": "s", "text": "t",
                      "retry": {"maxAttempts": 2}});
    scene.message("stubborn", spec).await;
    let failed = scene.wait_phase("stubborn", Phase::Failed).await;
    let status = failed.status.expect("status");
    assert_eq!(status.attempts, 2);
    assert!(
        status.conditions[0]
            .message
            .starts_with("gave up after 2 attempts"),
        "{}",
        status.conditions[0].message
    );
    assert_eq!(fake.posts().len(), 2);
    controller.stop().await;
}

#[tokio::test]
async fn a_waiting_message_ends_when_its_deadline_passes() {
    let scene = Scene::new("deadline").await;
    let controller = scene.controller().await;
    let spec = json!({"providerRef": {"name": "never-created"}, "to": ["x@example.org"], "subject": "s",
                      "text": "t", "retry": {"deadlineSeconds": 2}});
    scene.message("late", spec).await;
    scene.wait_reason("late", "ProviderNotFound").await;
    let failed = scene.wait_phase("late", Phase::Failed).await;
    assert_eq!(fixtures::sent_reason(&failed), "DeadlineExceeded");
    controller.stop().await;
}

/// Message `interrupted` with `spec`, left as a controller that died
/// mid-send leaves it now: its status untouched, its attempt 1 listed in
/// the namespace's claim journal.
async fn journaled_with_no_result(scene: &Scene, spec: serde_json::Value) -> EmailMessage {
    let message = scene.message("interrupted", spec).await;
    let journal: EmailJournal = serde_json::from_value(json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailJournal",
        "metadata": {"name": JOURNAL_NAME, "namespace": scene.ns},
        "spec": {"count": 1, "claims": [{"name": "interrupted", "uid": message.uid().expect("uid"),
                                          "attempt": 1, "claimed": "2026-01-01T00:00:00Z"}]}
    }))
    .expect("journal");
    let journals: Api<EmailJournal> = Api::namespaced(scene.client.clone(), &scene.ns);
    journals
        .create(&PostParams::default(), &journal)
        .await
        .expect("writing the journal");
    message
}

/// The claims the namespace's journal lists, once it lists `count`.
async fn journal_lists(scene: &Scene, count: usize) -> EmailJournal {
    let journals: Api<EmailJournal> = Api::namespaced(scene.client.clone(), &scene.ns);
    support::eventually(
        &format!("the claim journal listing {count} attempts"),
        Duration::from_secs(20),
        || async {
            let journal = journals.get_opt(JOURNAL_NAME).await.ok().flatten()?;
            (journal.spec.claims.len() == count).then_some(journal)
        },
    )
    .await
}

#[tokio::test]
async fn an_attempt_the_claim_journal_lists_is_interrupted_under_at_most_once() {
    let scene = Scene::new("journal-at-most-once").await;
    scene.mailpit_provider().await;
    let subject = support::unique("journal at most once");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject,
                      "text": "hi", "deliveryPolicy": "AtMostOnce"});
    journaled_with_no_result(&scene, spec).await;
    let controller = scene.controller().await;

    let unknown = scene.wait_phase("interrupted", Phase::Unknown).await;
    assert_eq!(fixtures::sent_reason(&unknown), "Interrupted");
    assert_eq!(unknown.status.clone().expect("status").attempts, 1);
    assert_eq!(support::received_count(&subject).await, 0, "not sent");
    // The attempt is resolved: it leaves the journal.
    journal_lists(&scene, 0).await;

    let sent = retried_until_sent(&scene).await;
    assert_eq!(sent.status.expect("status").attempts, 2);
    support::received(&subject).await;
    assert_eq!(support::received_count(&subject).await, 1);
    journal_lists(&scene, 0).await;
    controller.stop().await;
}

#[tokio::test]
async fn an_attempt_the_claim_journal_lists_is_counted_under_at_least_once() {
    let scene = Scene::new("journal-at-least-once").await;
    scene.mailpit_provider().await;
    let subject = support::unique("journal at least once");
    let spec = json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject,
                      "text": "hi"});
    journaled_with_no_result(&scene, spec).await;
    let controller = scene.controller().await;

    let sent = scene.wait_phase("interrupted", Phase::Sent).await;
    let status = sent.status.expect("status");
    assert_eq!(status.attempts, 2, "the interrupted attempt counts");
    assert!(
        status.conditions[0].message.contains("attempt 2"),
        "{}",
        status.conditions[0].message
    );
    support::received(&subject).await;
    assert_eq!(support::received_count(&subject).await, 1);
    journal_lists(&scene, 0).await;
    controller.stop().await;
}

/// A message sent over SMTP is claimed in the journal, not on itself: its
/// status is written once, with the outcome, and the journal lists nothing
/// once that is recorded.
#[tokio::test]
async fn a_message_is_claimed_in_the_journal_and_written_once() {
    let scene = Scene::new("journal-claim").await;
    scene.mailpit_provider().await;
    let controller = scene.controller().await;
    let subject = support::unique("journal claim");
    let created = scene.note("claimed", "mailpit", &subject).await;
    assert_eq!(
        phases_until_sent(&scene, &created).await,
        [Some(Phase::Sent)],
        "one status write, the outcome: the claim is in the journal"
    );
    support::received(&subject).await;
    assert_eq!(support::received_count(&subject).await, 1);
    let journal = journal_lists(&scene, 0).await;
    assert_eq!(journal.spec.count, 0);
    controller.stop().await;
}
