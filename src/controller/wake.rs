//! Who a change wakes: the unfinished messages that name a provider or
//! template, the providers that reference a Secret or ConfigMap. Read from
//! the caches, no API call.

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::credentials;
use crate::api::message::{ProviderKind, ProviderRef};
use crate::api::{ClusterEmailProvider, EmailMessage, EmailProvider, EmailRoute, EmailTemplate};

/// The unfinished messages of `namespace` (of every namespace when `None`,
/// for a cluster-scoped provider) that `names` picks.
fn unfinished_messages(
    store: &Store<EmailMessage>,
    namespace: Option<String>,
    names: impl Fn(&EmailMessage) -> bool,
) -> Vec<ObjectRef<EmailMessage>> {
    store
        .state()
        .into_iter()
        .filter(|m| {
            let finished = m
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished());
            let in_scope = namespace.is_none() || m.namespace() == namespace;
            in_scope && !finished && names(m)
        })
        .map(|m| ObjectRef::from_obj(&*m))
        .collect()
}

/// The messages a change of EmailProvider `provider` wakes: those naming
/// it, and those naming an EmailRoute that lists it.
pub fn messages_of_provider(
    store: &Store<EmailMessage>,
    routes: &Store<EmailRoute>,
    provider: &EmailProvider,
) -> Vec<ObjectRef<EmailMessage>> {
    let wanted = ProviderRef {
        kind: ProviderKind::EmailProvider,
        name: provider.name_any(),
    };
    unfinished_messages(store, provider.namespace(), |m| names(m, routes, &wanted))
}

/// The messages a change of ClusterEmailProvider `provider` wakes.
pub fn messages_of_cluster_provider(
    store: &Store<EmailMessage>,
    routes: &Store<EmailRoute>,
    provider: &ClusterEmailProvider,
) -> Vec<ObjectRef<EmailMessage>> {
    let wanted = ProviderRef {
        kind: ProviderKind::ClusterEmailProvider,
        name: provider.name_any(),
    };
    unfinished_messages(store, None, |m| names(m, routes, &wanted))
}

/// The messages a change of EmailRoute `route` wakes.
pub fn messages_of_route(
    store: &Store<EmailMessage>,
    route: &EmailRoute,
) -> Vec<ObjectRef<EmailMessage>> {
    let wanted = ProviderRef {
        kind: ProviderKind::EmailRoute,
        name: route.name_any(),
    };
    unfinished_messages(store, route.namespace(), |m| m.spec.provider_ref == wanted)
}

/// Whether `message` sends through `provider`: names it, or names a route
/// (of its namespace) that lists it.
fn names(message: &EmailMessage, routes: &Store<EmailRoute>, provider: &ProviderRef) -> bool {
    let named = &message.spec.provider_ref;
    if named == provider {
        return true;
    }
    if named.kind != ProviderKind::EmailRoute {
        return false;
    }
    let namespace = message.namespace().unwrap_or_default();
    routes
        .get(&ObjectRef::new(&named.name).within(&namespace))
        .is_some_and(|r| r.spec.providers.iter().any(|p| p.reference() == *provider))
}

/// The messages a change of EmailTemplate `template` wakes.
pub fn messages_of_template(
    store: &Store<EmailMessage>,
    template: &EmailTemplate,
) -> Vec<ObjectRef<EmailMessage>> {
    let name = template.name_any();
    unfinished_messages(store, template.namespace(), |m| {
        m.spec.template_ref.as_ref().is_some_and(|t| t.name == name)
    })
}

/// The EmailProviders of the same namespace that reference the Secret or
/// ConfigMap (`kind`) `name`.
pub fn providers_referencing(
    store: &Store<EmailProvider>,
    kind: &str,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<EmailProvider>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.namespace() == namespace && credentials::references(p, kind, name))
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// The ClusterEmailProviders that reference the Secret or ConfigMap
/// (`kind`) `name`, when it lies in their namespace `home`.
pub fn cluster_providers_referencing(
    store: &Store<ClusterEmailProvider>,
    kind: &str,
    home: &str,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<ClusterEmailProvider>> {
    if namespace.as_deref() != Some(home) {
        return Vec::new();
    }
    store
        .state()
        .into_iter()
        .filter(|p| credentials::references(&p.as_provider(), kind, name))
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// What of a provider can change a waiting message's fate: its spec (by
/// generation) and its status without the recent counts (written every few
/// seconds, they wake nobody).
pub fn provider_fingerprint(
    generation: Option<i64>,
    status: Option<&crate::api::EmailProviderStatus>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut status = status.cloned();
    if let Some(status) = status.as_mut() {
        status.recent = None;
    }
    let text = serde_json::to_string(&(generation, status)).unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// `namespace/name` of an object.
pub fn key_of<K: kube::Resource>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}
