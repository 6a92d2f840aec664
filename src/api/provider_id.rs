//! A provider's identity, as every part of mailroom names it: an
//! EmailProvider by namespace and name, a ClusterEmailProvider by name.

use kube::ResourceExt;

use super::message::ProviderKind;
use super::{EmailMessage, EmailProvider};

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
    /// The provider `message` names.
    pub fn of(message: &EmailMessage) -> Self {
        let name = message.spec.provider_ref.name.clone();
        match message.spec.provider_ref.kind {
            ProviderKind::EmailProvider => ProviderId::Namespaced {
                namespace: message.namespace().unwrap_or_default(),
                name,
            },
            ProviderKind::ClusterEmailProvider => ProviderId::Cluster { name },
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
