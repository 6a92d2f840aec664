//! The suppression lists indexed by namespace, provider (or mailing list)
//! and address, kept
//! from the same watch events as the cache: a send looks each recipient up
//! in constant time, and a provider's sync pass reads its own list alone,
//! however many suppressions the cluster holds, so one tenant's long list
//! costs no other tenant anything. A re-list of the
//! watch builds a fresh index and swaps it in when the list is complete, as
//! the cache does.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::api::EmailSuppression;
use crate::api::message::{ProviderKind, ProviderRef};

/// Whose list a suppression is on: a provider's, or a mailing list's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The provider's (bounces, complaints, people).
    Provider(ProviderKind, String),
    /// The mailing list's (unsubscribes).
    List(String),
}

impl Owner {
    /// The owner of `provider`'s list.
    pub fn provider(provider: &ProviderRef) -> Self {
        Self::Provider(provider.kind, provider.name.clone())
    }

    /// The owner a suppression names.
    pub fn of(suppression: &EmailSuppression) -> Option<Self> {
        match (&suppression.spec.provider_ref, &suppression.spec.list) {
            (Some(provider), _) => Some(Self::provider(provider)),
            (None, Some(list)) => Some(Self::List(list.clone())),
            (None, None) => None,
        }
    }
}

/// Whose list it is: a namespace and an owner.
type ListKey = (String, Owner);

/// Where a suppression applies: its list and the address (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    list: ListKey,
    address: String,
}

impl Key {
    fn of(suppression: &EmailSuppression) -> Option<(Self, ObjectName)> {
        let namespace = suppression.namespace()?;
        let key = Key {
            list: (namespace.clone(), Owner::of(suppression)?),
            address: suppression.spec.address.to_ascii_lowercase(),
        };
        Some((key, (namespace, suppression.name_any())))
    }
}

/// A suppression's namespace and name.
type ObjectName = (String, String);

/// One complete index: each list's addresses and the suppressions of each,
/// and where each suppression is.
#[derive(Default)]
struct Lists {
    by_list: HashMap<ListKey, HashMap<String, BTreeSet<String>>>,
    by_object: HashMap<ObjectName, Key>,
}

impl Lists {
    fn apply(&mut self, suppression: &EmailSuppression) {
        let Some((key, object)) = Key::of(suppression) else {
            return;
        };
        self.remove(&object);
        self.by_list
            .entry(key.list.clone())
            .or_default()
            .entry(key.address.clone())
            .or_default()
            .insert(object.1.clone());
        self.by_object.insert(object, key);
    }

    fn remove(&mut self, object: &ObjectName) {
        let Some(old) = self.by_object.remove(object) else {
            return;
        };
        let Some(addresses) = self.by_list.get_mut(&old.list) else {
            return;
        };
        if let Some(names) = addresses.get_mut(&old.address) {
            names.remove(&object.1);
            if names.is_empty() {
                addresses.remove(&old.address);
            }
        }
        if addresses.is_empty() {
            self.by_list.remove(&old.list);
        }
    }
}

#[derive(Default)]
struct Inner {
    live: Lists,
    /// The index being rebuilt by a re-list, until it is complete.
    relisting: Option<Lists>,
}

/// The index, shared by the watch that keeps it and the send path.
#[derive(Clone, Default)]
pub struct SuppressionIndex(Arc<Mutex<Inner>>);

impl SuppressionIndex {
    /// Follows one event of the EmailSuppression watch.
    pub fn observe(&self, event: &Event<EmailSuppression>) {
        let mut inner = self.lock();
        match event {
            Event::Apply(s) => inner.live.apply(s),
            Event::Delete(s) => {
                if let Some((_, object)) = Key::of(s) {
                    inner.live.remove(&object);
                }
            }
            Event::Init => inner.relisting = Some(Lists::default()),
            Event::InitApply(s) => match inner.relisting.as_mut() {
                Some(lists) => lists.apply(s),
                None => inner.live.apply(s),
            },
            Event::InitDone => {
                if let Some(lists) = inner.relisting.take() {
                    inner.live = lists;
                }
            }
        }
    }

    /// The names of the suppressions of `address` on `owner`'s list in
    /// `namespace`.
    pub fn names(&self, namespace: &str, owner: &Owner, address: &str) -> Vec<String> {
        self.lock()
            .live
            .by_list
            .get(&(namespace.to_string(), owner.clone()))
            .and_then(|addresses| addresses.get(&address.to_ascii_lowercase()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of every suppression on `owner`'s list in `namespace`, in
    /// time proportional to that list alone.
    pub fn list(&self, namespace: &str, owner: &Owner) -> Vec<String> {
        self.lock()
            .live
            .by_list
            .get(&(namespace.to_string(), owner.clone()))
            .map(|addresses| addresses.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn suppression(name: &str, provider: &str, address: &str) -> EmailSuppression {
        serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailSuppression",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"providerRef": {"name": provider}, "address": address, "reason": "Manual"}
        }))
        .expect("suppression")
    }

    fn relay() -> Owner {
        Owner::provider(&serde_json::from_value(json!({"name": "relay"})).expect("ref"))
    }

    #[test]
    fn an_unsubscribe_is_on_its_list_not_on_a_provider() {
        let index = SuppressionIndex::default();
        let unsubscribe: EmailSuppression = serde_json::from_value(json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailSuppression",
            "metadata": {"name": "u", "namespace": "shop"},
            "spec": {"list": "relay", "address": "ann@example.org", "reason": "Unsubscribed"}
        }))
        .expect("suppression");
        index.observe(&Event::Apply(unsubscribe));
        let news = Owner::List("relay".into());
        assert_eq!(index.names("shop", &news, "Ann@example.org"), ["u"]);
        assert!(index.names("shop", &relay(), "ann@example.org").is_empty());
    }

    #[test]
    fn follows_applies_changes_deletes_and_relists() {
        let index = SuppressionIndex::default();
        index.observe(&Event::Apply(suppression("a", "relay", "Ann@Example.org")));
        index.observe(&Event::Apply(suppression("b", "relay", "ann@example.org")));
        index.observe(&Event::Apply(suppression("c", "other", "ann@example.org")));
        assert_eq!(index.names("shop", &relay(), "ANN@example.org"), ["a", "b"]);
        assert!(index.names("blog", &relay(), "ann@example.org").is_empty());

        // A changed address moves; a deletion removes.
        index.observe(&Event::Apply(suppression("a", "relay", "bo@example.org")));
        index.observe(&Event::Delete(suppression("b", "relay", "ann@example.org")));
        assert!(index.names("shop", &relay(), "ann@example.org").is_empty());
        assert_eq!(index.names("shop", &relay(), "bo@example.org"), ["a"]);

        // A re-list replaces everything once complete, not before.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(suppression(
            "d",
            "relay",
            "cy@example.org",
        )));
        assert_eq!(index.names("shop", &relay(), "bo@example.org"), ["a"]);
        index.observe(&Event::InitDone);
        assert!(index.names("shop", &relay(), "bo@example.org").is_empty());
        assert_eq!(index.names("shop", &relay(), "cy@example.org"), ["d"]);
    }

    #[test]
    fn a_list_is_read_whole_and_only_its_own() {
        let index = SuppressionIndex::default();
        index.observe(&Event::Apply(suppression("a", "relay", "ann@example.org")));
        index.observe(&Event::Apply(suppression("b", "relay", "Ann@example.org")));
        index.observe(&Event::Apply(suppression("c", "relay", "bo@example.org")));
        index.observe(&Event::Apply(suppression("d", "other", "bo@example.org")));
        let mut names = index.list("shop", &relay());
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(index.list("blog", &relay()).is_empty());
        // Emptied lists leave nothing behind.
        for name in ["a", "b", "c"] {
            index.observe(&Event::Delete(suppression(name, "relay", "x@example.org")));
        }
        assert!(index.list("shop", &relay()).is_empty());
        assert!(
            index.lock().live.by_list.len() == 1,
            "only other's list is left"
        );
    }
}
