//! Which provider of its EmailRoute a message goes out through now: the
//! providers that can take it (found, allowed, not suspended, verified
//! here), in the route's order (`Failover`) or with a first pick by weight
//! (`Weighted`), the ones this message was moved on from last, each asked
//! in turn whether its circuit breaker lets the message through. A message
//! whose last attempt may have reached the server stays with that provider.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::gate::{Stop, TRANSPORT_WARMUP_RETRY};
use crate::api::condition::{self, READY, Reason};
use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::route::{EmailRoute, Strategy};
use crate::api::{ClusterEmailProvider, EmailMessage, EmailMessageStatus, EmailProvider, Phase};
use crate::api::{ProviderAttempt, ProviderId};
use crate::controller::access::{self, Access};
use crate::controller::breaker::Admission;
use crate::controller::context::{Context, Verified};
use crate::controller::error::Error;

/// A route's provider as this message sees it now.
pub struct Entry {
    /// The provider, as the route names it.
    pub reference: ProviderRef,
    /// Its weight (Weighted).
    pub weight: u32,
    /// The provider and its verified transport, when it can take messages.
    pub usable: Result<(Arc<EmailProvider>, Verified), String>,
}

/// The route and the provider chosen for this attempt.
pub struct Plan {
    /// The route's name.
    pub route: String,
    /// Its providers, in its order.
    pub entries: Vec<Entry>,
    /// Which entry this attempt goes through.
    pub chosen: usize,
}

impl Plan {
    /// The chosen provider and its transport.
    pub fn chosen(&self) -> Option<(Arc<EmailProvider>, Verified)> {
        self.entries.get(self.chosen)?.usable.clone().ok()
    }

    /// The chosen provider as a reference.
    pub fn chosen_ref(&self) -> Option<&ProviderRef> {
        self.entries.get(self.chosen).map(|e| &e.reference)
    }

    /// Every provider of the route.
    pub fn references(&self) -> Vec<ProviderRef> {
        self.entries.iter().map(|e| e.reference.clone()).collect()
    }

    /// Whether another provider than the chosen one could take the message
    /// now and was not moved on from in this round.
    pub fn has_another(&self, status: &EmailMessageStatus) -> bool {
        self.entries.iter().enumerate().any(|(i, entry)| {
            i != self.chosen && entry.usable.is_ok() && !passed_over(status, &entry.reference)
        })
    }
}

/// Chooses the provider of `route` that `message` goes out through now, or
/// says why none can take it.
pub async fn choose(
    message: &EmailMessage,
    route: &EmailRoute,
    ctx: &Context,
) -> Result<Result<Plan, Stop>, Error> {
    let entries = read(message, route, ctx).await?;
    let route_name = route.name_any();
    if let Some(stop) = template_refusal(message, &route_name, &entries) {
        return Ok(Err(stop));
    }
    let status = message.status.clone().unwrap_or_default();
    let uid = message.uid().unwrap_or_default();
    let pin = pinned(&status);
    let order = match pin {
        Some(pin) => match entries.iter().position(|e| e.reference == *pin) {
            Some(i) => vec![i],
            None => return Ok(Err(unlisted(pin, &route_name))),
        },
        None => order(route.spec.strategy, &entries, &status, &uid),
    };
    let now = jiff::Timestamp::now();
    let chosen = match pin {
        // A message held to its provider goes when the provider can take
        // it, as a message naming that provider would: the breaker keeps
        // new mail away, not a retry that has nowhere else to go.
        Some(_) => order
            .iter()
            .copied()
            .find(|i| entries[*i].usable.is_ok())
            .ok_or_else(Vec::new),
        None => admitted(ctx, &entries, &order, &uid, now),
    };
    match chosen {
        Ok(chosen) => Ok(Ok(Plan {
            route: route_name,
            entries,
            chosen,
        })),
        Err(open) => Ok(Err(none_can(&entries, open, pin, &route_name, now))),
    }
}

/// Each provider of `route`, and whether it can take the message now.
async fn read(
    message: &EmailMessage,
    route: &EmailRoute,
    ctx: &Context,
) -> Result<Vec<Entry>, Error> {
    let namespace = message.namespace().unwrap_or_default();
    let mut entries = Vec::with_capacity(route.spec.providers.len());
    for listed in &route.spec.providers {
        let reference = listed.reference();
        let usable = usable(&reference, &namespace, ctx).await?;
        entries.push(Entry {
            reference,
            weight: listed.weight(),
            usable,
        });
    }
    Ok(entries)
}

/// The providers whose breaker is open, each with until when.
type Open = Vec<(ProviderRef, jiff::Timestamp)>;

/// The first usable provider in `order` whose circuit breaker lets message
/// `who` through; else the open breakers met.
fn admitted(
    ctx: &Context,
    entries: &[Entry],
    order: &[usize],
    who: &str,
    now: jiff::Timestamp,
) -> Result<usize, Open> {
    let mut open = Vec::new();
    for i in order.iter().copied() {
        let Ok((provider, _)) = &entries[i].usable else {
            continue;
        };
        let id = ProviderId::from_provider(provider);
        let persisted = provider.status.as_ref().and_then(|s| s.breaker.as_ref());
        match ctx.breakers.admit(&id, persisted, now, who) {
            Admission::Closed | Admission::Probe => return Ok(i),
            Admission::Open { until } => open.push((entries[i].reference.clone(), until)),
        }
    }
    Err(open)
}

/// The wait of a message held to a provider its route no longer lists.
fn unlisted(pin: &ProviderRef, route: &str) -> Stop {
    let text = format!(
        "the last attempt went through {} {:?}, which may have the message; it is not sent through another provider, and EmailRoute {route:?} no longer lists it. Annotate mailroom.dev/retry=true after checking",
        pin.kind_name(),
        pin.name
    );
    wait(Reason::NoProviderAvailable, text, None)
}

/// The wait when no provider can take the message: each provider and why,
/// looked at again when the first breaker's cool-down ends, or soon while
/// a provider is being verified here (that wakes nobody).
fn none_can(
    entries: &[Entry],
    open: Open,
    pin: Option<&ProviderRef>,
    route: &str,
    now: jiff::Timestamp,
) -> Stop {
    let mut why: Vec<String> = open
        .iter()
        .map(|(p, until)| {
            format!(
                "{} {:?}: circuit breaker open until {until}",
                p.kind_name(),
                p.name
            )
        })
        .collect();
    why.extend(
        entries
            .iter()
            .filter_map(|e| e.usable.as_ref().err().cloned()),
    );
    let why = why.join("; ");
    let text = match pin {
        Some(pin) => format!(
            "the last attempt through {} {:?} may have reached the server, so the message is not sent through another provider of EmailRoute {route:?}; it waits for that one: {why}",
            pin.kind_name(),
            pin.name
        ),
        None => format!("no provider of EmailRoute {route:?} can take the message now: {why}"),
    };
    let soonest = open.iter().map(|(_, until)| *until).min();
    let mut until = soonest.map(|t| {
        std::time::Duration::try_from(t.duration_since(now))
            .unwrap_or_default()
            .max(TRANSPORT_WARMUP_RETRY)
    });
    let warming = entries
        .iter()
        .any(|e| e.usable.as_ref().is_err_and(|why| why.ends_with(WARMING)));
    if warming {
        until = Some(until.map_or(TRANSPORT_WARMUP_RETRY, |u| u.min(TRANSPORT_WARMUP_RETRY)));
    }
    wait(Reason::NoProviderAvailable, text, until)
}

/// The provider the message must stay with: the one whose last attempt may
/// have reached the server (interrupted, or ended without a clear answer).
fn pinned(status: &EmailMessageStatus) -> Option<&ProviderRef> {
    let uncertain = status.phase == Some(Phase::Sending)
        || status
            .last_error
            .as_ref()
            .is_some_and(|e| e.may_have_been_delivered);
    uncertain.then_some(status.provider.as_ref()).flatten()
}

/// Whether the message was moved on from `provider` in this round.
pub fn passed_over(status: &EmailMessageStatus, provider: &ProviderRef) -> bool {
    status
        .provider_attempts
        .iter()
        .any(|a| a.provider == *provider && a.passed_over)
}

/// The order the usable providers are asked in: those not moved on from
/// first (by weight first under Weighted), then the others (a new round).
pub fn order(
    strategy: Strategy,
    entries: &[Entry],
    status: &EmailMessageStatus,
    uid: &str,
) -> Vec<usize> {
    let usable = |i: &usize| entries[*i].usable.is_ok();
    let (fresh, again): (Vec<usize>, Vec<usize>) = (0..entries.len())
        .filter(usable)
        .partition(|i| !passed_over(status, &entries[*i].reference));
    let mut order = fresh;
    if strategy == Strategy::Weighted {
        let weights: Vec<u32> = order.iter().map(|i| entries[*i].weight).collect();
        if let Some(first) = weighted_pick(&weights, uid) {
            let picked = order.remove(first);
            order.insert(0, picked);
        }
    }
    order.extend(again);
    order
}

/// The index `key` falls on when `weights` share the range of a stable
/// hash of it; `None` for no weights.
pub fn weighted_pick(weights: &[u32], key: &str) -> Option<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let mut point = u64::from_be_bytes(first) % total;
    for (i, weight) in weights.iter().enumerate() {
        let weight = u64::from(*weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

/// What an entry says while this controller has not verified a provider
/// that is Ready (just after a start) or not verified yet: soon usable.
const WARMING: &str = "is being verified";

/// Whether a provider can take messages now, and if not, why (in words).
async fn usable(
    reference: &ProviderRef,
    namespace: &str,
    ctx: &Context,
) -> Result<Result<(Arc<EmailProvider>, Verified), String>, Error> {
    let label = format!("{} {:?}", reference.kind_name(), reference.name);
    let provider = match reference.kind {
        ProviderKind::EmailProvider => ctx
            .caches
            .providers
            .get(&ObjectRef::<EmailProvider>::new(&reference.name).within(namespace)),
        ProviderKind::ClusterEmailProvider => {
            let Some(cluster) = ctx
                .caches
                .cluster_providers
                .get(&ObjectRef::<ClusterEmailProvider>::new(&reference.name))
            else {
                return Ok(Err(format!("{label} not found")));
            };
            let allowed = access::check(&ctx.client, &cluster, namespace)
                .await
                .map_err(Error::Kube)?;
            if let Access::Denied(text) = allowed {
                return Ok(Err(text));
            }
            Some(Arc::new(cluster.as_provider()))
        }
        ProviderKind::EmailRoute => return Ok(Err(format!("{label}: routes do not nest"))),
    };
    let Some(provider) = provider else {
        return Ok(Err(format!("{label} not found in namespace {namespace:?}")));
    };
    if provider.spec.suspend {
        return Ok(Err(format!("{label} is suspended (spec.suspend)")));
    }
    match ctx.transports.get(&ProviderId::from_provider(&provider)) {
        Some(verified) => Ok(Ok((provider, verified))),
        None => {
            let ready = provider
                .status
                .as_ref()
                .and_then(|s| condition::find(&s.conditions, READY));
            Ok(Err(match ready {
                Some(c) if c.status != "True" => {
                    format!("{label} is not Ready: {}: {}", c.reason, c.message)
                }
                _ => format!("{label} {WARMING}"),
            }))
        }
    }
}

/// A message with `providerTemplate` through a route whose providers are
/// not all of one service: the template lives at one service only.
fn template_refusal(message: &EmailMessage, route: &str, entries: &[Entry]) -> Option<Stop> {
    message.spec.provider_template.as_ref()?;
    let services: std::collections::BTreeSet<String> = entries
        .iter()
        .filter_map(|e| e.usable.as_ref().ok())
        .map(|(provider, _)| match &provider.spec.api {
            Some(api) => api.provider.name().to_string(),
            None => "SMTP".to_string(),
        })
        .collect();
    let smtp = services.contains("SMTP");
    if services.len() <= 1 && !smtp {
        return None;
    }
    let list = services.into_iter().collect::<Vec<_>>().join(", ");
    Some(Stop::End {
        phase: Phase::Failed,
        reason: Reason::InvalidRequest,
        text: format!(
            "spec.providerTemplate: EmailRoute {route:?} sends through {list}; a stored template renders only at the one service that keeps it (and SMTP keeps none): name a route whose providers are all of that service, or use a templateRef"
        ),
    })
}

fn wait(reason: Reason, text: String, until: Option<std::time::Duration>) -> Stop {
    Stop::Wait {
        reason,
        text,
        until,
    }
}

/// `status` after an attempt through `provider` was claimed: the provider
/// of the latest attempt, and for a routed message its attempts counted.
pub fn note_claim(status: &mut EmailMessageStatus, provider: &ProviderRef, routed: bool) {
    status.provider = Some(provider.clone());
    if !routed {
        return;
    }
    let attempts = &mut status.provider_attempts;
    let room = attempts.len() < crate::api::route::MAX_ROUTE_PROVIDERS;
    match attempts.iter_mut().find(|a| a.provider == *provider) {
        Some(attempt) => attempt.attempts = attempt.attempts.saturating_add(1),
        None if room => attempts.push(ProviderAttempt {
            provider: provider.clone(),
            attempts: 1,
            last_reason: None,
            passed_over: false,
        }),
        None => {}
    }
}

/// `status` after the attempt through its latest provider: the failure's
/// reason (none after a success), and whether the message moved on from it.
/// A failure that does not move on ends the round: every provider may be
/// tried again. After a success the record stays as it was.
pub fn note_outcome(status: &mut EmailMessageStatus, reason: Option<Reason>, moved_on: bool) {
    let Some(provider) = status.provider.clone() else {
        return;
    };
    if !moved_on && reason.is_some() {
        for attempt in &mut status.provider_attempts {
            attempt.passed_over = false;
        }
    }
    if let Some(attempt) = status
        .provider_attempts
        .iter_mut()
        .find(|a| a.provider == provider)
    {
        attempt.last_reason = reason.map(String::from);
        attempt.passed_over = moved_on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weighted_pick_follows_the_weights() {
        let weights = [70, 30];
        let mut counts = [0u32; 2];
        for i in 0..10_000 {
            let pick = weighted_pick(&weights, &format!("uid-{i}")).expect("a pick");
            counts[pick] += 1;
        }
        let share = f64::from(counts[0]) / 10_000.0;
        assert!((0.68..=0.72).contains(&share), "{counts:?}");
        assert_eq!(weighted_pick(&[], "x"), None);
        assert_eq!(weighted_pick(&[0, 5], "x"), Some(1));
        // The same message picks the same provider each time it looks.
        assert_eq!(
            weighted_pick(&weights, "uid-7"),
            weighted_pick(&weights, "uid-7")
        );
    }

    fn reference(name: &str) -> ProviderRef {
        ProviderRef {
            kind: ProviderKind::EmailProvider,
            name: name.into(),
        }
    }

    #[test]
    fn a_claim_and_its_outcome_are_counted_per_provider() {
        let mut status = EmailMessageStatus::default();
        note_claim(&mut status, &reference("a"), true);
        note_outcome(&mut status, Some(Reason::Unreachable), true);
        assert!(passed_over(&status, &reference("a")));
        note_claim(&mut status, &reference("b"), true);
        note_outcome(&mut status, Some(Reason::TransientFailure), false);
        // The round ended: both may be tried again.
        assert!(!passed_over(&status, &reference("a")));
        assert!(!passed_over(&status, &reference("b")));
        note_claim(&mut status, &reference("a"), true);
        note_outcome(&mut status, Some(Reason::Unreachable), true);
        note_claim(&mut status, &reference("b"), true);
        note_outcome(&mut status, None, false);
        // A success keeps the record of the one moved on from.
        assert!(passed_over(&status, &reference("a")));
        assert_eq!(status.provider, Some(reference("b")));
        let a = &status.provider_attempts[0];
        assert_eq!(
            (a.attempts, a.last_reason.as_deref()),
            (2, Some("Unreachable"))
        );
        let b = &status.provider_attempts[1];
        assert_eq!((b.attempts, b.last_reason.as_deref()), (2, None));
        // A message naming a provider records which, and no list.
        let mut direct = EmailMessageStatus::default();
        note_claim(&mut direct, &reference("a"), false);
        assert_eq!(direct.provider, Some(reference("a")));
        assert!(direct.provider_attempts.is_empty());
    }
}
