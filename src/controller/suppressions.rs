//! The suppression list as the send path reads it: the EmailSuppressions of
//! a message's provider, from the cache (one watch of the kind). A
//! namespaced provider's live in its namespace; a ClusterEmailProvider's in
//! the controller's own (`--cluster-provider-namespace`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::suppression_index::{Owner, SuppressionIndex};
use crate::api::EmailSuppression;
use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::suppression::SuppressionReason;

/// Every suppression the controller watches: the cache, and its index by
/// namespace, provider and address.
#[derive(Clone)]
pub struct Lists {
    /// The EmailSuppressions.
    pub store: Store<EmailSuppression>,
    /// Their index, kept from the same watch.
    pub index: SuppressionIndex,
}

/// Why an address is not sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppressed {
    /// The address as listed.
    pub address: String,
    /// The EmailSuppression's name.
    pub name: String,
    /// Why.
    pub reason: SuppressionReason,
    /// What the service said.
    pub detail: Option<String>,
    /// Since when.
    pub since: Option<Time>,
    /// The EmailSuppression's namespace.
    pub namespace: String,
    /// The list it is on, for an unsubscribe.
    pub list: Option<String>,
}

impl Suppressed {
    /// The sentence a status gives: the address, why and since when, and
    /// how to lift it.
    pub fn explain(&self, field: &str) -> String {
        let namespace = &self.namespace;
        let why = match self.reason {
            SuppressionReason::HardBounce => "it bounced for good",
            SuppressionReason::Complaint => "its recipient marked mail as spam",
            SuppressionReason::SoftBounces => "it bounced softly too often",
            SuppressionReason::Manual => "a person suppressed it",
            SuppressionReason::ServiceList => "the service lists it on its own suppression list",
            SuppressionReason::Unsubscribed => {
                return self.explain_unsubscribe(field);
            }
        };
        let since = self
            .since
            .as_ref()
            .map(|t| format!(" on {}", t.0))
            .unwrap_or_default();
        let detail = self
            .detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        format!(
            "{field}: {} is suppressed: {why}{since}{detail}; EmailSuppression {namespace}/{}. Delete it to send to the address again, or set spec.ignoreSuppression",
            self.address, self.name
        )
    }

    fn explain_unsubscribe(&self, field: &str) -> String {
        let since = self
            .since
            .as_ref()
            .map(|t| format!(" on {}", t.0))
            .unwrap_or_default();
        format!(
            "{field}: {} unsubscribed from list {:?}{since}; EmailSuppression {}/{} (deleted, the address is subscribed again)",
            self.address,
            self.list.as_deref().unwrap_or_default(),
            self.namespace,
            self.name
        )
    }
}

/// The suppressions a message honours: those of its providers (the one it
/// names, or every provider of the EmailRoute it names: an address one of
/// them learned bounces is not sent to through the others either), unless
/// it ignores them, and the unsubscribes from its mailing list, always.
pub struct Scope {
    lists: Lists,
    /// Each provider, with the namespace its suppressions live in.
    providers: Vec<(String, ProviderRef)>,
    /// The message's namespace and list, if it is on one.
    list: Option<(String, String)>,
}

impl Scope {
    /// The suppressions of `providers` as a message in `namespace` names
    /// them; `home` is where a ClusterEmailProvider's live.
    pub fn of(
        lists: Lists,
        namespace: &str,
        providers: &[ProviderRef],
        home: Option<&str>,
    ) -> Self {
        let providers = providers
            .iter()
            .filter_map(|provider| {
                let namespace = match provider.kind {
                    ProviderKind::EmailProvider => namespace.to_string(),
                    ProviderKind::ClusterEmailProvider => home?.to_string(),
                    // A route has no list of its own: its providers do.
                    ProviderKind::EmailRoute => return None,
                };
                Some((namespace, provider.clone()))
            })
            .collect();
        let list = None;
        Self {
            lists,
            providers,
            list,
        }
    }

    /// This scope without the providers' lists (a message that ignores
    /// them), when `ignore`.
    pub fn ignoring_providers(mut self, ignore: bool) -> Self {
        if ignore {
            self.providers.clear();
        }
        self
    }

    /// This scope with the unsubscribes from `list` in `namespace`.
    pub fn on_list(mut self, namespace: &str, list: Option<String>) -> Self {
        self.list = list.map(|list| (namespace.to_string(), list));
        self
    }

    /// The suppression of `address`, if it unsubscribed from the message's
    /// list or is listed for any of the providers: looked up in the index,
    /// read from the cache (and checked again there).
    pub fn find(&self, address: &str) -> Option<Suppressed> {
        let list = self
            .list
            .iter()
            .map(|(namespace, list)| (namespace.as_str(), Owner::List(list.clone())));
        let providers = self
            .providers
            .iter()
            .map(|(namespace, provider)| (namespace.as_str(), Owner::provider(provider)));
        list.chain(providers)
            .find_map(|(namespace, owner)| self.find_one(namespace, &owner, address))
    }

    fn find_one(&self, namespace: &str, owner: &Owner, address: &str) -> Option<Suppressed> {
        let names = self.lists.index.names(namespace, owner, address);
        let found = names.iter().find_map(|name| {
            let object = ObjectRef::new(name).within(namespace);
            self.lists.store.get(&object).filter(|s| {
                Owner::of(s).as_ref() == Some(owner) && s.spec.address.eq_ignore_ascii_case(address)
            })
        })?;
        Some(Suppressed {
            address: found.spec.address.clone(),
            name: found.name_any(),
            reason: found.spec.reason,
            detail: found.spec.detail.clone(),
            since: found.spec.since.clone(),
            namespace: namespace.to_string(),
            list: found.spec.list.clone(),
        })
    }
}
