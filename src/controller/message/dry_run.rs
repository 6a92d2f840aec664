//! `spec.dryRun`: once the gate has passed a message (provider, template,
//! tenancy, suppression), the rest of a send's checks run (attachments
//! read, the service's own limits, a bulk message's every recipient built)
//! and what would be sent is written into `status.dryRun`, phase DryRun.
//! Nothing is claimed, nothing reaches the server, the ledger is not
//! touched; quotas and holds are looked at without taking a place.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::email::{build, recipient_spec};
use super::gate::{Stop, send_key};
use super::inputs::{Inputs, key_of};
use super::{deliverability, verdict};
use crate::api::condition::{self, Reason, SENT};
use crate::api::message::DryRunResult;
use crate::api::{EmailMessage, EmailProvider, Phase};
use crate::compose::Email;
use crate::controller::context::Context;
use crate::controller::error::Error;

/// Entries kept in each list of the result.
const LISTED: usize = 20;
/// Headers kept.
const HEADERS: usize = 30;

/// Runs the rest of the checks and writes the result.
pub async fn run(
    ctx: &Context,
    message: &EmailMessage,
    inputs: &Inputs,
    email: Option<Box<Email>>,
) -> Result<Action, Error> {
    let deadline = inputs.limits.deadline;
    let Some(provider) = inputs.provider.as_deref() else {
        return Ok(Action::await_change());
    };
    let mut result = DryRunResult {
        provider: format!("{}/{}", kind_of(provider), provider.name_any()),
        ..Default::default()
    };
    // The files' memory is held while they are described.
    let (email, _attachment_memory) = match email {
        Some(email) => match super::prepare::attach(ctx, message, provider, Some(email)).await? {
            Ok(attached) => attached,
            Err(stop) => return verdict::write(ctx, message, stop, deadline).await,
        },
        None => (None, None),
    };
    match email {
        Some(email) => {
            if let Err(stop) = limits(provider, &email) {
                return verdict::write(ctx, message, stop, deadline).await;
            }
            describe(&mut result, &email);
            result.recipients = (email.to.len() + email.cc.len() + email.bcc.len()) as u32;
        }
        None => bulk(ctx, message, inputs, provider, &mut result),
    }
    result.would_wait = would_wait(ctx, message, inputs, provider);
    write(ctx, message, result).await
}

fn kind_of(provider: &EmailProvider) -> &'static str {
    match provider.namespace() {
        Some(_) => "EmailProvider",
        None => "ClusterEmailProvider",
    }
}

/// The service's own limits, as a send would meet them.
fn limits(provider: &EmailProvider, email: &Email) -> Result<(), Stop> {
    let Some(api) = &provider.spec.api else {
        return Ok(());
    };
    crate::transport::api::limits::check(api.provider, email).map_err(|e| Stop::End {
        phase: Phase::Failed,
        reason: Reason::InvalidRequest,
        text: e.message,
    })
}

fn describe(result: &mut DryRunResult, email: &Email) {
    result.from = email.from.to_string();
    result.subject = email.subject.clone();
    result.to = email
        .to
        .iter()
        .chain(&email.cc)
        .chain(&email.bcc)
        .take(LISTED)
        .map(|m| m.to_string())
        .collect();
    result.size_bytes = crate::transport::api::limits::email_bytes(email) as u64;
    result.headers = email
        .headers
        .iter()
        .take(HEADERS)
        .map(|(n, v)| format!("{n}: {}", v.chars().take(256).collect::<String>()))
        .collect();
    result.attachments = email
        .attachments
        .iter()
        .map(|a| a.filename.clone())
        .collect();
}

/// A bulk message: every recipient's email built, suppressions and the
/// tenancy guard applied, as its batches would be.
fn bulk(
    ctx: &Context,
    message: &EmailMessage,
    inputs: &Inputs,
    provider: &EmailProvider,
    result: &mut DryRunResult,
) {
    let namespace = message.namespace().unwrap_or_default();
    let keys = match &inputs.unsubscribe_keys {
        Some(Ok(keys)) => Some(keys.as_ref()),
        _ => None,
    };
    let hosting = deliverability::Hosting {
        namespace: &namespace,
        keys,
    };
    let key = send_key(message);
    let template = inputs.template.clone().flatten();
    let unsubscribe = provider.spec.unsubscribe.as_ref();
    let mut reached = 0u32;
    for i in 0..message.spec.recipients.len() {
        let field = format!("spec.recipients[{i}].to");
        let Some(spec) = recipient_spec(&message.spec, i, unsubscribe) else {
            break;
        };
        let built = build(
            &spec,
            template.as_deref(),
            &provider.spec,
            &format!("{key}.{i}"),
            hosting,
        );
        let mut email = match built {
            Ok(email) => email,
            Err(text) => {
                skip(result, text.replace("spec.to[0]", &field));
                continue;
            }
        };
        if let Some(policy) = inputs.tenant.as_ref()
            && let crate::controller::tenants::Guarded::Refused(text) =
                crate::controller::tenants::guard(&mut email, policy, &field)
        {
            skip(result, text);
            continue;
        }
        let to = email
            .to
            .first()
            .map(|m| m.email.to_string())
            .unwrap_or_default();
        if let Some(found) = inputs.suppressions.find(&to) {
            skip(result, found.explain(&field));
            continue;
        }
        if let Err(Stop::End { text, .. }) = limits(provider, &email) {
            skip(result, format!("{field}: {text}"));
            continue;
        }
        if reached == 0 {
            describe(result, &email);
            result.to.clear();
        }
        if result.to.len() < LISTED {
            result
                .to
                .push(email.to.first().map(|m| m.to_string()).unwrap_or_default());
        }
        reached += 1;
    }
    result.recipients = reached;
    let _ = ctx;
}

fn skip(result: &mut DryRunResult, text: String) {
    if result.skipped.len() < LISTED {
        result.skipped.push(text.chars().take(512).collect());
    }
}

/// What would hold the message back when sent: a future `sendAt`, the
/// namespace's quota or reputation hold (looked at, no place taken).
fn would_wait(
    ctx: &Context,
    message: &EmailMessage,
    inputs: &Inputs,
    provider: &EmailProvider,
) -> Option<String> {
    if let Some(send_at) = &message.spec.send_at
        && send_at.0 > jiff::Timestamp::now()
    {
        return Some(format!("spec.sendAt: not before {}", send_at.0));
    }
    let policy = inputs.tenant.as_ref()?;
    let namespace = message.namespace().unwrap_or_default();
    let now = jiff::Timestamp::now();
    match ctx
        .usage
        .admit(&key_of(provider), &namespace, policy, now, 0)
    {
        Ok(_) => None,
        Err(held) => Some(format!("{held:?}")),
    }
}

/// Writes the result: phase DryRun, `Sent` False with reason DryRun.
async fn write(
    ctx: &Context,
    message: &EmailMessage,
    result: DryRunResult,
) -> Result<Action, Error> {
    let generation = message.metadata.generation;
    let mut status = message.status.clone().unwrap_or_default();
    status.phase = Some(Phase::DryRun);
    status.observed_generation = generation;
    status.next_attempt_time = None;
    let skipped = if result.skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped", result.skipped.len())
    };
    let text = format!(
        "dry run: nothing was sent; it would go through {} to {} recipient(s){skipped}, {} bytes{}",
        result.provider,
        result.recipients,
        result.size_bytes,
        result
            .would_wait
            .as_ref()
            .map(|w| format!("; it would wait: {w}"))
            .unwrap_or_default()
    );
    status.dry_run = Some(result);
    condition::set(
        &mut status.conditions,
        SENT,
        false,
        Reason::DryRun,
        text,
        generation,
    );
    let api = verdict::api(ctx, message);
    match verdict::replace_status(&api, message, status).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if e.is_conflict() => Ok(Action::requeue(crate::controller::error::CONFLICT_RETRY)),
        Err(e) => Err(e),
    }
}
