//! Reconciles EmailProviders: builds the transport from the spec and its
//! Secrets, verifies it against the server (connect, TLS, AUTH; nothing is
//! sent), and reports the result in the `Ready` condition; checks its
//! webhook key, if it has one (`WebhookReady`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, Verified};
use super::credentials;
use super::error::Error;
use super::provider_status;
use super::{domain, registration, suppression_sync};
use crate::api::ProviderId;
use crate::api::condition::{self, READY, Reason};
use crate::api::{ClusterEmailProvider, EmailProvider, EmailProviderStatus};
use crate::transport::{FailureKind, Verification};
use crate::webhook::readiness::{self, WebhookState};

/// How often a Ready provider is verified again.
pub const REVERIFY_INTERVAL: Duration = Duration::from_secs(600);
/// How soon an unreachable provider is tried again.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(20);
/// How soon a provider with a configuration problem is looked at again (a
/// change to it or its Secrets triggers a reconcile sooner).
const MISCONFIGURED_RETRY: Duration = Duration::from_secs(300);
/// How soon a provider whose status write kept losing to other writers is
/// looked at again.
const CONTENDED_RETRY: Duration = Duration::from_secs(1);

/// What a reconcile reports beside `Ready`: the webhook and the sending
/// domain.
struct Extras {
    hook: Option<WebhookState>,
    domain: Option<domain::DomainState>,
    sync: Option<suppression_sync::SyncState>,
}

/// The result of one verification.
struct Outcome {
    ready: bool,
    reason: Reason,
    message: String,
    retry: Duration,
    /// The DKIM record to print, when the transport was built with one.
    dkim: Option<crate::api::dkim::DkimRecord>,
}

/// Reconciles a ClusterEmailProvider as the provider it describes.
pub async fn reconcile_cluster(
    provider: Arc<ClusterEmailProvider>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile(Arc::new(provider.as_provider()), ctx).await
}

/// Reconciles one provider.
#[tracing::instrument(skip_all, fields(namespace = provider.namespace().unwrap_or_default(), provider = provider.name_any(), trace_id = crate::logging::trace_id()))]
pub async fn reconcile(provider: Arc<EmailProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ProviderId::from_provider(&provider);
    let secrets_namespace = provider
        .namespace()
        .or_else(|| ctx.settings.cluster_provider_namespace.clone())
        .unwrap_or_default();
    if provider.meta().deletion_timestamp.is_some() {
        ctx.transports.remove(&key);
        return match registration::unregister(&ctx, &provider, &secrets_namespace).await? {
            Some(again) => Ok(Action::requeue(again)),
            None => Ok(Action::await_change()),
        };
    }
    let generation = provider.metadata.generation;
    let status = provider.status.clone().unwrap_or_default();

    let registered = registration::ensure(&ctx, &provider, &secrets_namespace).await?;
    let hook = readiness::check(&ctx.client, &provider, &secrets_namespace)
        .await
        .map_err(Error::Kube)?;
    let hook = match (&registered, &provider.spec.api) {
        (Some(registered), Some(api)) => {
            Some(registration::state(registered, api.provider.name(), hook))
        }
        _ => hook,
    };
    let domain = domain::check(&ctx, &provider, &secrets_namespace).await;
    let sync = suppression_sync::sync(&ctx, &provider, &secrets_namespace).await;
    let extras = Extras { hook, domain, sync };
    let allowed = &ctx.settings.allowed_endpoint_hosts;
    let built = match credentials::build(&ctx.client, &provider, &secrets_namespace, allowed).await
    {
        Ok(built) => built,
        Err(e) => {
            ctx.transports.remove(&key);
            let outcome = Outcome {
                ready: false,
                reason: e.reason,
                message: e.message,
                retry: MISCONFIGURED_RETRY,
                dkim: None,
            };
            return write_status(&provider, &ctx, status, outcome, extras, false).await;
        }
    };

    let current = ctx
        .transports
        .get(&key)
        .filter(|v| v.fingerprint == built.fingerprint);
    let unchanged = current.is_some();
    let ready_now = condition::find(&status.conditions, READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
    let mut with_extras = status.conditions.clone();
    readiness::report(&mut with_extras, extras.hook.as_ref(), generation);
    domain::report(&mut with_extras, extras.domain.as_ref(), generation);
    suppression_sync::report(&mut with_extras, extras.sync.as_ref(), generation);
    let extras_reported = condition::same_meaning(&status.conditions, &with_extras)
        && !extras.domain.as_ref().is_some_and(|d| d.fresh)
        && !extras.sync.as_ref().is_some_and(|s| s.fresh);
    if unchanged
        && ready_now
        && extras_reported
        && let Some(due) = reverify_due_in(&status)
    {
        return Ok(Action::requeue(due));
    }

    let (outcome, verified_now) = verify_or_keep(&ctx, key.clone(), built, current).await;
    let outcome = require_verified_domain(&ctx, &provider, &key, outcome, &extras);
    write_status(&provider, &ctx, status, outcome, extras, verified_now).await
}

/// The verdict on `built`: kept from `current` when that transport passed
/// moments ago (the object read here predates that status write, or only
/// the extras changed), so the server is not asked again; else verified
/// now. Also says whether the server was asked.
async fn verify_or_keep(
    ctx: &Context,
    key: ProviderId,
    built: credentials::Built,
    current: Option<Verified>,
) -> (Outcome, bool) {
    let dkim = built.dkim.clone();
    let fresh = current.and_then(|v| {
        let left = REVERIFY_INTERVAL.checked_sub(v.verified_at.elapsed())?;
        (!left.is_zero()).then_some((v.verdict, left))
    });
    match fresh {
        Some(((reason, message), left)) => {
            let kept = Outcome {
                ready: true,
                reason,
                message,
                retry: left,
                dkim,
            };
            (kept, false)
        }
        None => {
            let verified = Outcome {
                dkim,
                ..verify(ctx, key, built).await
            };
            (verified, true)
        }
    }
}

/// `outcome`, or `DomainNotVerified` when the provider asks for a verified
/// sending domain and the service does not see one.
fn require_verified_domain(
    ctx: &Context,
    provider: &EmailProvider,
    key: &ProviderId,
    outcome: Outcome,
    extras: &Extras,
) -> Outcome {
    let required = provider
        .spec
        .api
        .as_ref()
        .is_some_and(|a| a.require_verified_domain);
    match (required, outcome.ready, &extras.domain) {
        (true, true, Some(domain)) if !domain.verified() => {
            ctx.transports.remove(key);
            Outcome {
                ready: false,
                reason: Reason::DomainNotVerified,
                message: format!("spec.api.requireVerifiedDomain: {}", domain.message),
                retry: MISCONFIGURED_RETRY,
                dkim: None,
            }
        }
        _ => outcome,
    }
}

/// Verifies `built` and, when it passes, puts it in the registry of
/// verified transports. For a service that cannot check credentials
/// without sending, credentials a send has already seen refused stay
/// AuthFailed until the spec or Secret changes.
async fn verify(ctx: &Context, key: ProviderId, built: credentials::Built) -> Outcome {
    match built.transport.verify().await {
        Ok(verification) => {
            let name = built.transport.name();
            let rejected = match verification {
                Verification::Unverifiable => ctx.transports.rejection(&key, &built.fingerprint),
                Verification::Verified => None,
            };
            if let Some(message) = rejected {
                Outcome {
                    ready: false,
                    reason: Reason::AuthFailed,
                    message: format!("{message} (update the Secret or the spec to try again)"),
                    retry: MISCONFIGURED_RETRY,
                    dkim: None,
                }
            } else {
                let (reason, message) = match verification {
                    Verification::Verified => (
                        Reason::Verified,
                        format!(
                            "{name} verified: the server accepted the connection and credentials"
                        ),
                    ),
                    Verification::Unverifiable => (
                        Reason::Configured,
                        format!(
                            "{name} is configured; it has no call that checks credentials without sending, so the first send will tell"
                        ),
                    ),
                };
                ctx.transports.insert(
                    key,
                    Verified {
                        transport: built.transport,
                        fingerprint: built.fingerprint,
                        verified_at: std::time::Instant::now(),
                        verdict: (reason, message.clone()),
                    },
                );
                Outcome {
                    ready: true,
                    reason,
                    message,
                    retry: REVERIFY_INTERVAL,
                    dkim: None,
                }
            }
        }
        Err(e) => {
            ctx.transports.remove(&key);
            let (reason, retry) = verification_reason(&e);
            Outcome {
                ready: false,
                reason,
                message: e.message,
                retry,
                dkim: None,
            }
        }
    }
}

/// The Ready reason for a failed verification, and when to look again: a
/// server that answered is named by its answer, not called unreachable.
fn verification_reason(e: &crate::transport::SendError) -> (Reason, Duration) {
    match (e.kind, e.code) {
        (FailureKind::Auth, _) => (Reason::AuthFailed, MISCONFIGURED_RETRY),
        (FailureKind::Tls, _) => (Reason::TlsFailed, MISCONFIGURED_RETRY),
        (FailureKind::InvalidRequest, _) => (Reason::InvalidSpec, MISCONFIGURED_RETRY),
        (FailureKind::Rejected, Some(404)) => (Reason::NotFound, MISCONFIGURED_RETRY),
        (FailureKind::Rejected, Some(405)) => (Reason::MethodNotAllowed, MISCONFIGURED_RETRY),
        (FailureKind::Rejected, _) => (Reason::Refused, MISCONFIGURED_RETRY),
        (FailureKind::Unreachable | FailureKind::Transient, _) => {
            (Reason::Unreachable, UNREACHABLE_RETRY)
        }
    }
}

/// Marks a provider not Ready after a send through it failed for a reason of
/// the provider's own (credentials, TLS, the server down). The status change
/// brings a reconcile that verifies the provider again; until it passes, its
/// messages wait instead of spending attempts.
pub async fn mark_unverified(
    ctx: &Context,
    provider: &EmailProvider,
    fingerprint: &str,
    error: &crate::transport::SendError,
) {
    if error.kind == FailureKind::Auth {
        let key = ProviderId::from_provider(provider);
        ctx.transports
            .reject(key, fingerprint.to_string(), error.message.clone());
    }
    let why = match error.kind {
        FailureKind::Auth => Reason::AuthFailed,
        FailureKind::Tls => Reason::TlsFailed,
        _ => Reason::Unreachable,
    };
    let text = format!("a send failed, verifying again: {}", error.message);
    warn!(
        provider = provider.name_any(),
        reason = why.as_str(),
        "a send failed for the provider's own reason"
    );
    let edit = |conditions: &mut Vec<_>, generation| {
        condition::set(conditions, READY, false, why, &text, generation);
        crate::api::health::provider(conditions, generation);
    };
    if let Err(e) = provider_status::edit_conditions(&ctx.client, provider, edit).await {
        warn!(error = %e, "marking the provider not Ready failed; it is verified again on its schedule");
    }
}

/// A warning when the provider signs with DKIM for a domain its
/// `defaultFrom` does not align with (DMARC would not count the signature).
fn dkim_alignment_warning(provider: &EmailProvider) -> Option<String> {
    let dkim = provider.spec.smtp.as_ref()?.dkim.as_ref()?;
    let from = provider.spec.default_from.as_deref()?;
    let domain = from
        .rsplit_once('@')?
        .1
        .trim_end_matches('>')
        .trim()
        .to_string();
    (!crate::transport::dkim::aligned(&domain, &dkim.domain)).then(|| {
        format!(
            "; warning: defaultFrom's domain {domain} does not align with the DKIM domain {} (DMARC counts a signature only for the From domain or its parent)",
            dkim.domain
        )
    })
}

/// Time left until the next verification, or `None` when it is due now.
fn reverify_due_in(status: &EmailProviderStatus) -> Option<Duration> {
    let last = status.last_verified_time.as_ref()?.0;
    let elapsed = jiff::Timestamp::now().duration_since(last);
    let elapsed = Duration::try_from(elapsed).ok()?;
    REVERIFY_INTERVAL
        .checked_sub(elapsed)
        .filter(|d| !d.is_zero())
}

/// Attempts at a status write that another writer keeps beating.
const WRITE_ATTEMPTS: usize = 8;

/// Writes the outcome into the provider's status. When another writer
/// (the bounce reader, the send path) was first, the object is read again
/// and the same outcome written over it: the verification stands, and is
/// not made again.
async fn write_status(
    provider: &EmailProvider,
    ctx: &Context,
    old: EmailProviderStatus,
    outcome: Outcome,
    extras: Extras,
    verified_now: bool,
) -> Result<Action, Error> {
    let mut current = provider.clone();
    let mut old = old;
    for _ in 0..WRITE_ATTEMPTS {
        match write_once(&current, ctx, old, &outcome, &extras, verified_now).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let fresh = provider_status::fresh(&ctx.client, &current)
                    .await
                    .map_err(Error::Kube)?;
                let Some(fresh) = fresh else {
                    return Ok(Action::await_change());
                };
                old = fresh.status.clone().unwrap_or_default();
                current = fresh;
            }
            result => return result.map_err(Error::Kube),
        }
    }
    Ok(Action::requeue(CONTENDED_RETRY))
}

/// One guarded write of the outcome over `old`, when it changes anything.
async fn write_once(
    provider: &EmailProvider,
    ctx: &Context,
    old: EmailProviderStatus,
    outcome: &Outcome,
    extras: &Extras,
    verified_now: bool,
) -> Result<Action, kube::Error> {
    let hook = extras.hook.as_ref();
    let generation = provider.metadata.generation;
    let mut new = old.clone();
    new.transport = Some(
        match (&provider.spec.smtp, &provider.spec.api) {
            (Some(_), _) => "SMTP",
            (None, Some(api)) => api.provider.name(),
            (None, None) => "Unknown",
        }
        .to_string(),
    );
    new.observed_generation = generation;
    new.dkim = outcome.dkim.clone();
    let mut message = outcome.message.clone();
    if outcome.ready
        && let Some(warning) = dkim_alignment_warning(provider)
    {
        message.push_str(&warning);
    }
    new.test_mode = provider
        .spec
        .api
        .as_ref()
        .is_some_and(|a| a.delivers_nothing());
    if new.test_mode {
        message.push_str("; test mode: nothing sent through it is delivered");
    }
    condition::set(
        &mut new.conditions,
        READY,
        outcome.ready,
        outcome.reason,
        &message,
        generation,
    );
    readiness::report(&mut new.conditions, hook, generation);
    new.webhook = hook.and_then(|h| h.registered.clone());
    domain::report(&mut new.conditions, extras.domain.as_ref(), generation);
    new.domain = extras.domain.as_ref().and_then(|d| d.domain.clone());
    suppression_sync::report(&mut new.conditions, extras.sync.as_ref(), generation);
    new.suppression_sync = extras.sync.as_ref().and_then(|s| s.status.clone());
    let has_mailbox = provider
        .spec
        .smtp
        .as_ref()
        .is_some_and(|s| s.bounces.is_some());
    let mailbox = ctx.bounces.state(&ProviderId::from_provider(provider));
    crate::bounces::report(
        &mut new.conditions,
        mailbox.as_ref(),
        has_mailbox,
        generation,
    );
    crate::api::health::provider(&mut new.conditions, generation);
    if verified_now && outcome.ready {
        new.last_verified_time = Some(Time(jiff::Timestamp::now()));
    }
    let namespace = provider.namespace().unwrap_or_default();
    let transport = new.transport.clone().unwrap_or_default();
    ctx.telemetry.metrics.set_provider_ready(
        &namespace,
        &provider.name_any(),
        &transport,
        outcome.ready,
    );
    let changed = !condition::same_meaning(&old.conditions, &new.conditions)
        || old.transport != new.transport
        || old.observed_generation != new.observed_generation
        || old.dkim != new.dkim
        || old.last_verified_time != new.last_verified_time;
    if changed {
        if outcome.ready {
            info!(reason = outcome.reason.as_str(), "provider ready");
        } else {
            warn!(reason = outcome.reason.as_str(), message = %outcome.message, "provider not ready");
        }
        // The recent counts are another writer's: left as they are.
        new.recent = None;
        provider_status::patch_guarded(&ctx.client, provider, serde_json::json!(new)).await?;
    }
    Ok(Action::requeue(outcome.retry))
}
