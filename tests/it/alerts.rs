//! The chart's alerting rules: valid for Prometheus, passing their unit
//! tests under promtool (built from the Prometheus module), shipped verbatim
//! in the chart's PrometheusRule, and written against series named and
//! labelled as the operator's own /metrics are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use mailroom::api::EmailProvider;
use mailroom::api::ProviderId;
use mailroom::metrics::Metrics;
use serde_json::Value;

use crate::support;

const RULES: &str = "charts/mailroom/files/alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yaml";
/// Labels Prometheus adds to every scraped series (the target's).
const TARGET_LABELS: &[&str] = &["pod", "instance", "job"];

fn promtool(args: &[&str]) -> String {
    let out = Command::new(support::tools_bin().join("promtool"))
        .args(args)
        .current_dir(support::root())
        .output()
        .expect("promtool (make tools builds it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every series the operator exports: metric name → its label names.
fn exported() -> HashMap<String, BTreeSet<String>> {
    let metrics = Metrics::default();
    let provider: EmailProvider = serde_json::from_value(serde_json::json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
        "metadata": {"name": "relay", "namespace": "shop"},
        "spec": {"smtp": {"host": "smtp.example.org"}}
    }))
    .expect("a provider");
    let id = ProviderId::from_provider(&provider);
    metrics.count_sent("shop", "relay", "SMTP");
    metrics.count_failed("shop", "relay", "Rejected");
    metrics.set_provider_ready("shop", "relay", "SMTP", false);
    metrics.set_leader(true);
    metrics.set_send_slots(&id, 8);
    metrics.set_send_slots_limit(&id, 16);
    metrics.set_slots_per_provider(8);
    metrics.set_waiting_oldest([(("shop".into(), "relay".into()), 60.0)].into());
    metrics.count_webhook_refused(&id, "Postmark", "Credentials");
    metrics.observe_send("SMTP", Duration::from_millis(5));
    metrics.set_tenant_usage(&id, "staging", &Default::default(), true);
    let mut series: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in metrics.encode().lines().filter(|l| !l.starts_with('#')) {
        let (name, labels) = parse_series(line.split(' ').next().unwrap_or_default());
        series.entry(name).or_default().extend(labels.into_keys());
    }
    series
}

/// `name{a="x",b="y"}` → the name and its labels.
fn parse_series(text: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = text.split_once('{').unwrap_or((text, ""));
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_string(), value.trim_matches('"').to_string()))
        })
        .collect();
    (name.to_string(), labels)
}

#[test]
fn the_rule_tests_use_series_shaped_like_the_operators_metrics() {
    let exported = exported();
    let tests: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(support::root().join(RULE_TESTS)).expect("rule tests"),
    )
    .expect("yaml");
    let mut used = 0;
    for test in tests["tests"].as_array().expect("tests") {
        for input in test["input_series"].as_array().expect("input_series") {
            let (name, labels) = parse_series(input["series"].as_str().expect("series"));
            let known = exported
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not a metric the operator exports"));
            let own: BTreeSet<String> = labels
                .into_keys()
                .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
                .collect();
            assert_eq!(&own, known, "{name}: the labels the operator exports");
            used += 1;
        }
    }
    assert!(used >= 10, "the tests feed {used} series");
}

#[test]
fn the_chart_ships_the_rules_verbatim() {
    let chart = support::root().join("charts/mailroom");
    let out = Command::new(support::tools_bin().join("helm"))
        .args(["template", "mailroom", chart.to_str().expect("path")])
        .args(["--set", "metrics.prometheusRule.enabled=true"])
        .args([
            "--set",
            "metrics.prometheusRule.labels.release=kube-prometheus",
        ])
        .args(["--show-only", "templates/prometheusrule.yaml"])
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Value = serde_yaml_ng::from_slice(&out.stdout).expect("yaml");
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(support::root().join(RULES)).expect("rules"),
    )
    .expect("yaml");
    assert_eq!(rendered["kind"], "PrometheusRule");
    assert_eq!(rendered["metadata"]["labels"]["release"], "kube-prometheus");
    assert_eq!(rendered["spec"], rules);
}
