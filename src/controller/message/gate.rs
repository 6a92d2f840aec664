//! The gate: decides, without any I/O, what happens to a message now, from
//! the object, the caches' view and the clock: send it, let it wait (and
//! why), end it (and why), or look again later. Every decision of the send
//! path that does not need the network is made here, in one order, so it
//! can be read top to bottom and tested as a table.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::clock::until;
use super::limits::Limits;
use super::{deliverability, email, fits};
use crate::api::condition::{self, READY, Reason, SENT};
use crate::api::message::{DeliveryPolicy, ProviderKind, RETRY_ANNOTATION};
use crate::api::origin::Origin;
use crate::api::tenancy::TenantPolicy;
use crate::api::{EmailMessage, EmailProvider, EmailTemplate, Phase};
use crate::compose::Email;
use crate::controller::access::Access;
use crate::controller::suppressions::Scope;
use crate::controller::tenants::{self, Guarded};
use crate::delivery::unsubscribe::keys::KeysError;
use crate::delivery::unsubscribe::token::KeyRing;
use crate::transport::Transport;

/// How soon a message looks again for a provider that is Ready but whose
/// transport this controller has not verified yet (just after a restart,
/// when the verification here may change nothing in the provider's status
/// and so wake nobody).
pub const TRANSPORT_WARMUP_RETRY: Duration = Duration::from_secs(2);
/// How soon a message looks again on its own for a provider whose first
/// verification is under way. Its status write wakes the message, and that
/// wake-up comes only once the provider cache holds the write (one shared
/// watch), so this is only a safety net.
pub const FIRST_VERIFICATION_RETRY: Duration = Duration::from_secs(30);

/// What the gate decided.
#[derive(Debug)]
pub enum Decision {
    /// Claim and send: the composed email, or `None` for a bulk message
    /// (each batch builds its own).
    Send(Option<Box<Email>>),
    /// Anything but a send.
    Stop(Stop),
}

/// A decision that sends nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Pending for `reason`; `until` schedules the next look (otherwise a
    /// change of what it waits for wakes it).
    Wait {
        /// Why it waits.
        reason: Reason,
        /// The condition's message.
        text: String,
        /// When to look again, if the wait has an end.
        until: Option<Duration>,
    },
    /// It ends: Failed, or Unknown (it may have been sent).
    End {
        /// Failed or Unknown.
        phase: Phase,
        /// Why.
        reason: Reason,
        /// The condition's message, naming the field where one is at fault.
        text: String,
    },
    /// Look again after this long, writing nothing.
    Requeue(Duration),
    /// Finished: nothing to do (its time to live is kept by `expiry`).
    Finished,
    /// A retry was asked of a finished message that is not Unknown.
    RefuseRetry(Phase),
    /// The same message was sent before (the ledger's entry): it ends Sent,
    /// reason AlreadySent.
    AlreadySent(Box<crate::ledger::Entry>),
}

/// What a verified transport can do, as the gate needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// The transport's name (smtp, resend, ...).
    pub name: &'static str,
    /// Whether a repeated send is recognised by the service (no duplicate).
    pub idempotent: bool,
    /// Whether the service keeps templates (spec.providerTemplate).
    pub stores_templates: bool,
}

impl Sender {
    /// The capabilities of `transport`.
    pub fn of(transport: &dyn Transport) -> Self {
        Self {
            name: transport.name(),
            idempotent: transport.idempotent(),
            stores_templates: transport.stores_templates(),
        }
    }
}

/// What the caches know, as the gate reads it.
pub struct View<'a> {
    /// The provider the message names, if it exists.
    pub provider: Option<&'a EmailProvider>,
    /// For a cluster-wide provider: whether the namespace may use it.
    pub access: Option<&'a Access>,
    /// `None` when no template is named; `Some(None)` when it is missing.
    pub template: Option<Option<&'a EmailTemplate>>,
    /// The provider's verified transport, if this controller has one.
    pub sender: Option<Sender>,
    /// The retry limits.
    pub limits: Limits,
    /// Whether this controller serves ClusterEmailProviders at all.
    pub serves_cluster_providers: bool,
    /// The provider's suppression list (`None`: none is read).
    pub suppressions: Option<&'a Scope>,
    /// For a message naming an EmailRoute that cannot send now: why.
    pub route: Option<&'a Stop>,
    /// The provider's policy for the message's namespace (`spec.tenants`).
    pub tenant: Option<&'a TenantPolicy>,
    /// The unsubscribe keys, when a hosted unsubscribe is in effect.
    pub unsubscribe_keys: Option<&'a Result<Arc<KeyRing>, KeysError>>,
}

/// For a finished message: what happens to it. `None` when it is not
/// finished, or is Unknown and a person asked to send it again.
pub fn settled(message: &EmailMessage) -> Option<Stop> {
    let phase = message.status.as_ref()?.phase?;
    let retry_requested = message.annotations().contains_key(RETRY_ANNOTATION);
    match phase {
        Phase::Unknown if retry_requested => None,
        Phase::Sent if retry_requested && already_sent(message) => None,
        phase if phase.is_finished() && retry_requested => Some(Stop::RefuseRetry(phase)),
        phase if phase.is_finished() => Some(Stop::Finished),
        _ => None,
    }
}

/// Whether `message` was not sent because the same message was sent before
/// (reason AlreadySent).
pub fn already_sent(message: &EmailMessage) -> bool {
    message
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, SENT))
        .is_some_and(|c| c.reason == Reason::AlreadySent)
}

/// Decides what happens to an unfinished message at `now`.
pub fn decide(message: &EmailMessage, view: &View<'_>, now: jiff::Timestamp) -> Decision {
    match check(message, view, now) {
        Ok(email) => Decision::Send(email),
        Err(stop) => Decision::Stop(stop),
    }
}

/// The checks in order; the first that stops the message says why.
fn check(
    message: &EmailMessage,
    view: &View<'_>,
    now: jiff::Timestamp,
) -> Result<Option<Box<Email>>, Stop> {
    // Never claim a message whose outcome could not be written.
    fits::check(message).map_err(invalid)?;
    deadline(message, &view.limits, now)?;
    if let Some(stop) = view.route {
        return Err(stop.clone());
    }
    let provider = view
        .provider
        .ok_or_else(|| waiting(Reason::ProviderNotFound, provider_missing(message, view)))?;
    if let Some(Access::Denied(text)) = view.access {
        return Err(end(Phase::Failed, Reason::Denied, text.clone()));
    }
    let template = template(message, view)?;
    if let Some(text) = deliverability::tracking_refusal(&message.spec, &provider.spec) {
        return Err(invalid(text));
    }
    if let Some(policy) = view.tenant {
        senders(message, provider, policy)?;
    }
    let keys = unsubscribe_keys(view)?;
    let mut email = compose(message, provider, template, keys)?;
    if let (Some(policy), Some(email)) = (view.tenant, email.as_mut())
        && let Guarded::Refused(text) = tenants::guard(email, policy, "")
    {
        return Err(end(Phase::Failed, Reason::RecipientNotAllowed, text));
    }
    // A dry run notes a future sendAt instead of waiting for it.
    if !message.spec.dry_run {
        schedule(message, now)?;
    }
    if provider.spec.suspend {
        let name = provider.name_any();
        let text = format!("EmailProvider {name:?} is suspended (spec.suspend)");
        return Err(waiting(Reason::Suspended, text));
    }
    if let (Some(email), Some(scope)) = (&email, view.suppressions) {
        suppressed(email, scope)?;
    }
    let sender = view.sender.ok_or_else(|| unverified(provider))?;
    let retry_at = message
        .status
        .as_ref()
        .and_then(|s| s.next_attempt_time.as_ref());
    if let Some(due) = retry_at.and_then(|t| until(t, now)) {
        return Err(Stop::Requeue(due));
    }
    interrupted(message, sender, &view.limits)?;
    if message.spec.provider_template.is_some() && !sender.stores_templates {
        let text = format!(
            "spec.providerTemplate: EmailProvider {:?} sends over {}, which keeps no templates; use a templateRef",
            provider.name_any(),
            sender.name
        );
        return Err(invalid(text));
    }
    Ok(email)
}

/// Ends a message whose sender (its own, or the provider's defaultFrom) or
/// reply-to the provider does not allow its namespace.
fn senders(
    message: &EmailMessage,
    provider: &EmailProvider,
    policy: &TenantPolicy,
) -> Result<(), Stop> {
    let from = message
        .spec
        .from
        .as_deref()
        .or(provider.spec.default_from.as_deref())
        .and_then(|f| f.parse::<lettre::message::Mailbox>().ok());
    let reply_to: Vec<lettre::message::Mailbox> = message
        .spec
        .reply_to
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    match tenants::sender_refusal(from.as_ref(), &reply_to, policy) {
        Some(text) => Err(end(Phase::Failed, Reason::SenderNotAllowed, text)),
        None => Ok(()),
    }
}

/// The unsubscribe keys when a hosted unsubscribe is in effect; a message
/// fails when the controller has no place for them, and waits while they
/// cannot be read or made.
fn unsubscribe_keys<'a>(view: &View<'a>) -> Result<Option<&'a KeyRing>, Stop> {
    match view.unsubscribe_keys {
        None => Ok(None),
        Some(Ok(keys)) => Ok(Some(keys)),
        Some(Err(e @ KeysError::Unset)) => Err(end(
            Phase::Failed,
            Reason::UnsubscribeUnavailable,
            format!("unsubscribe.hosted: {e}"),
        )),
        Some(Err(e)) => Err(waiting(
            Reason::UnsubscribeUnavailable,
            format!("unsubscribe.hosted: {e}"),
        )),
    }
}

/// Ends a message one of whose recipients is suppressed (the scope leaves
/// out the providers' lists when the message ignores them).
fn suppressed(email: &Email, scope: &Scope) -> Result<(), Stop> {
    let lists = [
        ("spec.to", &email.to),
        ("spec.cc", &email.cc),
        ("spec.bcc", &email.bcc),
    ];
    for (field, list) in lists {
        for (i, mailbox) in list.iter().enumerate() {
            if let Some(found) = scope.find(mailbox.email.as_ref()) {
                let text = found.explain(&format!("{field}[{i}]"));
                return Err(end(Phase::Failed, Reason::Suppressed, text));
            }
        }
    }
    Ok(())
}

fn invalid(text: String) -> Stop {
    end(Phase::Failed, Reason::InvalidRequest, text)
}

fn end(phase: Phase, reason: Reason, text: String) -> Stop {
    Stop::End {
        phase,
        reason,
        text,
    }
}

fn waiting(reason: Reason, text: String) -> Stop {
    Stop::Wait {
        reason,
        text,
        until: None,
    }
}

fn deadline(message: &EmailMessage, limits: &Limits, now: jiff::Timestamp) -> Result<(), Stop> {
    if !limits.passed(now) {
        return Ok(());
    }
    let attempts = message.status.as_ref().map_or(0, |s| s.attempts);
    let text = format!(
        "not sent before its deadline ({}) after {attempts} attempt(s)",
        limits.deadline.map(|d| d.to_string()).unwrap_or_default(),
    );
    Err(end(Phase::Failed, Reason::DeadlineExceeded, text))
}

fn provider_missing(message: &EmailMessage, view: &View<'_>) -> String {
    let name = &message.spec.provider_ref.name;
    let namespace = message.namespace().unwrap_or_default();
    match message.spec.provider_ref.kind {
        ProviderKind::EmailProvider => {
            format!("EmailProvider {name:?} not found in namespace {namespace:?}")
        }
        ProviderKind::ClusterEmailProvider if !view.serves_cluster_providers => format!(
            "ClusterEmailProvider {name:?}: this controller serves no ClusterEmailProviders (--cluster-provider-namespace is unset)"
        ),
        ProviderKind::ClusterEmailProvider => format!("ClusterEmailProvider {name:?} not found"),
        ProviderKind::EmailRoute => {
            format!("EmailRoute {name:?} not found in namespace {namespace:?}")
        }
    }
}

fn template<'a>(
    message: &EmailMessage,
    view: &View<'a>,
) -> Result<Option<&'a EmailTemplate>, Stop> {
    match (view.template, &message.spec.template_ref) {
        (Some(None), Some(template_ref)) => {
            let namespace = message.namespace().unwrap_or_default();
            let text = format!(
                "EmailTemplate {:?} not found in namespace {namespace:?}",
                template_ref.name
            );
            Err(waiting(Reason::TemplateNotFound, text))
        }
        (Some(found), _) => Ok(found),
        (None, _) => Ok(None),
    }
}

/// The email, rendered strictly before anything else happens; a bulk
/// message builds each recipient's email when its batch goes out.
fn compose(
    message: &EmailMessage,
    provider: &EmailProvider,
    template: Option<&EmailTemplate>,
    keys: Option<&KeyRing>,
) -> Result<Option<Box<Email>>, Stop> {
    if !message.spec.recipients.is_empty() {
        return Ok(None);
    }
    let key = send_key(message);
    let namespace = message.namespace().unwrap_or_default();
    let hosting = deliverability::Hosting {
        namespace: &namespace,
        keys,
    };
    let mut email =
        email::build(&message.spec, template, &provider.spec, &key, hosting).map_err(invalid)?;
    email.origin = Some(Origin::of(message, None));
    // A repeated attempt keeps the Message-ID of the first.
    if let Some(id) = message.status.as_ref().and_then(|s| s.message_id.clone()) {
        email.message_id = id;
    }
    Ok(Some(Box::new(email)))
}

/// The key every attempt sends with (the Message-ID's local part, the
/// Resend Idempotency-Key): derived from the message's identity, and new
/// when a person asked to send an already sent message again.
pub fn send_key(message: &EmailMessage) -> String {
    let again = already_sent(message) && message.annotations().contains_key(RETRY_ANNOTATION);
    crate::ledger::send_key(message, again)
}

fn schedule(message: &EmailMessage, now: jiff::Timestamp) -> Result<(), Stop> {
    let Some(send_at) = &message.spec.send_at else {
        return Ok(());
    };
    let Some(due) = until(send_at, now) else {
        return Ok(());
    };
    Err(Stop::Wait {
        reason: Reason::Scheduled,
        text: format!("scheduled: sendAt is {}", send_at.0),
        until: Some(due),
    })
}

/// A provider without a verified transport here: Ready elsewhere (or being
/// verified) looks again soon; not Ready waits, saying why.
fn unverified(provider: &EmailProvider) -> Stop {
    let ready = provider
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, READY));
    match ready {
        Some(c) if c.status != "True" => {
            let text = format!(
                "EmailProvider {:?} is not Ready: {}: {}",
                provider.name_any(),
                c.reason,
                c.message
            );
            waiting(Reason::ProviderNotReady, text)
        }
        Some(_) => Stop::Requeue(TRANSPORT_WARMUP_RETRY),
        None => Stop::Requeue(FIRST_VERIFICATION_RETRY),
    }
}

/// The previous attempt was claimed but never recorded: the controller
/// stopped in between, and nobody knows whether the server took it. Under
/// AtMostOnce (and a service that would not recognise the repeat) it ends
/// Unknown. Under AtLeastOnce it is sent again, unless it was the last
/// attempt allowed: a message whose sends keep bringing the controller down
/// is not sent again after every restart, without end. A bulk message
/// counts an attempt per batch, so for it the count is of its current
/// batch's stops in a row (`status.bulk.retries`, which each claim after an
/// interruption adds one to), this one included.
fn interrupted(message: &EmailMessage, sender: Sender, limits: &Limits) -> Result<(), Stop> {
    let status = message.status.as_ref();
    let was_sending = status.and_then(|s| s.phase) == Some(Phase::Sending);
    if !was_sending || sender.idempotent {
        return Ok(());
    }
    let attempts = status.map_or(0, |s| s.attempts);
    let max = limits.max_attempts;
    let batch_stops = status
        .and_then(|s| s.bulk.as_ref())
        .filter(|_| !message.spec.recipients.is_empty())
        .map(|bulk| bulk.retries + 1);
    let text = if message.spec.delivery_policy == DeliveryPolicy::AtMostOnce {
        format!(
            "attempt {attempts} was interrupted before its result was recorded; the server may or may not have the message. \
             Under AtMostOnce it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway"
        )
    } else if let Some(stops) = batch_stops.filter(|&stops| stops >= max) {
        format!(
            "the batch under way was cut off before its result was recorded, {stops} times in a row, the most maxAttempts ({max}) allows; \
             the server may or may not have it, so it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway"
        )
    } else if batch_stops.is_none() && attempts >= max {
        format!(
            "attempt {attempts} was interrupted before its result was recorded, and it was the last of the {max} allowed (maxAttempts); \
             the server may or may not have the message, so it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway"
        )
    } else {
        return Ok(());
    };
    Err(end(Phase::Unknown, Reason::Interrupted, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: i64 = 1_800_000_000;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(NOW).expect("time")
    }

    fn at(seconds_from_now: i64) -> String {
        jiff::Timestamp::from_second(NOW + seconds_from_now)
            .expect("time")
            .to_string()
    }

    /// A message created a minute ago; `change` edits its JSON first.
    fn message(change: impl FnOnce(&mut Value)) -> EmailMessage {
        let mut object = json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": "m", "namespace": "team", "uid": "u-1", "generation": 1,
                         "creationTimestamp": at(-60)},
            "spec": {"providerRef": {"name": "mail"}, "to": ["a@example.org"],
                     "subject": "s", "text": "t"}
        });
        change(&mut object);
        serde_json::from_value(object).expect("a message")
    }

    fn provider(change: impl FnOnce(&mut Value)) -> EmailProvider {
        let mut object = json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailProvider",
            "metadata": {"name": "mail", "namespace": "team"},
            "spec": {"defaultFrom": "app@example.org",
                     "smtp": {"host": "smtp.example.org", "port": 587}}
        });
        change(&mut object);
        serde_json::from_value(object).expect("a provider")
    }

    const SMTP: Sender = Sender {
        name: "smtp",
        idempotent: false,
        stores_templates: false,
    };

    /// The view of a healthy setup, changed by `edit`.
    fn decide_with<'a>(
        message: &EmailMessage,
        provider: Option<&'a EmailProvider>,
        edit: impl FnOnce(&mut View<'a>),
    ) -> Decision {
        let limits = Limits {
            max_attempts: 5,
            deadline: Some(
                now()
                    .checked_add(jiff::SignedDuration::from_secs(3600))
                    .expect("time"),
            ),
        };
        let mut view = View {
            provider,
            access: None,
            template: None,
            sender: Some(SMTP),
            limits,
            serves_cluster_providers: false,
            suppressions: None,
            route: None,
            tenant: None,
            unsubscribe_keys: None,
        };
        edit(&mut view);
        decide(message, &view, now())
    }

    /// What a decision says, in a form a table can hold.
    fn summary(decision: &Decision) -> String {
        match decision {
            Decision::Send(Some(_)) => "Send".into(),
            Decision::Send(None) => "Send bulk".into(),
            Decision::Stop(Stop::Wait { reason, until, .. }) => {
                format!(
                    "Wait {reason}{}",
                    if until.is_some() { " timed" } else { "" }
                )
            }
            Decision::Stop(Stop::End { phase, reason, .. }) => format!("End {phase:?} {reason}"),
            Decision::Stop(Stop::Requeue(after)) => format!("Requeue {}s", after.as_secs()),
            Decision::Stop(other) => format!("{other:?}"),
        }
    }

    fn text(decision: &Decision) -> &str {
        match decision {
            Decision::Stop(Stop::Wait { text, .. } | Stop::End { text, .. }) => text,
            _ => "",
        }
    }

    fn ready() -> EmailProvider {
        provider(|p| {
            p["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Verified",
                "message": "ok", "lastTransitionTime": at(-10)}]})
        })
    }

    fn interrupted(policy: &str) -> EmailMessage {
        message(|m| {
            m["spec"]["deliveryPolicy"] = json!(policy);
            m["status"] = json!({"phase": "Sending", "attempts": 1});
        })
    }

    /// A bulk message on its seventh batch, whose claim was never recorded
    /// after `retries` stops of that batch in a row.
    fn bulk_interrupted(retries: u32) -> EmailMessage {
        message(|m| {
            m["spec"]["deliveryPolicy"] = json!("AtLeastOnce");
            m["spec"]["to"] = json!([]);
            m["spec"]["recipients"] = json!([{"to": "b@example.org"}]);
            m["status"] = json!({"phase": "Sending", "attempts": 7,
                "bulk": {"total": 1, "sent": 0, "failed": 0, "next": 0, "retries": retries}});
        })
    }

    fn service_template() -> EmailMessage {
        message(|m| {
            m["spec"]["providerTemplate"] = json!({"id": "welcome"});
            m["spec"].as_object_mut().map(|s| s.remove("text"));
        })
    }

    /// Each case's decision, summarised, is the one expected.
    fn check(cases: Vec<(&str, Decision, &str)>) {
        for (what, decision, expected) in &cases {
            assert_eq!(&summary(decision), expected, "{what}: {}", text(decision));
        }
    }

    /// The message itself, and whether what it names is there.
    #[test]
    fn what_the_message_and_its_names_decide() {
        let ready = ready();
        let suspended = provider(|p| p["spec"]["suspend"] = json!(true));
        let plain = message(|_| {});
        let denied = Access::Denied("namespace \"team\" is not allowed".into());
        let huge = message(|m| m["spec"]["text"] = json!("x".repeat(1_600_000)));
        check(vec![
            (
                "a healthy message is sent",
                decide_with(&plain, Some(&ready), |_| {}),
                "Send",
            ),
            (
                "a bulk message is sent batch by batch",
                decide_with(
                    &message(|m| {
                        m["spec"]["to"] = json!([]);
                        m["spec"]["recipients"] = json!([{"to": "b@example.org"}]);
                    }),
                    Some(&ready),
                    |_| {},
                ),
                "Send bulk",
            ),
            (
                "too large to record",
                decide_with(&huge, Some(&ready), |_| {}),
                "End Failed InvalidRequest",
            ),
            (
                "past its deadline",
                decide_with(&plain, Some(&ready), |v| {
                    v.limits = Limits {
                        max_attempts: 5,
                        deadline: Some(now()),
                    }
                }),
                "End Failed DeadlineExceeded",
            ),
            (
                "no provider",
                decide_with(&plain, None, |_| {}),
                "Wait ProviderNotFound",
            ),
            (
                "a namespace a cluster provider does not allow",
                decide_with(&plain, Some(&ready), |v| v.access = Some(&denied)),
                "End Failed Denied",
            ),
            (
                "a template not there yet",
                decide_with(
                    &message(|m| m["spec"]["templateRef"] = json!({"name": "welcome"})),
                    Some(&ready),
                    |v| v.template = Some(None),
                ),
                "Wait TemplateNotFound",
            ),
            (
                "an address no server takes",
                decide_with(
                    &message(|m| m["spec"]["to"] = json!(["two..dots@example.org"])),
                    Some(&ready),
                    |_| {},
                ),
                "End Failed InvalidRequest",
            ),
            (
                "sendAt in the future",
                decide_with(
                    &message(|m| m["spec"]["sendAt"] = json!(at(120))),
                    Some(&ready),
                    |_| {},
                ),
                "Wait Scheduled timed",
            ),
            (
                "a suspended provider",
                decide_with(&plain, Some(&suspended), |_| {}),
                "Wait Suspended",
            ),
        ]);
    }

    /// The provider's state, and what its service can do.
    #[test]
    fn what_the_providers_state_decides() {
        let ready = ready();
        let not_ready = provider(|p| {
            p["status"] = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "AuthFailed",
                "message": "535 refused", "lastTransitionTime": at(-10)}]})
        });
        let plain = message(|_| {});
        let templates = service_template();
        check(vec![
            (
                "a provider not Ready",
                decide_with(&plain, Some(&not_ready), |v| v.sender = None),
                "Wait ProviderNotReady",
            ),
            (
                "a Ready provider not verified here yet",
                decide_with(&plain, Some(&ready), |v| v.sender = None),
                "Requeue 2s",
            ),
            (
                "a provider being verified",
                decide_with(&plain, Some(&provider(|_| {})), |v| v.sender = None),
                "Requeue 30s",
            ),
            (
                "a service template over SMTP",
                decide_with(&templates, Some(&ready), |_| {}),
                "End Failed InvalidRequest",
            ),
            (
                "a service template where the service keeps them",
                decide_with(&templates, Some(&ready), |v| {
                    v.sender = Some(Sender {
                        stores_templates: true,
                        name: "postmark",
                        ..SMTP
                    })
                }),
                "Send",
            ),
        ]);
    }

    /// What an earlier attempt left in the status.
    #[test]
    fn what_an_earlier_attempt_decides() {
        let ready = ready();
        check(vec![
            (
                "a retry not due yet",
                decide_with(
                    &message(|m| {
                        m["status"] =
                            json!({"phase": "Pending", "attempts": 1, "nextAttemptTime": at(30)})
                    }),
                    Some(&ready),
                    |_| {},
                ),
                "Requeue 30s",
            ),
            (
                "a retry that is due",
                decide_with(
                    &message(|m| {
                        m["status"] =
                            json!({"phase": "Pending", "attempts": 1, "nextAttemptTime": at(-1)})
                    }),
                    Some(&ready),
                    |_| {},
                ),
                "Send",
            ),
            (
                "interrupted under AtMostOnce",
                decide_with(&interrupted("AtMostOnce"), Some(&ready), |_| {}),
                "End Unknown Interrupted",
            ),
            (
                "interrupted under AtMostOnce, through a service that knows repeats",
                decide_with(&interrupted("AtMostOnce"), Some(&ready), |v| {
                    v.sender = Some(Sender {
                        idempotent: true,
                        ..SMTP
                    })
                }),
                "Send",
            ),
            (
                "interrupted under AtLeastOnce",
                decide_with(&interrupted("AtLeastOnce"), Some(&ready), |_| {}),
                "Send",
            ),
            (
                "interrupted under AtLeastOnce on the last attempt allowed",
                decide_with(&interrupted("AtLeastOnce"), Some(&ready), |v| {
                    v.limits.max_attempts = 1
                }),
                "End Unknown Interrupted",
            ),
            (
                "a bulk message interrupted past its attempts (one a batch)",
                decide_with(&bulk_interrupted(0), Some(&ready), |v| {
                    v.limits.max_attempts = 5
                }),
                "Send bulk",
            ),
            (
                "a bulk message whose batch was cut off as often as allowed",
                decide_with(&bulk_interrupted(4), Some(&ready), |v| {
                    v.limits.max_attempts = 5
                }),
                "End Unknown Interrupted",
            ),
            (
                "interrupted on the last attempt, through a service that knows repeats",
                decide_with(&interrupted("AtLeastOnce"), Some(&ready), |v| {
                    v.limits.max_attempts = 1;
                    v.sender = Some(Sender {
                        idempotent: true,
                        ..SMTP
                    })
                }),
                "Send",
            ),
        ]);
    }

    #[test]
    fn what_the_gate_says_names_the_cause() {
        let ready = provider(|_| {});
        let plain = message(|_| {});
        let missing = decide_with(&plain, None, |_| {});
        assert_eq!(
            text(&missing),
            "EmailProvider \"mail\" not found in namespace \"team\""
        );
        let cluster = message(|m| m["spec"]["providerRef"]["kind"] = json!("ClusterEmailProvider"));
        let unserved = decide_with(&cluster, None, |_| {});
        assert!(text(&unserved).contains("--cluster-provider-namespace is unset"));
        let served = decide_with(&cluster, None, |v| v.serves_cluster_providers = true);
        assert_eq!(text(&served), "ClusterEmailProvider \"mail\" not found");
        let over_smtp = decide_with(
            &message(|m| {
                m["spec"]["providerTemplate"] = json!({"id": "welcome"});
            }),
            Some(&ready),
            |_| {},
        );
        assert!(
            text(&over_smtp).starts_with("spec.providerTemplate:"),
            "{}",
            text(&over_smtp)
        );
    }

    #[test]
    fn a_repeated_attempt_keeps_the_first_message_id() {
        let again = message(|m| {
            m["status"] =
                json!({"phase": "Pending", "attempts": 1, "messageId": "<first@mailroom>"})
        });
        let Decision::Send(Some(email)) = decide_with(&again, Some(&provider(|_| {})), |_| {})
        else {
            panic!("sent");
        };
        assert_eq!(email.message_id, "<first@mailroom>");
    }

    #[test]
    fn finished_messages_are_settled_and_only_unknown_ones_retried() {
        let with = |phase: &str, retry: bool| {
            message(|m| {
                m["status"] = json!({"phase": phase, "attempts": 1});
                if retry {
                    m["metadata"]["annotations"] = json!({RETRY_ANNOTATION: "true"});
                }
            })
        };
        assert_eq!(settled(&with("Sent", false)), Some(Stop::Finished));
        assert_eq!(settled(&with("Failed", false)), Some(Stop::Finished));
        assert_eq!(settled(&with("Unknown", false)), Some(Stop::Finished));
        assert_eq!(
            settled(&with("Sent", true)),
            Some(Stop::RefuseRetry(Phase::Sent))
        );
        assert_eq!(
            settled(&with("Failed", true)),
            Some(Stop::RefuseRetry(Phase::Failed))
        );
        assert_eq!(settled(&with("Unknown", true)), None);
        assert_eq!(settled(&with("Pending", false)), None);
        assert_eq!(settled(&with("Sending", false)), None);
        assert_eq!(settled(&message(|_| {})), None);
    }
}
