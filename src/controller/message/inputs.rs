//! Gathers what a message's gate decides on, from the caches: its provider
//! (namespaced or cluster-wide), whether its namespace may use a
//! cluster-wide one (the one API read: a namespace selector's labels), its
//! template, its provider's verified transport and its retry limits.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::deliverability;
use super::gate::{Sender, Stop, View};
use super::limits::Limits;
use super::route::{self, Plan};
use crate::api::ProviderId;
use crate::api::condition::Reason;
use crate::api::deliverability::list_of;
use crate::api::message::ProviderKind;
use crate::api::tenancy::TenantPolicy;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailRoute, EmailTemplate};
use crate::controller::access::{self, Access};
use crate::controller::context::{Context, Verified};
use crate::controller::error::Error;
use crate::controller::suppressions::Scope;
use crate::controller::tenants;
use crate::delivery::unsubscribe::keys::KeysError;
use crate::delivery::unsubscribe::token::KeyRing;

/// What the caches know about one message's sending.
pub struct Inputs {
    /// The provider it names (a cluster-wide one seen as a provider).
    pub provider: Option<Arc<EmailProvider>>,
    /// For a cluster-wide provider: whether the namespace may use it.
    pub access: Option<Access>,
    /// `None` when no template is named; `Some(None)` when it is missing.
    pub template: Option<Option<Arc<EmailTemplate>>>,
    /// The provider's verified transport, if it has one here.
    pub verified: Option<Verified>,
    /// The retry limits.
    pub limits: Limits,
    /// Whether this controller serves ClusterEmailProviders at all.
    pub serves_cluster_providers: bool,
    /// The provider's suppression list (every provider's of a route).
    pub suppressions: Scope,
    /// For a message naming an EmailRoute: the route and its provider
    /// chosen for this attempt, or why none can take the message now.
    pub route: Option<Result<Plan, Stop>>,
    /// The provider's policy for the message's namespace (`spec.tenants`).
    pub tenant: Option<TenantPolicy>,
    /// The unsubscribe keys, when the message's emails carry a hosted
    /// unsubscribe (or why they cannot be had).
    pub unsubscribe_keys: Option<Result<Arc<KeyRing>, KeysError>>,
}

impl Inputs {
    /// What the gate looks at.
    pub fn view(&self) -> View<'_> {
        View {
            provider: self.provider.as_deref(),
            access: self.access.as_ref(),
            template: self.template.as_ref().map(|found| found.as_deref()),
            sender: self
                .verified
                .as_ref()
                .map(|v| Sender::of(v.transport.as_ref())),
            limits: self.limits.clone(),
            serves_cluster_providers: self.serves_cluster_providers,
            suppressions: Some(&self.suppressions),
            route: match &self.route {
                Some(Err(stop)) => Some(stop),
                _ => None,
            },
            tenant: self.tenant.as_ref(),
            unsubscribe_keys: self.unsubscribe_keys.as_ref(),
        }
    }
}

/// Gathers `message`'s inputs.
pub async fn gather(message: &EmailMessage, ctx: &Context) -> Result<Inputs, Error> {
    if message.spec.provider_ref.kind == ProviderKind::EmailRoute {
        return gather_routed(message, ctx).await;
    }
    let namespace = message.namespace().unwrap_or_default();
    let (provider, cluster_provider) = provider_of(message, ctx);
    let access = match &cluster_provider {
        Some(cluster) => Some(
            access::check(&ctx.client, cluster, &namespace)
                .await
                .map_err(Error::Kube)?,
        ),
        None => None,
    };
    let template = template_of(message, ctx, &namespace);
    let verified = provider
        .as_deref()
        .and_then(|p| ctx.transports.get(&key_of(p)));
    let limits = Limits::of(message, provider.as_deref(), &ctx.settings);
    let tenant = tenant_of(ctx, provider.as_deref(), &namespace).await?;
    let unsubscribe_keys = unsubscribe_keys(ctx, message, provider.as_deref()).await;
    Ok(Inputs {
        suppressions: scope(
            ctx,
            message,
            provider.as_deref(),
            std::slice::from_ref(&message.spec.provider_ref),
        ),
        provider,
        access,
        template,
        verified,
        limits,
        serves_cluster_providers: ctx.settings.cluster_provider_namespace.is_some(),
        route: None,
        tenant,
        unsubscribe_keys,
    })
}

/// Gathers the inputs of a message naming an EmailRoute: the provider the
/// route gives it now stands where a named provider would.
async fn gather_routed(message: &EmailMessage, ctx: &Context) -> Result<Inputs, Error> {
    let namespace = message.namespace().unwrap_or_default();
    let name = &message.spec.provider_ref.name;
    let found = ctx
        .caches
        .routes
        .get(&ObjectRef::<EmailRoute>::new(name).within(&namespace));
    let route = match &found {
        Some(route) => route::choose(message, route, ctx).await?,
        None => Err(Stop::Wait {
            reason: Reason::RouteNotFound,
            text: format!(
                "spec.providerRef: EmailRoute {name:?} not found in namespace {namespace:?}"
            ),
            until: None,
        }),
    };
    let chosen = route.as_ref().ok().and_then(Plan::chosen);
    let (provider, verified) = match chosen {
        Some((provider, verified)) => (Some(provider), Some(verified)),
        None => (None, None),
    };
    let listed = match (&route, &found) {
        (Ok(plan), _) => plan.references(),
        (Err(_), Some(route)) => route.spec.providers.iter().map(|p| p.reference()).collect(),
        (Err(_), None) => Vec::new(),
    };
    let tenant = tenant_of(ctx, provider.as_deref(), &namespace).await?;
    let unsubscribe_keys = unsubscribe_keys(ctx, message, provider.as_deref()).await;
    Ok(Inputs {
        limits: Limits::of(message, provider.as_deref(), &ctx.settings),
        suppressions: scope(ctx, message, provider.as_deref(), &listed),
        unsubscribe_keys,
        tenant,
        provider,
        // Each provider's access was checked as the route was read.
        access: None,
        template: template_of(message, ctx, &namespace),
        verified,
        serves_cluster_providers: ctx.settings.cluster_provider_namespace.is_some(),
        route: Some(route),
    })
}

/// The policy of `provider` (`spec.tenants`) that governs `namespace`.
async fn tenant_of(
    ctx: &Context,
    provider: Option<&EmailProvider>,
    namespace: &str,
) -> Result<Option<TenantPolicy>, Error> {
    match provider {
        Some(provider) => tenants::policy_of(&ctx.client, provider, namespace)
            .await
            .map_err(Error::Kube),
        None => Ok(None),
    }
}

/// The template the message names: `None` when it names none, `Some(None)`
/// when it is missing.
fn template_of(
    message: &EmailMessage,
    ctx: &Context,
    namespace: &str,
) -> Option<Option<Arc<EmailTemplate>>> {
    message.spec.template_ref.as_ref().map(|template_ref| {
        ctx.caches
            .templates
            .get(&ObjectRef::new(&template_ref.name).within(namespace))
    })
}

/// The suppressions `message` honours: the lists of `providers` as it
/// names them (unless it ignores them), and the unsubscribes from its
/// mailing list (through `provider`, the one it goes through now).
fn scope(
    ctx: &Context,
    message: &EmailMessage,
    provider: Option<&EmailProvider>,
    providers: &[crate::api::message::ProviderRef],
) -> Scope {
    let namespace = message.namespace().unwrap_or_default();
    let unsubscribe = provider.and_then(|p| p.spec.unsubscribe.as_ref());
    Scope::of(
        ctx.caches.suppressions.clone(),
        &namespace,
        providers,
        ctx.settings.cluster_provider_namespace.as_deref(),
    )
    .ignoring_providers(message.spec.ignore_suppression)
    .on_list(&namespace, list_of(&message.spec, unsubscribe))
}

/// The unsubscribe keys, when `message`'s emails through `provider` carry
/// a hosted unsubscribe: the Secret is made the first time.
async fn unsubscribe_keys(
    ctx: &Context,
    message: &EmailMessage,
    provider: Option<&EmailProvider>,
) -> Option<Result<Arc<KeyRing>, KeysError>> {
    let provider = provider?;
    if !deliverability::needs_hosting(&message.spec, &provider.spec) {
        return None;
    }
    Some(ctx.unsubscribe_keys.for_sealing().await)
}

/// The provider `message` names, from the cache, and the ClusterEmailProvider
/// behind it when it names one; for a message naming an EmailRoute, the
/// provider its latest attempt went through.
pub fn provider_of(
    message: &EmailMessage,
    ctx: &Context,
) -> (
    Option<Arc<EmailProvider>>,
    Option<Arc<ClusterEmailProvider>>,
) {
    let named = &message.spec.provider_ref;
    let reference = match named.kind {
        ProviderKind::EmailRoute => message.status.as_ref().and_then(|s| s.provider.as_ref()),
        _ => Some(named),
    };
    let Some(reference) = reference else {
        return (None, None);
    };
    let name = &reference.name;
    match reference.kind {
        ProviderKind::EmailProvider => {
            let namespace = message.namespace().unwrap_or_default();
            let found = ctx
                .caches
                .providers
                .get(&ObjectRef::<EmailProvider>::new(name).within(&namespace));
            (found, None)
        }
        ProviderKind::EmailRoute => (None, None),
        ProviderKind::ClusterEmailProvider => {
            let cluster = ctx
                .caches
                .cluster_providers
                .get(&ObjectRef::<ClusterEmailProvider>::new(name));
            let provider = cluster.as_ref().map(|c| Arc::new(c.as_provider()));
            (provider, cluster)
        }
    }
}

/// A provider's identity (a cluster-wide one has no namespace).
pub fn key_of(provider: &EmailProvider) -> ProviderId {
    ProviderId::from_provider(provider)
}
