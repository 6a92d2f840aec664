//! Prometheus metrics: what was sent and failed, how long sends take, what
//! waits and why, reconcile errors, rate-limit waits, provider readiness,
//! leadership, and the delivery webhooks (events, refusals, unknown ids,
//! response times). Served as Prometheus text on the admin server's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A provider: its namespace, name and transport (SMTP, Resend, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// The provider's namespace.
    pub namespace: String,
    /// The provider's name.
    pub provider: String,
    /// The transport, e.g. `SMTP` or `Resend`.
    pub transport: String,
}

/// An HTTP answer's status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// The status code, e.g. `404`.
    pub code: String,
}

/// A provider by namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    /// The provider's namespace (empty for a ClusterEmailProvider).
    pub namespace: String,
    /// The provider's name.
    pub provider: String,
}

/// A provider and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The provider's namespace.
    pub namespace: String,
    /// The provider's name.
    pub provider: String,
    /// The condition reason, e.g. `Rejected` or `ProviderNotReady`.
    pub reason: String,
}

/// A transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// The transport, e.g. `SMTP`.
    pub transport: String,
}

/// A provider whose webhook was called, and its service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    pub provider: String,
    /// The service, e.g. `Resend`.
    pub service: String,
}

/// A webhook provider and an event type or refusal reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookDetailLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    pub provider: String,
    /// The service, e.g. `Resend`.
    pub service: String,
    /// The event type (`Delivered`, ..., `Ignored`) or why a request was
    /// refused (`Mismatch`, `Stale`, `Missing`, `Malformed`, `Credentials`).
    pub detail: String,
}

/// A provider and the phase its message moved to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    pub provider: String,
    /// `Delivered`, `Bounced` or `Complained`.
    pub phase: String,
}

/// A reconciler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `EmailMessage` or `EmailProvider`.
    pub controller: String,
}

/// Every metric mailroom exports.
pub struct Metrics {
    registry: Registry,
    /// Messages the server accepted.
    pub sent: Family<ProviderLabels, Counter>,
    /// Messages that ended Failed or Unknown, by reason.
    pub failed: Family<ReasonLabels, Counter>,
    /// Time from the start of a send to the server's answer.
    pub send_seconds: Family<TransportLabels, Histogram>,
    /// Messages waiting now, by reason (Pending).
    pub waiting: Family<ReasonLabels, Gauge>,
    /// Reconciles that failed (Kubernetes API errors) and are retried.
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    /// Times a message was held back by its provider's rate limit.
    pub rate_limit_waits: Family<ProviderLabels, Counter>,
    /// 1 when the provider is Ready, else 0.
    pub provider_ready: Family<ProviderLabels, Gauge>,
    /// 1 while this replica leads (or runs without leader election).
    pub leader: Gauge,
    /// Acknowledged webhook events, by provider and type.
    pub webhook_events: Family<WebhookDetailLabels, Counter>,
    /// Webhook requests refused for their signature or credentials.
    pub webhook_refused: Family<WebhookDetailLabels, Counter>,
    /// Webhook events about messages mailroom does not know (acknowledged).
    pub webhook_unknown: Family<WebhookLabels, Counter>,
    /// Time from a webhook request's arrival to its answer.
    pub webhook_seconds: Family<WebhookLabels, Histogram>,
    /// Webhook writes queued or under way.
    pub webhook_queue: Gauge,
    /// Messages moved to Delivered, Bounced or Complained by webhook events.
    pub delivery_outcomes: Family<OutcomeLabels, Counter>,
    /// Send slots a provider holds now.
    pub send_slots: Family<SlotLabels, Gauge>,
    /// Attempts that ran longer than their provider's timeoutSeconds.
    pub slow_attempts: Family<SlotLabels, Counter>,
    /// Webhook answers, by status code (404 unknown provider, 408 too slow,
    /// 413 too large, 503 busy or not ready, ...).
    pub webhook_answers: Family<AnswerLabels, Counter>,
}

fn send_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mailroom");
        let sent = Family::default();
        let failed = Family::default();
        let send_seconds = Family::new_with_constructor(send_buckets as fn() -> Histogram);
        let waiting = Family::default();
        let reconcile_errors = Family::default();
        let rate_limit_waits = Family::default();
        let provider_ready = Family::default();
        let leader = Gauge::default();
        let webhook_events = Family::default();
        let webhook_refused = Family::default();
        let webhook_unknown = Family::default();
        let webhook_seconds = Family::new_with_constructor(send_buckets as fn() -> Histogram);
        let webhook_queue = Gauge::default();
        let delivery_outcomes = Family::default();
        let send_slots = Family::default();
        let slow_attempts = Family::default();
        let webhook_answers = Family::default();
        registry.register(
            "webhook_answers",
            "Webhook answers by status code (404 no such provider, 408 too slow, 413 body too large, 503 busy or not ready)",
            webhook_answers.clone(),
        );
        registry.register(
            "send_slots_in_use",
            "Send slots a provider holds now (a provider may hold a quarter of --max-concurrent-sends, a namespace half)",
            send_slots.clone(),
        );
        registry.register(
            "send_attempts_over_timeout",
            "Send attempts that ran longer than their provider's timeoutSeconds (a slow or stalled server)",
            slow_attempts.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages the server accepted",
            sent.clone(),
        );
        registry.register(
            "messages_failed",
            "Messages that ended Failed or Unknown, by reason",
            failed.clone(),
        );
        registry.register(
            "send_duration_seconds",
            "Time from the start of a send to the server's answer",
            send_seconds.clone(),
        );
        registry.register(
            "messages_waiting",
            "Messages waiting now (Pending), by reason",
            waiting.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and are retried",
            reconcile_errors.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Times a message was held back by its provider's rate limit",
            rate_limit_waits.clone(),
        );
        registry.register(
            "provider_ready",
            "1 when the provider is Ready, else 0",
            provider_ready.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        registry.register(
            "webhook_events",
            "Acknowledged delivery webhook events, by provider and event type (Ignored: types not recorded)",
            webhook_events.clone(),
        );
        registry.register(
            "webhook_signature_failures",
            "Webhook requests refused for a missing, wrong or stale signature or credentials",
            webhook_refused.clone(),
        );
        registry.register(
            "webhook_unknown_messages",
            "Webhook events about messages mailroom does not know (acknowledged, not recorded)",
            webhook_unknown.clone(),
        );
        registry.register(
            "webhook_request_duration_seconds",
            "Time from a webhook request's arrival to its answer",
            webhook_seconds.clone(),
        );
        registry.register(
            "delivery_outcomes",
            "Messages moved to Delivered, Bounced or Complained by the services' webhook events",
            delivery_outcomes.clone(),
        );
        registry.register(
            "webhook_queue_depth",
            "Webhook status writes queued or under way",
            webhook_queue.clone(),
        );
        // Counters that should read 0 rather than be absent before anything happens.
        for controller in ["EmailMessage", "EmailProvider", "EmailTemplate"] {
            let _ = reconcile_errors.get_or_create(&ControllerLabels {
                controller: controller.into(),
            });
        }
        Self {
            registry,
            sent,
            failed,
            send_seconds,
            waiting,
            reconcile_errors,
            rate_limit_waits,
            provider_ready,
            leader,
            webhook_events,
            webhook_refused,
            webhook_unknown,
            webhook_seconds,
            webhook_queue,
            delivery_outcomes,
            send_slots,
            slow_attempts,
            webhook_answers,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
