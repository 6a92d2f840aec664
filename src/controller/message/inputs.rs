//! Gathers what a message's gate decides on, from the caches: its provider
//! (namespaced or cluster-wide), whether its namespace may use a
//! cluster-wide one (the one API read: a namespace selector's labels), its
//! template, its provider's verified transport and its retry limits.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::gate::{Sender, View};
use crate::api::message::ProviderKind;
use crate::api::provider::RetryPolicy;
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailTemplate};
use crate::controller::access::{self, Access};
use crate::controller::context::{Context, ProviderKey, Settings, Verified};
use crate::controller::error::Error;

/// The retry limits that apply to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Attempts (or, for a bulk message, tries of one batch) before giving up.
    pub max_attempts: u32,
    /// When attempts end; `None` when it lies past representable time.
    pub deadline: Option<jiff::Timestamp>,
}

impl Limits {
    /// The message's own limits, else the provider's, else the controller's.
    pub fn of(
        message: &EmailMessage,
        provider: Option<&EmailProvider>,
        settings: &Settings,
    ) -> Self {
        let own = message.spec.retry.as_ref();
        let inherited = provider.and_then(|p| p.spec.retry.as_ref());
        let pick =
            |f: fn(&RetryPolicy) -> Option<u32>| own.and_then(f).or_else(|| inherited.and_then(f));
        let max_attempts = pick(|r| r.max_attempts).unwrap_or(settings.max_attempts);
        let seconds = pick(|r| r.deadline_seconds).unwrap_or(settings.deadline_seconds);
        Self {
            max_attempts,
            deadline: deadline(message, seconds),
        }
    }

    /// Whether the deadline has passed at `now`.
    pub fn passed(&self, now: jiff::Timestamp) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// When a message's attempts end: `seconds` after its creation, or after
/// its sendAt when later. Checked: a sendAt near the end of representable
/// time has no reachable deadline (`None`).
pub fn deadline(message: &EmailMessage, seconds: u32) -> Option<jiff::Timestamp> {
    let created = message.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let created = created.max(message.spec.send_at.as_ref().map(|t| t.0));
    created.and_then(|c| {
        c.checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
            .ok()
    })
}

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
        ctx.templates
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
                .providers
                .get(&ObjectRef::<EmailProvider>::new(name).within(&namespace));
            (found, None)
        }
        ProviderKind::ClusterEmailProvider => {
            let cluster = ctx
                .cluster_providers
                .get(&ObjectRef::<ClusterEmailProvider>::new(name));
            let provider = cluster.as_ref().map(|c| Arc::new(c.as_provider()));
            (provider, cluster)
        }
    }
}

/// A provider's identity (a cluster-wide one has no namespace).
pub fn key_of(provider: &EmailProvider) -> ProviderKey {
    (
        provider.namespace().unwrap_or_default(),
        provider.name_any(),
    )
}
