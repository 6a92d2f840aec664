//! Reconciles EmailMessages: validates the spec, waits for a Ready provider,
//! claims the message (status Sending, guarded by resourceVersion) before any
//! I/O, sends it once, and records the outcome. See docs/delivery.md.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::access::{self, Access};
use super::attachments::{self, LoadError};
use super::context::Context;
use super::error::Error;
use super::{backoff, bulk, provider};
use crate::api::condition::{self, READY, Reason, SENT};
use crate::api::message::ProviderKind;
use crate::api::message::{
    DeliveryPolicy, EmailMessageSpec, LastError, RETRY_ANNOTATION, ServerReply,
};
use crate::api::provider::{DEFAULT_MAX_ATTACHMENT_BYTES, RetryPolicy};
use crate::api::{
    ClusterEmailProvider, EmailMessage, EmailMessageStatus, EmailProvider, EmailTemplate, Phase,
};
use crate::compose;
use crate::metrics::{ProviderLabels, ReasonLabels, TransportLabels};
use crate::render;
use crate::transport::{Accepted, SendError};

/// How soon a message looks again for a provider whose verification is under
/// way, or that is Ready but whose transport this controller has not verified
/// yet (just after a restart, or while another replica's verification is being
/// repeated here).
const TRANSPORT_WARMUP_RETRY: Duration = Duration::from_secs(2);
/// How often a waiting message looks again on its own; provider changes wake
/// it sooner.
const WAITING_RETRY: Duration = Duration::from_secs(300);
/// How often a message looks again for an attachment's missing Secret or
/// ConfigMap (nothing wakes it when one appears).
const ATTACHMENT_RETRY: Duration = Duration::from_secs(15);
/// How soon a message is looked at again when the cache is older than an
/// outcome this controller wrote (normally its watch event comes first).
const STALE_CACHE_RETRY: Duration = Duration::from_secs(1);
/// How soon a message whose claim met a newer version is looked at again.
pub(super) const CLAIM_CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// How soon a message whose provider or namespace holds its share of send
/// slots looks again: 1-3 s, spread so a large backlog (a thousand messages
/// for one provider) comes back a few hundred a second, not all at once.
pub(super) fn slots_busy_retry() -> Duration {
    Duration::from_millis(1000 + fastrand::u64(..2000))
}
/// How many times a result is written before it is kept for a later reconcile.
const RECORD_TRIES: u32 = 6;

/// The retry limits that apply to one message.
pub(super) struct Limits {
    pub(super) max_attempts: u32,
    pub(super) deadline: Option<jiff::Timestamp>,
}

impl Limits {
    /// The message's own limits, else the provider's, else the controller's.
    fn of(message: &EmailMessage, provider: Option<&EmailProvider>, ctx: &Context) -> Self {
        let own = message.spec.retry.as_ref();
        let inherited = provider.and_then(|p| p.spec.retry.as_ref());
        let pick =
            |f: fn(&RetryPolicy) -> Option<u32>| own.and_then(f).or_else(|| inherited.and_then(f));
        let max_attempts = pick(|r| r.max_attempts).unwrap_or(ctx.settings.max_attempts);
        let seconds = pick(|r| r.deadline_seconds).unwrap_or(ctx.settings.deadline_seconds);
        let deadline = deadline(message, seconds);
        Self {
            max_attempts,
            deadline,
        }
    }

    fn passed(&self) -> bool {
        self.deadline.is_some_and(|d| d <= jiff::Timestamp::now())
    }
}

/// When a message's attempts end: `seconds` after its creation, or after
/// its sendAt when later. Checked: a sendAt near the end of representable
/// time has no reachable deadline (`None`).
pub(crate) fn deadline(message: &EmailMessage, seconds: u32) -> Option<jiff::Timestamp> {
    let created = message.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let created = created.max(message.spec.send_at.as_ref().map(|t| t.0));
    created.and_then(|c| {
        c.checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
            .ok()
    })
}

/// Reconciles one message.
#[tracing::instrument(skip_all, fields(namespace = message.namespace().unwrap_or_default(), email = message.name_any(), trace_id = crate::telemetry::trace_id()))]
pub async fn reconcile(message: Arc<EmailMessage>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The cache has not caught up with an outcome written here: its newer
    // version brings a reconcile of its own.
    let uid = message.uid().unwrap_or_default();
    if ctx
        .written
        .is_stale(&uid, message.metadata.resource_version.as_deref())
    {
        return Ok(Action::requeue(STALE_CACHE_RETRY));
    }
    let status = message.status.clone().unwrap_or_default();
    let retry_requested = message.annotations().contains_key(RETRY_ANNOTATION);
    let namespace = message.namespace().unwrap_or_default();
    let api: Api<EmailMessage> = Api::namespaced(ctx.client.clone(), &namespace);
    match status.phase {
        // A person asked to send an Unknown message again.
        Some(Phase::Unknown) if retry_requested => {}
        // Only an Unknown message can be sent again: say so, and take the
        // annotation off so it does not look pending.
        Some(phase) if phase.is_finished() && retry_requested => {
            return refuse_retry(&api, &message, &ctx, phase).await;
        }
        Some(phase) if phase.is_finished() => return clean_up(&message, &ctx, &status).await,
        _ => {}
    }

    // A result that was sent but could not be written yet: write it, never send again.
    if let Some(outcome) = ctx.unrecorded.take(&uid) {
        let attempt = outcome.attempts;
        return match record(&api, &message, outcome.clone(), attempt).await {
            Ok(_) => Ok(Action::await_change()),
            Err(e) => {
                ctx.unrecorded.keep(uid, outcome);
                Err(e)
            }
        };
    }

    // Never claim a message whose outcome could not be written.
    if let Err(text) = super::fits::check(&message) {
        return fail_invalid(&api, &message, &ctx, text).await;
    }

    let provider_name = &message.spec.provider_ref.name;
    let provider_kind = message.spec.provider_ref.kind;
    let cluster_provider = match provider_kind {
        ProviderKind::EmailProvider => None,
        ProviderKind::ClusterEmailProvider => {
            ctx.cluster_providers
                .get(&ObjectRef::<ClusterEmailProvider>::new(provider_name))
        }
    };
    let provider = match provider_kind {
        ProviderKind::EmailProvider => ctx
            .providers
            .get(&ObjectRef::<EmailProvider>::new(provider_name).within(&namespace)),
        ProviderKind::ClusterEmailProvider => {
            cluster_provider.as_ref().map(|c| Arc::new(c.as_provider()))
        }
    };
    let limits = Limits::of(&message, provider.as_deref(), &ctx);
    if limits.passed() {
        let text = format!(
            "not sent before its deadline ({}) after {} attempt(s)",
            limits.deadline.map(|d| d.to_string()).unwrap_or_default(),
            status.attempts
        );
        return conclude(
            &api,
            &message,
            &ctx,
            Phase::Failed,
            Reason::DeadlineExceeded,
            text,
        )
        .await;
    }
    let Some(provider) = provider else {
        let text = match provider_kind {
            ProviderKind::EmailProvider => {
                format!("EmailProvider {provider_name:?} not found in namespace {namespace:?}")
            }
            ProviderKind::ClusterEmailProvider
                if ctx.settings.cluster_provider_namespace.is_none() =>
            {
                format!(
                    "ClusterEmailProvider {provider_name:?}: this controller serves no ClusterEmailProviders (--cluster-provider-namespace is unset)"
                )
            }
            ProviderKind::ClusterEmailProvider => {
                format!("ClusterEmailProvider {provider_name:?} not found")
            }
        };
        return wait(
            &api,
            &message,
            Reason::ProviderNotFound,
            text,
            None,
            limits.deadline,
        )
        .await;
    };

    // A cluster-wide provider serves only the namespaces it allows.
    if let Some(cluster) = &cluster_provider {
        let access = access::check(&ctx.client, cluster, &namespace)
            .await
            .map_err(Error::Kube)?;
        if let Access::Denied(text) = access {
            return conclude(&api, &message, &ctx, Phase::Failed, Reason::Denied, text).await;
        }
    }

    // A template supplies the subject and body, rendered strictly with the
    // message's data before anything else happens.
    let template = match &message.spec.template_ref {
        None => None,
        Some(template_ref) => {
            let found = ctx
                .templates
                .get(&ObjectRef::new(&template_ref.name).within(&namespace));
            let Some(template) = found else {
                let text = format!(
                    "EmailTemplate {:?} not found in namespace {namespace:?}",
                    template_ref.name
                );
                return wait(
                    &api,
                    &message,
                    Reason::TemplateNotFound,
                    text,
                    None,
                    limits.deadline,
                )
                .await;
            };
            Some(template)
        }
    };

    // A bulk message builds each recipient's email when its batch goes out.
    let bulk = !message.spec.recipients.is_empty();
    let mut email = if bulk {
        None
    } else {
        let default_from = provider.spec.default_from.as_deref();
        match build_email(&message.spec, template.as_deref(), default_from, &uid) {
            Ok(mut email) => {
                if let Some(id) = &status.message_id {
                    email.message_id = id.clone();
                }
                Some(email)
            }
            Err(text) => return fail_invalid(&api, &message, &ctx, text).await,
        }
    };

    if let Some(due) = message.spec.send_at.as_ref().and_then(remaining) {
        let at = message
            .spec
            .send_at
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let text = format!("scheduled: sendAt is {at}");
        return wait(
            &api,
            &message,
            Reason::Scheduled,
            text,
            Some(due),
            limits.deadline,
        )
        .await;
    }

    if provider.spec.suspend {
        let text = format!("EmailProvider {provider_name:?} is suspended (spec.suspend)");
        return wait(
            &api,
            &message,
            Reason::Suspended,
            text,
            None,
            limits.deadline,
        )
        .await;
    }

    let key = (
        provider.namespace().unwrap_or_default(),
        provider_name.clone(),
    );
    let Some(verified) = ctx.transports.get(&key) else {
        let ready = provider
            .status
            .as_ref()
            .and_then(|s| condition::find(&s.conditions, READY));
        return match ready {
            Some(c) if c.status == "True" => Ok(Action::requeue(TRANSPORT_WARMUP_RETRY)),
            Some(c) => {
                let text = format!(
                    "EmailProvider {provider_name:?} is not Ready: {}: {}",
                    c.reason, c.message
                );
                wait(
                    &api,
                    &message,
                    Reason::ProviderNotReady,
                    text,
                    None,
                    limits.deadline,
                )
                .await
            }
            // Verification is under way. Its status write usually wakes this
            // message, but that event can reach the message controller before
            // the provider cache holds it (two watches), so look again soon
            // rather than trust the wake-up alone.
            None => Ok(Action::requeue(TRANSPORT_WARMUP_RETRY)),
        };
    };

    if let Some(due) = status.next_attempt_time.as_ref().and_then(remaining) {
        return Ok(Action::requeue(due));
    }

    // The previous attempt was claimed but never recorded: the controller
    // stopped in between, and nobody knows whether the server took it.
    let interrupted = status.phase == Some(Phase::Sending);
    if interrupted
        && message.spec.delivery_policy == DeliveryPolicy::AtMostOnce
        && !verified.transport.idempotent()
    {
        let text = format!(
            "attempt {} was interrupted before its result was recorded; the server may or may not have the message. \
             Under AtMostOnce it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway",
            status.attempts
        );
        return conclude(
            &api,
            &message,
            &ctx,
            Phase::Unknown,
            Reason::Interrupted,
            text,
        )
        .await;
    }

    if message.spec.provider_template.is_some() && !verified.transport.stores_templates() {
        let text = format!(
            "spec.providerTemplate: EmailProvider {provider_name:?} sends over {}, which keeps no templates; use a templateRef",
            verified.transport.name()
        );
        return fail_invalid(&api, &message, &ctx, text).await;
    }

    if let Some(wait_for) = ctx
        .rate_limits
        .acquire(&key, provider.spec.rate_limit.as_ref())
        .await
    {
        let labels = ProviderLabels {
            namespace: namespace.clone(),
            provider: provider_name.clone(),
            transport: verified.transport.name().to_string(),
        };
        ctx.telemetry
            .metrics
            .rate_limit_waits
            .get_or_create(&labels)
            .inc();
        let rate = provider
            .spec
            .rate_limit
            .as_ref()
            .map_or(0, |r| r.messages_per_second);
        let text = format!(
            "EmailProvider {provider_name:?} allows {rate} message(s) per second; waiting for a slot"
        );
        return wait(
            &api,
            &message,
            Reason::RateLimited,
            text,
            Some(wait_for),
            limits.deadline,
        )
        .await;
    }

    // Attachments are read last, after the rate limit and just before the
    // send, so a file is read once per attempt and held no longer.
    if !message.spec.attachments.is_empty() {
        let cap = provider
            .spec
            .max_attachment_bytes
            .unwrap_or(DEFAULT_MAX_ATTACHMENT_BYTES);
        match attachments::load(
            &ctx.client,
            &namespace,
            &message.spec.attachments,
            u64::from(cap),
        )
        .await
        {
            Ok(files) => {
                if let Some(email) = email.as_mut() {
                    email.attachments = files;
                }
            }
            Err(e @ LoadError::Missing { .. }) => {
                return wait(
                    &api,
                    &message,
                    Reason::AttachmentNotFound,
                    e.to_string(),
                    Some(ATTACHMENT_RETRY),
                    limits.deadline,
                )
                .await;
            }
            Err(e @ LoadError::TooLarge { .. }) => {
                return fail_invalid(&api, &message, &ctx, e.to_string()).await;
            }
            Err(e @ LoadError::NotAllowed { .. }) => {
                let why = Reason::AttachmentNotAllowed;
                return conclude(&api, &message, &ctx, Phase::Failed, why, e.to_string()).await;
            }
            Err(e @ LoadError::Api { .. }) => return Err(Error::Attachments(e)),
        }
    }

    let Some(email) = email else {
        let job = bulk::Job {
            api: &api,
            message: &message,
            ctx: &ctx,
            provider: &provider,
            verified: &verified,
            template: template.as_deref(),
            limits: &limits,
            uid: &uid,
        };
        return bulk::send(job).await;
    };

    // A person's retry of an Unknown message: take the annotation away first,
    // so the retry happens once per request.
    let base = if retry_requested {
        match clear_retry_annotation(&api, &message).await {
            Ok(fresh) => fresh,
            Err(e) if e.is_conflict() => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e),
        }
    } else {
        (*message).clone()
    };

    // A send slot is held from the claim until the outcome is recorded, so at
    // most --max-concurrent-sends messages are ever claimed but unrecorded:
    // the most a crash can leave in doubt. A provider (or namespace) that
    // holds its share already waits without a status write.
    let Some(_slot) = ctx.sends.take(&key, &namespace).await else {
        return Ok(Action::requeue(slots_busy_retry()));
    };

    // Claim: written before any I/O and guarded by resourceVersion, so a stale
    // view of the message (or a second controller) can never start a send.
    let attempt = status.attempts + 1;
    let mut claim = status.clone();
    claim.phase = Some(Phase::Sending);
    claim.attempts = attempt;
    claim.message_id = verified
        .transport
        .sets_message_id()
        .then(|| email.message_id.clone());
    claim.last_attempt_time = Some(now());
    claim.next_attempt_time = None;
    claim.observed_generation = message.metadata.generation;
    let (claim_reason, claim_text) = if interrupted {
        let text = format!(
            "attempt {attempt}: the previous attempt was interrupted before its result was recorded; sending again"
        );
        (Reason::Interrupted, text)
    } else if retry_requested {
        (
            Reason::Sending,
            format!("attempt {attempt}: sending again as {RETRY_ANNOTATION} asked"),
        )
    } else {
        (Reason::Sending, format!("attempt {attempt} under way"))
    };
    condition::set(
        &mut claim.conditions,
        SENT,
        false,
        claim_reason,
        claim_text,
        message.metadata.generation,
    );
    let Some(claimed) = write_claim(&api, &base, claim).await? else {
        return Ok(Action::requeue(CLAIM_CONFLICT_RETRY));
    };

    let started = std::time::Instant::now();
    let result = verified.transport.send(&email).await;
    if let Err(e) = &result
        && e.is_provider_failure()
        && ctx.transports.withdraw(&key, &verified.fingerprint)
    {
        provider::mark_unverified(&ctx, &provider, &verified.fingerprint, e).await;
    }
    let outcome = outcome(
        &claimed,
        attempt,
        result,
        &limits,
        message.spec.delivery_policy,
    );
    let elapsed = started.elapsed();
    ctx.sends.note_attempt(&key, &provider.spec, elapsed);

    let action = match outcome.phase {
        Some(Phase::Pending) => {
            let due = outcome
                .next_attempt_time
                .as_ref()
                .and_then(remaining)
                .unwrap_or_default();
            Action::requeue(due.max(Duration::from_millis(100)))
        }
        _ => Action::await_change(),
    };
    match record(&api, &claimed, outcome.clone(), attempt).await {
        Ok(Some(recorded)) => {
            ctx.written
                .note(&uid, recorded.metadata.resource_version.as_deref());
            record_metrics(&ctx, &message, verified.transport.name(), &outcome, elapsed);
            announce(&ctx, &recorded, &outcome, elapsed).await;
            Ok(action)
        }
        // Another writer replaced the claim: its outcome stands, not this one.
        Ok(None) => Ok(Action::await_change()),
        Err(e) => {
            warn!(error = %e, "the outcome could not be recorded; it is kept and written on the next reconcile");
            ctx.unrecorded.keep(uid, outcome);
            Err(e)
        }
    }
}

/// The email `spec` describes: its template (if it names one) rendered
/// strictly with the spec's `data`, then composed and checked. The error
/// names the field.
pub(super) fn build_email(
    spec: &EmailMessageSpec,
    template: Option<&EmailTemplate>,
    default_from: Option<&str>,
    uid: &str,
) -> Result<compose::Email, String> {
    let data = spec.data.clone().unwrap_or_else(|| json!({}));
    let rendered;
    let spec = match (template, &spec.template_ref) {
        (Some(template), Some(template_ref)) => match render::render(&template.spec, &data) {
            Ok(out) => {
                let mut with_body = spec.clone();
                with_body.subject = out.subject;
                with_body.text = out.text;
                with_body.html = out.html;
                rendered = with_body;
                &rendered
            }
            Err(e) => return Err(format!("spec.templateRef ({:?}): {e}", template_ref.name)),
        },
        _ => spec,
    };
    compose::compose(spec, default_from, uid).map_err(|e| e.to_string())
}

/// Deletes a finished message once its `ttlSecondsAfterFinished` (or its
/// provider's) has passed; otherwise leaves it, or looks again when it is due.
async fn clean_up(
    message: &EmailMessage,
    ctx: &Context,
    status: &EmailMessageStatus,
) -> Result<Action, Error> {
    let namespace = message.namespace().unwrap_or_default();
    let name = &message.spec.provider_ref.name;
    let provider = match message.spec.provider_ref.kind {
        ProviderKind::EmailProvider => ctx
            .providers
            .get(&ObjectRef::<EmailProvider>::new(name).within(&namespace)),
        ProviderKind::ClusterEmailProvider => ctx
            .cluster_providers
            .get(&ObjectRef::<ClusterEmailProvider>::new(name))
            .map(|c| Arc::new(c.as_provider())),
    };
    let ttl = message
        .spec
        .ttl_seconds_after_finished
        .or_else(|| provider.and_then(|p| p.spec.ttl_seconds_after_finished));
    let Some(ttl) = ttl else {
        return Ok(Action::await_change());
    };
    let finished = status
        .sent_time
        .as_ref()
        .or_else(|| condition::find(&status.conditions, SENT).map(|c| &c.last_transition_time))
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now);
    let Ok(due) = finished.checked_add(jiff::SignedDuration::from_secs(i64::from(ttl))) else {
        return Ok(Action::await_change());
    };
    if let Some(left) = remaining(&Time(due)) {
        return Ok(Action::requeue(left));
    }
    let api: Api<EmailMessage> = Api::namespaced(ctx.client.clone(), &namespace);
    let precondition = kube::api::Preconditions {
        uid: message.uid(),
        resource_version: message.resource_version(),
    };
    let params = kube::api::DeleteParams {
        preconditions: Some(precondition),
        ..Default::default()
    };
    match api.delete(&message.name_any(), &params).await {
        Ok(_) => {
            info!(
                ttl_seconds = ttl,
                "deleted after its ttlSecondsAfterFinished"
            );
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Answers a retry asked of a finished message that is not Unknown (a Sent
/// one was accepted; a Failed one can never be sent as it is) with a Warning
/// Event, and removes the annotation.
async fn refuse_retry(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    phase: Phase,
) -> Result<Action, Error> {
    match clear_retry_annotation(api, message).await {
        Ok(_) => {}
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) if e.is_conflict() => return Ok(Action::requeue(CLAIM_CONFLICT_RETRY)),
        Err(e) => return Err(e),
    }
    let note = format!(
        "{RETRY_ANNOTATION} is only taken on an Unknown message; this one is {phase:?} and is not sent again (create a new EmailMessage to send it again)"
    );
    publish(ctx, message, EventType::Warning, "RetryRefused", note).await;
    Ok(Action::await_change())
}

/// Removes the retry annotation; returns the updated object.
async fn clear_retry_annotation(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
) -> Result<EmailMessage, Error> {
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": message.resource_version(),
            "annotations": {RETRY_ANNOTATION: null}
        }
    });
    api.patch(
        &message.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)
}

/// The status after an attempt.
fn outcome(
    claimed: &EmailMessage,
    attempt: u32,
    result: Result<Accepted, SendError>,
    limits: &Limits,
    policy: DeliveryPolicy,
) -> EmailMessageStatus {
    let generation = claimed.metadata.generation;
    let mut status = claimed.status.clone().unwrap_or_default();
    let error = match result {
        Ok(accepted) => {
            status.phase = Some(Phase::Sent);
            status.provider_message_id = accepted
                .provider_message_id
                .clone()
                .or_else(|| status.message_id.clone());
            status.server_reply = Some(ServerReply {
                code: accepted.code,
                message: accepted.message.clone(),
            });
            status.provider_message_ids = accepted.all_ids.clone();
            status.sent_time = Some(now());
            status.last_error = None;
            let text = format!(
                "accepted by the server on attempt {attempt}: {} {}",
                accepted.code, accepted.message
            );
            condition::set(
                &mut status.conditions,
                SENT,
                true,
                Reason::Accepted,
                text,
                generation,
            );
            return status;
        }
        Err(error) => error,
    };
    status.last_error = Some(LastError {
        reason: error.reason().to_string(),
        message: error.message.clone(),
        retryable: error.retryable(),
        code: error.code,
        provider_code: error.provider_code.clone(),
    });
    if let Some(code) = error.code {
        status.server_reply = Some(ServerReply {
            code,
            message: error.message.clone(),
        });
    }
    let next = not_before(
        jiff::Timestamp::now(),
        backoff::delay(attempt, error.retry_after),
    );
    let (phase, why, text) = if error.maybe_delivered && policy == DeliveryPolicy::AtMostOnce {
        let text = format!(
            "attempt {attempt} ended without a clear answer ({}); the server may have the message. \
             Under AtMostOnce it is not sent again: annotate {RETRY_ANNOTATION}=true to send it anyway",
            error.message
        );
        (Phase::Unknown, Reason::OutcomeUnknown, text)
    } else if !error.retryable() {
        (Phase::Failed, error.reason(), error.message.clone())
    } else if attempt >= limits.max_attempts {
        (
            Phase::Failed,
            error.reason(),
            format!("gave up after {attempt} attempts: {}", error.message),
        )
    } else if limits.deadline.is_some_and(|d| next > d) {
        let text = format!(
            "attempt {attempt} failed and the next would come after the deadline: {}",
            error.message
        );
        (Phase::Failed, Reason::DeadlineExceeded, text)
    } else {
        status.next_attempt_time = Some(Time(next));
        let wait = next
            .duration_since(jiff::Timestamp::now())
            .as_secs_f64()
            .ceil();
        let text = format!(
            "attempt {attempt} failed, retrying in {wait}s: {}",
            error.message
        );
        (Phase::Pending, error.reason(), text)
    };
    status.phase = Some(phase);
    condition::set(&mut status.conditions, SENT, false, why, text, generation);
    status
}

/// Writes the outcome of `attempt`. A conflict means the object changed (a
/// label, say) since the claim: the write is repeated on the fresh object as
/// long as the claim of this attempt still stands. Other failures (the
/// apiserver restarting) are retried with growing pauses.
pub(super) async fn record(
    api: &Api<EmailMessage>,
    claimed: &EmailMessage,
    outcome: EmailMessageStatus,
    attempt: u32,
) -> Result<Option<EmailMessage>, Error> {
    let mut base = claimed.clone();
    let mut pause = Duration::from_millis(250);
    let mut last_error = None;
    for _ in 0..RECORD_TRIES {
        match replace_status(api, &base, outcome.clone()).await {
            Ok(written) => return Ok(Some(written)),
            Err(e) if e.is_conflict() => {
                let fresh = api.get(&claimed.name_any()).await.map_err(Error::Kube)?;
                let still_ours = fresh
                    .status
                    .as_ref()
                    .is_some_and(|s| s.attempts == attempt && s.phase == Some(Phase::Sending));
                if !still_ours {
                    warn!(
                        "the claim of attempt {attempt} was replaced by another writer; its outcome is not recorded"
                    );
                    return Ok(None);
                }
                base = fresh;
            }
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    Err(last_error.unwrap_or(Error::Contended(RECORD_TRIES)))
}

/// Counts an attempt's outcome and its duration.
pub(super) fn record_metrics(
    ctx: &Context,
    message: &EmailMessage,
    transport: &str,
    outcome: &EmailMessageStatus,
    elapsed: Duration,
) {
    let metrics = &ctx.telemetry.metrics;
    let transport_labels = TransportLabels {
        transport: transport.to_string(),
    };
    metrics
        .send_seconds
        .get_or_create(&transport_labels)
        .observe(elapsed.as_secs_f64());
    let namespace = message.namespace().unwrap_or_default();
    let provider = message.spec.provider_ref.name.clone();
    match outcome.phase {
        Some(Phase::Sent) => {
            let labels = ProviderLabels {
                namespace,
                provider,
                transport: transport.to_string(),
            };
            metrics.sent.get_or_create(&labels).inc();
        }
        Some(Phase::Failed | Phase::Unknown) => count_failure(ctx, message, outcome),
        _ => {}
    }
}

/// Counts a message that ended Failed or Unknown, by its reason.
fn count_failure(ctx: &Context, message: &EmailMessage, status: &EmailMessageStatus) {
    let reason = condition::find(&status.conditions, SENT)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let labels = ReasonLabels {
        namespace: message.namespace().unwrap_or_default(),
        provider: message.spec.provider_ref.name.clone(),
        reason,
    };
    ctx.telemetry.metrics.failed.get_or_create(&labels).inc();
}

/// Logs the outcome and publishes an Event on Sent, Failed and Unknown.
pub(super) async fn announce(
    ctx: &Context,
    message: &EmailMessage,
    status: &EmailMessageStatus,
    elapsed: Duration,
) {
    let (type_, event_reason, note) = match status.phase {
        Some(Phase::Sent) => {
            info!(
                attempts = status.attempts,
                ms = elapsed.as_millis() as u64,
                "sent"
            );
            if !ctx.settings.sent_events {
                return;
            }
            let reply = status
                .server_reply
                .as_ref()
                .map(|r| format!(" ({} {})", r.code, r.message))
                .unwrap_or_default();
            (
                EventType::Normal,
                "Sent",
                format!("accepted by the server{reply}"),
            )
        }
        Some(phase @ (Phase::Failed | Phase::Unknown)) => {
            let error = status.last_error.as_ref();
            let why = error
                .map(|e| format!("{}: {}", e.reason, e.message))
                .unwrap_or_default();
            let (event_reason, what) = if phase == Phase::Unknown {
                ("Unknown", "outcome unknown")
            } else {
                ("Failed", "failed")
            };
            warn!(
                attempts = status.attempts,
                reason = error.map(|e| e.reason.as_str()),
                "{what}"
            );
            (EventType::Warning, event_reason, why)
        }
        _ => {
            let error = status.last_error.as_ref();
            info!(
                attempts = status.attempts,
                reason = error.map(|e| e.reason.as_str()),
                "attempt failed; will retry"
            );
            return;
        }
    };
    publish(ctx, message, type_, event_reason, note).await;
}

async fn publish(
    ctx: &Context,
    message: &EmailMessage,
    type_: EventType,
    event_reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: event_reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: "Send".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &message.object_ref(&())).await {
        warn!(error = %e, "publishing the event failed");
    }
}

/// Fails a message that can never be sent (InvalidRequest), naming the field.
async fn fail_invalid(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    text: String,
) -> Result<Action, Error> {
    conclude(
        api,
        message,
        ctx,
        Phase::Failed,
        Reason::InvalidRequest,
        text,
    )
    .await
}

/// Ends a message that will not be sent (Failed) or whose fate is not known
/// (Unknown), with the reason, and an Event.
async fn conclude(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    ctx: &Context,
    phase: Phase,
    why: Reason,
    text: String,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let mut status = message.status.clone().unwrap_or_default();
    status.phase = Some(phase);
    status.observed_generation = generation;
    status.next_attempt_time = None;
    let retryable = phase == Phase::Unknown;
    status.last_error = Some(LastError {
        reason: why.to_string(),
        message: text.clone(),
        retryable,
        code: None,
        provider_code: None,
    });
    condition::set(&mut status.conditions, SENT, false, why, &text, generation);
    match replace_status(api, message, status).await {
        Ok(written) => {
            warn!(reason = why.as_str(), message = %text, phase = ?phase, "concluded");
            if let Some(status) = &written.status {
                count_failure(ctx, &written, status);
            }
            let event_reason = if phase == Phase::Unknown {
                "Unknown"
            } else {
                "Failed"
            };
            publish(
                ctx,
                &written,
                EventType::Warning,
                event_reason,
                format!("{why}: {text}"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e),
    }
}

/// Records that a message waits (phase Pending with the reason), writing only
/// when that changes what the status says. `until` schedules the next look
/// (a rate limit); otherwise a change of the provider wakes the message.
async fn wait(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    wait_reason: Reason,
    text: String,
    until: Option<Duration>,
    deadline: Option<jiff::Timestamp>,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let old = message.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.phase = Some(Phase::Pending);
    status.observed_generation = generation;
    // A backoff already scheduled still holds while the message waits.
    status.next_attempt_time = until
        .map(|d| Time(not_before(jiff::Timestamp::now(), d)))
        .or(old.next_attempt_time.clone());
    condition::set(
        &mut status.conditions,
        SENT,
        false,
        wait_reason,
        &text,
        generation,
    );
    let mut retry = until.map_or(WAITING_RETRY, |d| d.max(Duration::from_millis(100)));
    // Look again when the deadline passes, to end the message then.
    if let Some(left) = deadline.map(|d| d.duration_since(jiff::Timestamp::now()))
        && let Ok(left) = Duration::try_from(left)
    {
        retry = retry.min(left + Duration::from_millis(100));
    }
    // Rewrite only when the status would say something new: another phase or
    // reason, or a wait whose scheduled time has already passed.
    let schedule_current =
        until.is_none() || old.next_attempt_time.as_ref().and_then(remaining).is_some();
    let unchanged = old.phase == status.phase
        && schedule_current
        && condition::same_meaning(&old.conditions, &status.conditions);
    if unchanged {
        return Ok(Action::requeue(retry));
    }
    info!(reason = wait_reason.as_str(), message = %text, "waiting");
    match replace_status(api, message, status).await {
        Ok(_) => Ok(Action::requeue(retry)),
        Err(e) if e.is_conflict() => Ok(Action::requeue(Duration::from_millis(200))),
        Err(e) => Err(e),
    }
}

/// Writes a claim (status Sending) guarded by the resourceVersion read.
/// `None` when the message changed meanwhile: a newer version is reconciled
/// instead, and nothing is sent.
pub(super) async fn write_claim(
    api: &Api<EmailMessage>,
    base: &EmailMessage,
    claim: EmailMessageStatus,
) -> Result<Option<EmailMessage>, Error> {
    match replace_status(api, base, claim).await {
        Ok(claimed) => Ok(Some(claimed)),
        Err(e) if e.is_conflict() => {
            debug!("the message changed since it was read; reconciling the newer version");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Replaces the status of `message`, guarded by its resourceVersion.
async fn replace_status(
    api: &Api<EmailMessage>,
    message: &EmailMessage,
    status: EmailMessageStatus,
) -> Result<EmailMessage, Error> {
    let mut object = message.clone();
    let mut status = status;
    status.recipient = message.spec.recipient_summary();
    object.status = Some(status);
    api.replace_status(&message.name_any(), &PostParams::default(), &object)
        .await
        .map_err(Error::Kube)
}

/// `from + delay`, rounded up to a whole second: status times are stored to
/// the second, and a retry must never come earlier than the server asked.
/// A delay past the end of representable time (a server may answer any
/// Retry-After) saturates there.
pub(crate) fn not_before(from: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    let Ok(due) = from.checked_add(delay) else {
        return jiff::Timestamp::MAX;
    };
    let whole = jiff::Timestamp::from_second(due.as_second()).unwrap_or(due);
    if whole < due {
        whole
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(due)
    } else {
        due
    }
}

pub(super) fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Time left until `t`, or `None` if it has passed.
fn remaining(t: &Time) -> Option<Duration> {
    let left = t.0.duration_since(jiff::Timestamp::now());
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_is_rounded_up_to_a_whole_second() {
        let from = jiff::Timestamp::from_millisecond(1_000_300).expect("time");
        let due = not_before(from, Duration::from_secs(7));
        assert_eq!(due.as_millisecond(), 1_008_000);
        let exact = jiff::Timestamp::from_second(1_000).expect("time");
        assert_eq!(not_before(exact, Duration::from_secs(7)).as_second(), 1_007);
    }

    #[test]
    fn a_delay_past_the_end_of_time_saturates_instead_of_panicking() {
        let now = jiff::Timestamp::now();
        assert_eq!(
            not_before(now, Duration::from_secs(u64::MAX)),
            jiff::Timestamp::MAX
        );
        let last = jiff::Timestamp::MAX;
        assert_eq!(not_before(last, Duration::from_millis(1)), last);
    }
}
