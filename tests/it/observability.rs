//! The controller binary's admin endpoints and logs: /livez, /readyz and
//! /metrics scraped and asserted after real sends, JSON logs with the
//! object's namespace and name, and no credential or message body in
//! anything it writes (logs, Events, status).

use crate::support;

use std::time::Duration;

use crate::support::fixtures::{ControllerProcess, Scene};
use mailroom::api::Phase;
use mailroom_fakes::{Config, Fake, Service};
use serde_json::{Value, json};

const API_KEY: &str = "KNOWN-API-KEY-c0ffee-4b1d";
const BODY_MARKER: &str = "BODY-MARKER-7e57-d00d";

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(res) => (res.status().as_u16(), res.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// The value of the metric line starting with `prefix`.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn probes_metrics_and_logs_tell_the_truth_and_keep_secrets() {
    let scene = Scene::new("observability").await;
    scene.mailpit_provider().await;
    let fake = Fake::start(Config::with_key(API_KEY)).await.expect("fake");
    scene
        .api_provider(Service::Postmark, &fake.url, API_KEY)
        .await;
    let port = support::free_port();
    let admin = format!("127.0.0.1:{port}");
    let base = format!("http://{admin}");
    let flags = [
        "--leader-election=false",
        // A Normal Event per Sent message too, so every writer is searched.
        "--sent-events=true",
        "--admin-addr",
        &admin,
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ];
    let mut controller = ControllerProcess::spawn(&scene.ns, "observed", &flags);

    support::eventually("/livez", Duration::from_secs(30), || async {
        (get(&format!("{base}/livez")).await.0 == 200).then_some(())
    })
    .await;
    support::eventually("/readyz", Duration::from_secs(30), || async {
        (get(&format!("{base}/readyz")).await.0 == 200).then_some(())
    })
    .await;

    let subject = support::unique("observed");
    let body = format!("{BODY_MARKER} the body");
    scene.message("leak", json!({"providerRef": {"name": "mailpit"}, "to": ["x@example.org"], "subject": subject, "text": body})).await;
    scene.message("api", json!({"providerRef": {"name": "api"}, "to": ["inactive@example.org"], "subject": "s", "text": body})).await;
    let nowhere = json!({"providerRef": {"name": "not-there"}, "to": ["x@example.org"], "subject": "s", "text": body});
    scene.message("waiting", nowhere).await;
    let leak = scene.wait_phase("leak", Phase::Sent).await;
    scene.wait_phase("api", Phase::Failed).await;
    // The apiserver records who wrote the status: mailroom, not `unknown`.
    let status_writers: Vec<_> = leak
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .map(|f| f.manager.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        status_writers,
        ["mailroom"],
        "{:?}",
        leak.metadata.managed_fields
    );

    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let ns = &scene.ns;
    let sent = metric(
        &metrics,
        &format!(
            "mailroom_messages_sent_total{{namespace=\"{ns}\",provider=\"mailpit\",transport=\"SMTP\"}}"
        ),
    );
    assert_eq!(sent, Some(1.0), "{metrics}");
    let failed = metric(
        &metrics,
        &format!(
            "mailroom_messages_failed_total{{namespace=\"{ns}\",provider=\"api\",reason=\"Rejected\"}}"
        ),
    );
    assert_eq!(failed, Some(1.0), "{metrics}");
    assert!(
        metric(
            &metrics,
            "mailroom_send_duration_seconds_count{transport=\"SMTP\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let ready = metric(
        &metrics,
        &format!(
            "mailroom_provider_ready{{namespace=\"{ns}\",provider=\"mailpit\",transport=\"SMTP\"}}"
        ),
    );
    assert_eq!(ready, Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "mailroom_leader "), Some(1.0), "{metrics}");
    let errors = metric(
        &metrics,
        "mailroom_reconcile_errors_total{controller=\"EmailMessage\"}",
    );
    assert!(errors.is_some(), "{metrics}");
    let waiting = format!(
        "mailroom_messages_waiting{{namespace=\"{ns}\",provider=\"not-there\",reason=\"ProviderNotFound\"}}"
    );
    let waiting = support::eventually("the waiting gauge", Duration::from_secs(15), || async {
        metric(&get(&format!("{base}/metrics")).await.1, &waiting).filter(|n| *n == 1.0)
    })
    .await;
    assert_eq!(waiting, 1.0);
    // What the alerts read: the oldest wait, the slot share, the ledger.
    let oldest = format!(
        "mailroom_messages_waiting_oldest_seconds{{namespace=\"{ns}\",provider=\"not-there\"}}"
    );
    let metrics = support::eventually("the ledger gauge", Duration::from_secs(15), || async {
        let metrics = get(&format!("{base}/metrics")).await.1;
        metric(&metrics, "mailroom_ledger_entries ")
            .is_some_and(|n| n == 1.0)
            .then_some(metrics)
    })
    .await;
    assert!(metric(&metrics, &oldest).is_some(), "{metrics}");
    let share = mailroom::controller::Settings::default().max_concurrent_sends / 4;
    assert_eq!(
        metric(&metrics, "mailroom_send_slots_per_provider "),
        Some(share as f64),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "mailroom_ledger_writes ").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    // The message went out over SMTP: claimed in the journal first.
    assert!(
        metric(&metrics, "mailroom_journal_writes ").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "mailroom_journal_claims ").is_some(),
        "{metrics}"
    );

    let exit = controller.terminate();
    assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");

    // Everything it wrote: its log, the namespace's Events, every status.
    let log_path = support::env()
        .dir
        .join("logs")
        .join(format!("controller-{ns}-observed.log"));
    let log = std::fs::read_to_string(&log_path).expect("the controller log");
    let mut sent_line = None;
    for line in log.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if value["fields"]["message"] == "sent" || value["message"] == "sent" {
            sent_line = Some(value);
        }
    }
    let sent_line = sent_line.expect("a 'sent' log line");
    let span = sent_line["span"].clone();
    assert_eq!(span["namespace"], json!(ns), "{sent_line}");
    assert_eq!(span["email"], "leak", "{sent_line}");
    assert!(
        span["trace_id"].as_str().is_some_and(|t| t.len() == 16),
        "a trace id: {sent_line}"
    );

    let events = support::kubectl(
        &support::env().kubeconfig,
        &["get", "events", "-n", ns, "-o", "json"],
    );
    let events = String::from_utf8(events.stdout).expect("utf-8");
    let mut statuses = String::new();
    for kind in ["emailmessages", "emailproviders"] {
        let out = support::kubectl(
            &support::env().kubeconfig,
            &["get", kind, "-n", ns, "-o", "json"],
        );
        let list: Value = serde_json::from_slice(&out.stdout).expect("list");
        for item in list["items"].as_array().expect("items") {
            statuses.push_str(&item["status"].to_string());
        }
    }
    let password = &support::env().smtp_password;
    for (what, text) in [
        ("the log", &log),
        ("the Events", &events),
        ("the status", &statuses),
    ] {
        assert!(
            !text.contains(password.as_str()),
            "the SMTP password is in {what}"
        );
        assert!(!text.contains(API_KEY), "the API key is in {what}");
        assert!(!text.contains(BODY_MARKER), "a message body is in {what}");
    }
    assert!(
        log.len() > 1000 && events.contains("Sent"),
        "the search covered real output"
    );
}

#[tokio::test]
async fn sent_messages_get_no_event_by_default_while_failures_still_get_one() {
    use support::fixtures::{self, RunningController};
    let scene = Scene::new("quiet-events").await;
    scene.mailpit_provider().await;
    let controller = RunningController::start_with_settings(
        scene.client.clone(),
        support::fixtures::settings(&scene.ns),
    );
    let subject = support::unique("no event");
    scene.note("quiet", "mailpit", &subject).await;
    scene
        .message(
            "broken",
            json!({"providerRef": {"name": "mailpit"}, "to": ["two..dots@example.org"], "subject": "s", "text": "t"}),
        )
        .await;
    scene.wait_phase("quiet", Phase::Sent).await;
    scene.wait_phase("broken", Phase::Failed).await;
    support::received(&subject).await;
    let failed = support::eventually("the Failed event", Duration::from_secs(10), || async {
        let events = fixtures::events_for(&scene.client, &scene.ns, "broken").await;
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "Failed")
            .then_some(())
    });
    failed.await;
    let quiet = fixtures::events_for(&scene.client, &scene.ns, "quiet").await;
    assert!(quiet.is_empty(), "no Sent event: {quiet:?}");
    controller.stop().await;
}

#[tokio::test]
async fn a_run_of_sends_logs_no_warning() {
    let scene = Scene::new("quiet-log").await;
    scene.mailpit_provider().await;
    let flags = ["--leader-election=false", "--log-format", "json"];
    let mut controller = ControllerProcess::spawn(&scene.ns, "quiet", &flags);
    let subject = support::unique("quiet log");
    for i in 0..12 {
        scene.note(&format!("m{i}"), "mailpit", &subject).await;
    }
    for i in 0..12 {
        scene.wait_phase(&format!("m{i}"), Phase::Sent).await;
    }
    // One more, sent after the others finished: their reconciles queued
    // behind it have run by the time it is Sent.
    scene.note("last", "mailpit", &subject).await;
    scene.wait_phase("last", Phase::Sent).await;
    assert_eq!(support::received(&subject).await.len(), 13);
    let exit = controller.terminate();
    assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");

    let log_path = support::env()
        .dir
        .join("logs")
        .join(format!("controller-{}-quiet.log", scene.ns));
    let log = std::fs::read_to_string(&log_path).expect("the controller log");
    let mut lines = 0;
    for line in log.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        lines += 1;
        let level = value["level"].as_str().unwrap_or_default();
        assert!(
            level != "WARN" && level != "ERROR",
            "a run of sends logged a {level}: {line}"
        );
    }
    assert!(lines > 0, "the controller logged something");
}
