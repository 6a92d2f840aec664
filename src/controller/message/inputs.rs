//! Gathers what a message's gate decides on, from the caches: its provider
//! (namespaced or cluster-wide), whether its namespace may use a
//! cluster-wide one (the one API read: a namespace selector's labels), its
//! template, its provider's verified transport and its retry limits.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::gate::{Sender, View};
use super::limits::Limits;
use crate::api::ProviderId;
use crate::api::message::ProviderKind;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate};
use crate::controller::access::{self, Access};
use crate::controller::context::{Context, Verified};
use crate::controller::error::Error;
use crate::controller::suppressions::Scope;

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
    /// The provider's suppression list.
    pub suppressions: Scope,
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
        }
    }
}

/// Gathers `message`'s inputs.
pub async fn gather(message: &EmailMessage, ctx: &Context) -> Result<Inputs, Error> {
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
    let template = message.spec.template_ref.as_ref().map(|template_ref| {
        ctx.caches
            .templates
            .get(&ObjectRef::new(&template_ref.name).within(&namespace))
    });
    let verified = provider
        .as_deref()
        .and_then(|p| ctx.transports.get(&key_of(p)));
    let limits = Limits::of(message, provider.as_deref(), &ctx.settings);
    Ok(Inputs {
        provider,
        access,
        template,
        verified,
        limits,
        serves_cluster_providers: ctx.settings.cluster_provider_namespace.is_some(),
        suppressions: Scope::of(
            ctx.caches.suppressions.clone(),
            &namespace,
            &message.spec.provider_ref,
            ctx.settings.cluster_provider_namespace.as_deref(),
        ),
    })
}

/// The provider `message` names, from the cache, and the ClusterEmailProvider
/// behind it when it names one.
pub fn provider_of(
    message: &EmailMessage,
    ctx: &Context,
) -> (
    Option<Arc<EmailProvider>>,
    Option<Arc<ClusterEmailProvider>>,
) {
    let name = &message.spec.provider_ref.name;
    match message.spec.provider_ref.kind {
        ProviderKind::EmailProvider => {
            let namespace = message.namespace().unwrap_or_default();
            let found = ctx
                .caches
                .providers
                .get(&ObjectRef::<EmailProvider>::new(name).within(&namespace));
            (found, None)
        }
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
