//! Prometheus metrics: what was sent and failed, how long sends take, what
//! waits and why (and the oldest wait), reconcile errors, rate-limit waits,
//! provider readiness, leadership, the send slots and slow attempts, the
//! ledger, the delivery webhooks (events, refusals, unknown ids, answers,
//! response times, the writer's queue), delivery outcomes, and what the
//! bounce mailboxes held. Served as Prometheus text on the admin server's
//! `/metrics`. Every metric is written through a method of `Metrics` that
//! builds its labels.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::ProviderId;

/// A provider: its namespace, name and transport (SMTP, Resend, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    /// The provider's namespace.
    namespace: String,
    /// The provider's name.
    provider: String,
    /// The transport, e.g. `SMTP` or `Resend`.
    transport: String,
}

/// An HTTP answer's status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    /// The status code, e.g. `404`.
    code: String,
}

/// How an unsubscribe came and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnsubscribeLabels {
    /// `link` (the hosted one-click POST), `mail` (to the bounce mailbox)
    /// or `service` (a service's unsubscribe event).
    how: String,
    /// `recorded`, `already` (recorded before), `invalid` (a token that
    /// does not open), `limited` (over the namespace's rate), `refused`
    /// (an address the schema refuses) or `failed`.
    outcome: String,
}

/// What a message found in a bounce mailbox was.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailboxLabels {
    /// `hard_bounce`, `soft_bounce`, `delayed`, `delivered`, `complaint`,
    /// `auto_reply`, `malformed`, `foreign`, `unmatched` or `other`.
    kind: String,
}

/// A provider by namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    /// The provider's namespace (empty for a ClusterEmailProvider).
    namespace: String,
    /// The provider's name.
    provider: String,
}

/// A namespace's use of a provider, by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    /// The sending namespace.
    namespace: String,
    /// The provider (`ClusterEmailProvider/name` for a cluster one).
    provider: String,
    /// `sent`, `failed`, `bounced` or `complained`.
    outcome: String,
}

/// A provider and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// The provider's namespace.
    namespace: String,
    /// The provider's name.
    provider: String,
    /// The condition reason, e.g. `Rejected` or `ProviderNotReady`.
    reason: String,
}

/// A transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    /// The transport, e.g. `SMTP`.
    transport: String,
}

/// A provider whose webhook was called, and its service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    provider: String,
    /// The service, e.g. `Resend`.
    service: String,
}

/// A webhook provider and an event type or refusal reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookDetailLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    provider: String,
    /// The service, e.g. `Resend`.
    service: String,
    /// The event type (`Delivered`, ..., `Ignored`) or why a request was
    /// refused (`Mismatch`, `Stale`, `Missing`, `Malformed`, `Credentials`).
    detail: String,
}

/// A provider and the phase its message moved to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// The provider: `namespace/name`, or `ClusterEmailProvider/name`.
    provider: String,
    /// `Delivered`, `Bounced` or `Complained`.
    phase: String,
}

/// A reconciler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    /// `EmailMessage` or `EmailProvider`.
    controller: String,
}

/// Every metric mailroom exports.
pub struct Metrics {
    registry: Registry,
    /// Messages the server accepted.
    sent: Family<ProviderLabels, Counter>,
    /// Messages that ended Failed or Unknown, by reason.
    failed: Family<ReasonLabels, Counter>,
    /// Time from the start of a send to the server's answer.
    send_seconds: Family<TransportLabels, Histogram>,
    /// Messages waiting now, by reason (Pending).
    waiting: Family<ReasonLabels, Gauge>,
    /// Reconciles that failed (Kubernetes API errors) and are retried.
    reconcile_errors: Family<ControllerLabels, Counter>,
    /// Times a message was held back by its provider's rate limit.
    rate_limit_waits: Family<ProviderLabels, Counter>,
    /// 1 when the provider is Ready, else 0.
    provider_ready: Family<ProviderLabels, Gauge>,
    /// 1 while this replica leads (or runs without leader election).
    leader: Gauge,
    /// Acknowledged webhook events, by provider and type.
    webhook_events: Family<WebhookDetailLabels, Counter>,
    /// Webhook requests refused for their signature or credentials.
    webhook_refused: Family<WebhookDetailLabels, Counter>,
    /// Webhook events about messages mailroom does not know (acknowledged).
    webhook_unknown: Family<WebhookLabels, Counter>,
    /// Time from a webhook request's arrival to its answer.
    webhook_seconds: Family<WebhookLabels, Histogram>,
    /// Webhook writes queued or under way.
    webhook_queue: Gauge,
    /// Messages moved to Delivered, Bounced or Complained by webhook events.
    delivery_outcomes: Family<OutcomeLabels, Counter>,
    /// Send slots a provider holds now.
    send_slots: Family<SlotLabels, Gauge>,
    /// The most send slots a provider may hold: its share, or an SMTP
    /// provider's pool when that is smaller.
    send_slots_limit: Family<SlotLabels, Gauge>,
    /// Attempts that ran longer than their provider's timeoutSeconds.
    slow_attempts: Family<SlotLabels, Counter>,
    /// Webhook answers, by status code (404 unknown provider, 408 too slow,
    /// 413 too large, 503 busy or not ready, ...).
    webhook_answers: Family<AnswerLabels, Counter>,
    /// Messages read from bounce mailboxes, by what they were.
    mailbox_messages: Family<MailboxLabels, Counter>,
    /// Unsubscribes, by how they came and what became of them.
    unsubscribes: Family<UnsubscribeLabels, Counter>,
    /// Age of the oldest message waiting (Pending, not Scheduled).
    waiting_oldest: Family<SlotLabels, Gauge>,
    /// 1 while a provider's circuit breaker is open, else 0.
    breaker_open: Family<SlotLabels, Gauge>,
    /// Messages moved on from a provider of their route, by that provider.
    failovers: Family<SlotLabels, Counter>,
    /// Each namespace's messages through each provider, by outcome (the
    /// totals of its EmailUsage).
    tenant_messages: Family<TenantLabels, Gauge>,
    /// 1 while a namespace's sends through a provider are held for its
    /// bounce or complaint rate.
    tenant_held: Family<SlotLabels, Gauge>,
    /// The most send slots one provider may hold.
    slots_per_provider: Gauge,
    /// Entries in the ledger of what was sent.
    ledger_entries: Gauge,
    /// Ledger pages written (created or appended to).
    ledger_writes: Gauge,
    /// Attempts the claim journal lists.
    journal_claims: Gauge,
    /// Claim journal writes since start.
    journal_writes: Gauge,
}

fn provider_labels(namespace: &str, provider: &str, transport: &str) -> ProviderLabels {
    ProviderLabels {
        namespace: namespace.to_string(),
        provider: provider.to_string(),
        transport: transport.to_string(),
    }
}

fn slot_labels(provider: &ProviderId) -> SlotLabels {
    SlotLabels {
        namespace: provider.namespace().to_string(),
        provider: provider.name().to_string(),
    }
}

fn webhook_labels(provider: &ProviderId, service: &str) -> WebhookLabels {
    WebhookLabels {
        provider: provider.to_string(),
        service: service.to_string(),
    }
}

fn webhook_detail(provider: &ProviderId, service: &str, detail: &str) -> WebhookDetailLabels {
    WebhookDetailLabels {
        provider: provider.to_string(),
        service: service.to_string(),
        detail: detail.to_string(),
    }
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
        let send_slots_limit = Family::default();
        let slow_attempts = Family::default();
        let webhook_answers = Family::default();
        let mailbox_messages = Family::default();
        let unsubscribes = Family::default();
        registry.register(
            "unsubscribes",
            "Unsubscribes by how they came (link, mail, service) and what became of them (recorded, already, invalid, limited, refused, failed)",
            unsubscribes.clone(),
        );
        registry.register(
            "bounce_mailbox_messages",
            "Messages read from SMTP providers' bounce mailboxes, by what they were (each counted once)",
            mailbox_messages.clone(),
        );
        let waiting_oldest = Family::default();
        let breaker_open = Family::default();
        registry.register(
            "provider_breaker_open",
            "1 while the provider's circuit breaker is open (EmailRoutes pass it over), else 0",
            breaker_open.clone(),
        );
        let failovers = Family::default();
        registry.register(
            "failovers",
            "Messages moved on from a provider of their EmailRoute after an attempt through it certainly did not deliver, by that provider",
            failovers.clone(),
        );
        let tenant_messages = Family::default();
        registry.register(
            "tenant_messages",
            "Each namespace's messages through each provider, by outcome (its EmailUsage totals)",
            tenant_messages.clone(),
        );
        let tenant_held = Family::default();
        registry.register(
            "tenant_held",
            "1 while a namespace's sends through a provider are held for its bounce or complaint rate (ReputationHold)",
            tenant_held.clone(),
        );
        let slots_per_provider = Gauge::default();
        let ledger_entries = Gauge::default();
        let ledger_writes = Gauge::default();
        let journal_claims = Gauge::default();
        let journal_writes = Gauge::default();
        registry.register(
            "messages_waiting_oldest_seconds",
            "Age of the oldest message waiting (Pending for any reason but Scheduled), by provider",
            waiting_oldest.clone(),
        );
        registry.register(
            "send_slots_per_provider",
            "The most send slots one provider may hold (a quarter of --max-concurrent-sends)",
            slots_per_provider.clone(),
        );
        registry.register(
            "ledger_entries",
            "Sent messages the ledger remembers (EmailLedger entries)",
            ledger_entries.clone(),
        );
        registry.register(
            "ledger_writes",
            "EmailLedger pages written (created or appended to) since start",
            ledger_writes.clone(),
        );
        registry.register(
            "journal_claims",
            "Send attempts the claim journal lists (under way, or left by an earlier process), all namespaces",
            journal_claims.clone(),
        );
        registry.register(
            "journal_writes",
            "EmailJournal writes (each carrying the claims of the moment) since start",
            journal_writes.clone(),
        );
        registry.register(
            "webhook_answers",
            "Webhook answers by status code (404 no such provider, 408 too slow, 413 body too large, 503 busy or not ready)",
            webhook_answers.clone(),
        );
        registry.register(
            "send_slots_in_use",
            "Send slots a provider holds now (a provider may hold a quarter of --max-concurrent-sends, a namespace half of what can be in flight)",
            send_slots.clone(),
        );
        registry.register(
            "send_slots_limit",
            "The most send slots a provider may hold: a quarter of --max-concurrent-sends, or the connections an SMTP provider's pool allows now (16 at first, up to pool.maxConnections) when fewer",
            send_slots_limit.clone(),
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
            send_slots_limit,
            slow_attempts,
            webhook_answers,
            mailbox_messages,
            unsubscribes,
            waiting_oldest,
            breaker_open,
            failovers,
            tenant_messages,
            tenant_held,
            slots_per_provider,
            ledger_entries,
            ledger_writes,
            journal_claims,
            journal_writes,
        }
    }
}

/// Each metric is written through a method that builds its own labels, so
/// a label set is spelled once.
impl Metrics {
    /// A message the server accepted, by the message's namespace, provider
    /// and transport.
    pub fn count_sent(&self, namespace: &str, provider: &str, transport: &str) {
        self.sent
            .get_or_create(&provider_labels(namespace, provider, transport))
            .inc();
    }

    /// A message that ended Failed or Unknown, by reason.
    pub fn count_failed(&self, namespace: &str, provider: &str, reason: &str) {
        let labels = ReasonLabels {
            namespace: namespace.to_string(),
            provider: provider.to_string(),
            reason: reason.to_string(),
        };
        self.failed.get_or_create(&labels).inc();
    }

    /// How long a send through `transport` took.
    pub fn observe_send(&self, transport: &str, elapsed: Duration) {
        let labels = TransportLabels {
            transport: transport.to_string(),
        };
        self.send_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The messages waiting now, by (namespace, provider, reason); every
    /// count before is replaced.
    pub fn set_waiting(&self, counts: HashMap<(String, String, String), i64>) {
        self.waiting.clear();
        for ((namespace, provider, reason), n) in counts {
            let labels = ReasonLabels {
                namespace,
                provider,
                reason,
            };
            self.waiting.get_or_create(&labels).set(n);
        }
    }

    /// The age of each provider's oldest waiting message, by (namespace,
    /// provider); every value before is replaced.
    pub fn set_waiting_oldest(&self, ages: HashMap<(String, String), f64>) {
        self.waiting_oldest.clear();
        for ((namespace, provider), age) in ages {
            let labels = SlotLabels {
                namespace,
                provider,
            };
            self.waiting_oldest.get_or_create(&labels).set(age as i64);
        }
    }

    /// The most send slots one provider may hold.
    pub fn set_slots_per_provider(&self, slots: usize) {
        self.slots_per_provider
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// The ledger's entries and writes so far.
    pub fn set_ledger(&self, entries: usize, writes: u64) {
        self.ledger_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.ledger_writes
            .set(i64::try_from(writes).unwrap_or(i64::MAX));
    }

    /// The claim journal's listed attempts and writes so far.
    pub fn set_journal(&self, claims: usize, writes: u64) {
        self.journal_claims
            .set(i64::try_from(claims).unwrap_or(i64::MAX));
        self.journal_writes
            .set(i64::try_from(writes).unwrap_or(i64::MAX));
    }

    /// A reconcile of `controller` (a kind) that failed and is retried.
    pub fn count_reconcile_error(&self, controller: &str) {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconcile_errors.get_or_create(&labels).inc();
    }

    /// A message held back by its provider's rate limit.
    pub fn count_rate_limit_wait(&self, namespace: &str, provider: &str, transport: &str) {
        self.rate_limit_waits
            .get_or_create(&provider_labels(namespace, provider, transport))
            .inc();
    }

    /// Whether a provider is Ready now.
    pub fn set_provider_ready(
        &self,
        namespace: &str,
        provider: &str,
        transport: &str,
        ready: bool,
    ) {
        self.provider_ready
            .get_or_create(&provider_labels(namespace, provider, transport))
            .set(i64::from(ready));
    }

    /// Whether `provider`'s circuit breaker is open now.
    pub fn set_breaker_open(&self, provider: &ProviderId, open: bool) {
        self.breaker_open
            .get_or_create(&slot_labels(provider))
            .set(i64::from(open));
    }

    /// A message moved on from `provider` to the next of its route.
    pub fn count_failover(&self, provider: &ProviderId) {
        self.failovers.get_or_create(&slot_labels(provider)).inc();
    }

    /// A namespace's usage of `provider` (its totals) and whether it is held.
    pub fn set_tenant_usage(
        &self,
        provider: &ProviderId,
        namespace: &str,
        totals: &crate::api::usage::UsageCounts,
        held: bool,
    ) {
        let outcomes = [
            ("sent", totals.sent),
            ("failed", totals.failed),
            ("bounced", totals.bounced),
            ("complained", totals.complained),
        ];
        for (outcome, count) in outcomes {
            let labels = TenantLabels {
                namespace: namespace.to_string(),
                provider: provider.to_string(),
                outcome: outcome.to_string(),
            };
            self.tenant_messages
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let labels = SlotLabels {
            namespace: namespace.to_string(),
            provider: provider.to_string(),
        };
        self.tenant_held.get_or_create(&labels).set(i64::from(held));
    }

    /// Whether this replica leads now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The send slots `provider` holds now.
    pub fn set_send_slots(&self, provider: &ProviderId, held: usize) {
        self.send_slots
            .get_or_create(&slot_labels(provider))
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// The most send slots `provider` may hold.
    pub fn set_send_slots_limit(&self, provider: &ProviderId, limit: usize) {
        self.send_slots_limit
            .get_or_create(&slot_labels(provider))
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// An attempt through `provider` that ran longer than its timeout.
    pub fn count_slow_attempt(&self, provider: &ProviderId) {
        self.slow_attempts
            .get_or_create(&slot_labels(provider))
            .inc();
    }

    /// `count` acknowledged webhook events of `event_type`.
    pub fn count_webhook_events(
        &self,
        provider: &ProviderId,
        service: &str,
        event_type: &str,
        count: u64,
    ) {
        self.webhook_events
            .get_or_create(&webhook_detail(provider, service, event_type))
            .inc_by(count);
    }

    /// A webhook request refused for `why` (its signature or credentials).
    pub fn count_webhook_refused(&self, provider: &ProviderId, service: &str, why: &str) {
        self.webhook_refused
            .get_or_create(&webhook_detail(provider, service, why))
            .inc();
    }

    /// `count` webhook events about messages mailroom does not know.
    pub fn count_webhook_unknown(&self, provider: &ProviderId, service: &str, count: u64) {
        self.webhook_unknown
            .get_or_create(&webhook_labels(provider, service))
            .inc_by(count);
    }

    /// How long a webhook request took to answer.
    pub fn observe_webhook(&self, provider: &ProviderId, service: &str, elapsed: Duration) {
        self.webhook_seconds
            .get_or_create(&webhook_labels(provider, service))
            .observe(elapsed.as_secs_f64());
    }

    /// The webhook writes queued or under way now.
    pub fn set_webhook_queue(&self, depth: i64) {
        self.webhook_queue.set(depth);
    }

    /// A message a webhook event moved to `phase`.
    pub fn count_delivery_outcome(&self, provider: &ProviderId, phase: &str) {
        let labels = OutcomeLabels {
            provider: provider.to_string(),
            phase: phase.to_string(),
        };
        self.delivery_outcomes.get_or_create(&labels).inc();
    }

    /// A webhook answer with status `code`.
    pub fn count_webhook_answer(&self, code: u16) {
        let labels = AnswerLabels {
            code: code.to_string(),
        };
        self.webhook_answers.get_or_create(&labels).inc();
    }

    /// Counts an unsubscribe: `how` it came, and its `outcome`.
    pub fn count_unsubscribe(&self, how: &str, outcome: &str) {
        let labels = UnsubscribeLabels {
            how: how.to_string(),
            outcome: outcome.to_string(),
        };
        self.unsubscribes.get_or_create(&labels).inc();
    }

    /// Counts a message read from a bounce mailbox.
    pub fn count_mailbox_message(&self, kind: &str) {
        let labels = MailboxLabels {
            kind: kind.to_string(),
        };
        self.mailbox_messages.get_or_create(&labels).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
