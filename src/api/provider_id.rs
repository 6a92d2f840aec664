//! A provider's identity, as every part of mailroom names it: an
//! EmailProvider by namespace and name, a ClusterEmailProvider by name.

use kube::ResourceExt;

use super::message::{ProviderKind, ProviderRef};
use super::{EmailMessage, EmailMessageStatus, EmailProvider};

/// Which provider: the key of verified transports, send slots, rate limits
/// and webhook URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderId {
    /// An EmailProvider: its namespace and name.
    Namespaced {
        /// The provider's (and its messages') namespace.
        namespace: String,
        /// The provider's name.
        name: String,
    },
    /// A ClusterEmailProvider's name.
    Cluster {
        /// The provider's name.
        name: String,
    },
}

impl ProviderId {
    /// The provider that sends `message`: the one it names, or for a
    /// message naming an EmailRoute the provider of its latest attempt
    /// (`None` before it has one).
    pub fn of(message: &EmailMessage) -> Option<Self> {
        Self::sender(message, message.status.as_ref())
    }

    /// As [`ProviderId::of`], with the status `status` (an outcome not yet
    /// in the object).
    pub fn sender(message: &EmailMessage, status: Option<&EmailMessageStatus>) -> Option<Self> {
        let named = &message.spec.provider_ref;
        let reference = match named.kind {
            ProviderKind::EmailRoute => status?.provider.as_ref()?,
            _ => named,
        };
        Self::named(message, reference)
    }

    /// Whether `message` went out, or may have, through this provider: the
    /// one it names, or one its route attempted it through.
    pub fn may_have_sent(&self, message: &EmailMessage) -> bool {
        let named = &message.spec.provider_ref;
        if named.kind != ProviderKind::EmailRoute {
            return Self::named(message, named).as_ref() == Some(self);
        }
        let Some(status) = message.status.as_ref() else {
            return false;
        };
        status
            .provider
            .iter()
            .chain(status.provider_attempts.iter().map(|a| &a.provider))
            .any(|p| Self::named(message, p).as_ref() == Some(self))
    }

    /// The provider `reference` names, as a message of `message`'s
    /// namespace names it (`None` for a route).
    fn named(message: &EmailMessage, reference: &ProviderRef) -> Option<Self> {
        let name = reference.name.clone();
        match reference.kind {
            ProviderKind::EmailProvider => Some(ProviderId::Namespaced {
                namespace: message.namespace().unwrap_or_default(),
                name,
            }),
            ProviderKind::ClusterEmailProvider => Some(ProviderId::Cluster { name }),
            ProviderKind::EmailRoute => None,
        }
    }

    /// `provider`'s own identity (a ClusterEmailProvider seen as a provider
    /// has no namespace).
    pub fn from_provider(provider: &EmailProvider) -> Self {
        let name = provider.name_any();
        match provider.namespace() {
            Some(namespace) => ProviderId::Namespaced { namespace, name },
            None => ProviderId::Cluster { name },
        }
    }

    /// The namespace; empty for a ClusterEmailProvider.
    pub fn namespace(&self) -> &str {
        match self {
            ProviderId::Namespaced { namespace, .. } => namespace,
            ProviderId::Cluster { .. } => "",
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            ProviderId::Namespaced { name, .. } | ProviderId::Cluster { name } => name,
        }
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderId::Namespaced { namespace, name } => write!(f, "{namespace}/{name}"),
            ProviderId::Cluster { name } => write!(f, "ClusterEmailProvider/{name}"),
        }
    }
}
