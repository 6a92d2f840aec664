//! Finished messages leave the message cache; what is left of each is a
//! small record, and only for the ones with a time to live: namespace, name,
//! UID, version and the time it is due. A task deletes each one when due
//! (`ttlSecondsAfterFinished`, or its provider's), so the controller's memory
//! follows the messages in flight, not the history of sent mail.
//!
//! A message a GitOps tool (Flux, Argo CD) or Helm manages is not deleted:
//! the tool would create it again, and it would be sent again. Its own
//! time to live applies only when `mailroom.dev/expire-managed: "true"`
//! insists; its provider's default never does.
//!
//! The provider's default is read when the message's finished version is
//! seen (the message watch starts once the provider caches are listed); a
//! default set later applies to messages that finish later, and to all of
//! them after a restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::api::EmailMessage;
use crate::api::condition::{self, SENT};
use crate::api::message::RETRY_ANNOTATION;
use crate::ledger::Ledger;

/// Deletes at once, at most.
const DELETES_AT_ONCE: usize = 8;
/// How soon a delete the apiserver failed is tried again.
const DELETE_RETRY: SignedDuration = SignedDuration::from_secs(5);
/// How soon a message whose ledger entry waits to be written is looked at
/// again (entries are written every second).
const LEDGER_WAIT: SignedDuration = SignedDuration::from_secs(1);

/// Whether the cache must hold `message` in full: it is not finished, or
/// it asks for a retry (which the controller answers).
pub fn held(message: &EmailMessage) -> bool {
    let finished = message
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished());
    !finished || message.annotations().contains_key(RETRY_ANNOTATION)
}

/// Labels by which a GitOps tool (or Helm) marks what it manages: Flux's
/// Kustomization and HelmRelease labels, and the instance label Argo CD's
/// label tracking and Helm set.
const MANAGED_LABELS: &[&str] = &[
    "kustomize.toolkit.fluxcd.io/name",
    "helm.toolkit.fluxcd.io/name",
    "app.kubernetes.io/instance",
];
/// Argo CD's annotation tracking (its default since 3.0).
const MANAGED_ANNOTATIONS: &[&str] = &["argocd.argoproj.io/tracking-id"];
/// Set to `"true"` on a managed message to have its own
/// `ttlSecondsAfterFinished` apply anyway.
pub const EXPIRE_MANAGED_ANNOTATION: &str = "mailroom.dev/expire-managed";

/// Whether a GitOps tool (or Helm) manages `message`: deleting it would
/// only have the tool create it again, and send it again.
pub fn managed(message: &EmailMessage) -> bool {
    let labels = message.labels();
    let annotations = message.annotations();
    MANAGED_LABELS.iter().any(|l| labels.contains_key(*l))
        || MANAGED_ANNOTATIONS
            .iter()
            .any(|a| annotations.contains_key(*a))
}

/// The time to live that applies to `message`: its own, else its
/// provider's; for a managed message only its own, and only when
/// `mailroom.dev/expire-managed` insists.
pub fn ttl_of(message: &EmailMessage, provider_ttl: Option<u32>) -> Option<u32> {
    if !managed(message) {
        return message.spec.ttl_seconds_after_finished.or(provider_ttl);
    }
    let insists = message
        .annotations()
        .get(EXPIRE_MANAGED_ANNOTATION)
        .is_some_and(|v| v == "true");
    message.spec.ttl_seconds_after_finished.filter(|_| insists)
}

/// `namespace/name`.
type Key = Arc<str>;

/// What is kept of a finished message with a time to live.
struct Record {
    uid: Box<str>,
    version: Option<Box<str>>,
    due: Timestamp,
}

#[derive(Default)]
struct Records {
    by_key: HashMap<Key, Record>,
    by_due: BTreeSet<(Timestamp, Key)>,
}

/// The finished messages that will be deleted, by when.
#[derive(Default)]
pub struct Expiry {
    records: Mutex<Records>,
    changed: Notify,
}

fn key_of(message: &EmailMessage) -> Key {
    format!(
        "{}/{}",
        message.namespace().unwrap_or_default(),
        message.name_any()
    )
    .into()
}

/// When `message` finished: its send time, else when `Sent` last changed.
fn finished_at(message: &EmailMessage) -> Timestamp {
    let status = message.status.clone().unwrap_or_default();
    status
        .sent_time
        .as_ref()
        .or_else(|| condition::find(&status.conditions, SENT).map(|c| &c.last_transition_time))
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now)
}

impl Expiry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a finished message: kept when it has a time to live (its own,
    /// or `provider_ttl`), forgotten otherwise.
    pub fn note(&self, message: &EmailMessage, provider_ttl: Option<u32>) {
        let key = key_of(message);
        let ttl = ttl_of(message, provider_ttl);
        let due = ttl.and_then(|ttl| {
            finished_at(message)
                .checked_add(SignedDuration::from_secs(i64::from(ttl)))
                .ok()
        });
        let Some(due) = due else {
            self.forget_key(&key);
            return;
        };
        let record = Record {
            uid: message.uid().unwrap_or_default().into(),
            version: message.resource_version().map(Into::into),
            due,
        };
        let mut records = self.lock();
        if let Some(old) = records.by_key.insert(key.clone(), record) {
            records.by_due.remove(&(old.due, key.clone()));
        }
        records.by_due.insert((due, key));
        drop(records);
        self.changed.notify_one();
    }

    /// Forgets a message that is in flight again or deleted.
    pub fn forget(&self, message: &EmailMessage) {
        self.forget_key(&key_of(message));
    }

    fn forget_key(&self, key: &Key) {
        let mut records = self.lock();
        if let Some(old) = records.by_key.remove(key) {
            records.by_due.remove(&(old.due, key.clone()));
        }
    }

    /// How many records are kept.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records due at `now` (taken out), and when the next one is due.
    fn take_due(&self, now: Timestamp) -> (Vec<(Key, Record)>, Option<Timestamp>) {
        let mut records = self.lock();
        let mut due = Vec::new();
        while let Some((when, key)) = records.by_due.first().cloned() {
            if when > now {
                return (due, Some(when));
            }
            records.by_due.pop_first();
            if let Some(record) = records.by_key.remove(&key) {
                due.push((key, record));
            }
        }
        (due, None)
    }

    /// When the next record is due.
    fn next_due(&self) -> Option<Timestamp> {
        self.lock().by_due.first().map(|(when, _)| *when)
    }

    /// Puts back a record whose delete failed or must wait, due again after
    /// `pause`, unless a newer version was noted meanwhile.
    fn put_back(&self, key: Key, mut record: Record, pause: SignedDuration) {
        let Ok(later) = Timestamp::now().checked_add(pause) else {
            return;
        };
        record.due = later;
        let mut records = self.lock();
        if records.by_key.contains_key(&key) {
            return;
        }
        records.by_due.insert((later, key.clone()));
        records.by_key.insert(key, record);
    }

    /// Deletes each message when it is due, until the process ends; one
    /// whose ledger entry is not written yet waits for it (deleted first,
    /// it could be created again and sent again).
    pub async fn run(self: Arc<Self>, client: Client, ledger: Arc<Ledger>) {
        loop {
            let changed = self.changed.notified();
            let (due, _) = self.take_due(Timestamp::now());
            futures::stream::iter(due)
                .for_each_concurrent(DELETES_AT_ONCE, |(key, record)| {
                    let expiry = self.clone();
                    let client = client.clone();
                    let unrecorded = key
                        .split_once('/')
                        .is_some_and(|(ns, name)| ledger.is_pending(ns, name));
                    async move {
                        if unrecorded {
                            expiry.put_back(key, record, LEDGER_WAIT);
                        } else if let Err(record) = delete(&client, &key, record).await {
                            expiry.put_back(key, record, DELETE_RETRY);
                        }
                    }
                })
                .await;
            // A record already due (put back while the deletes ran) is taken
            // at once; with none, a change wakes the loop.
            let wait = self.next_due().map_or(Duration::from_secs(3600), |next| {
                Duration::try_from(next.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            });
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }
}

/// Deletes the message `key` names, only in the version recorded: a newer
/// one (a retry asked for, say) brings its own record. Gives the record
/// back when the apiserver failed.
async fn delete(client: &Client, key: &str, record: Record) -> Result<(), Record> {
    let Some((namespace, name)) = key.split_once('/') else {
        return Ok(());
    };
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(record.uid.to_string()),
            resource_version: record.version.as_deref().map(str::to_string),
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(
                namespace,
                email = name,
                "deleted after its ttlSecondsAfterFinished"
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => {
            warn!(namespace, email = name, error = %e, "deleting an expired message failed; tried again");
            Err(record)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EmailMessageStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn finished(name: &str, ttl: Option<u32>, sent_second: i64) -> EmailMessage {
        let mut message: EmailMessage = serde_json::from_value(serde_json::json!({
            "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"providerRef": {"name": "p"}, "from": "a@example.org", "to": ["b@example.org"], "subject": "s", "text": "t"}
        }))
        .expect("a message");
        message.spec.ttl_seconds_after_finished = ttl;
        message.status = Some(EmailMessageStatus {
            phase: Some(Phase::Sent),
            sent_time: Some(Time(Timestamp::from_second(sent_second).expect("a time"))),
            ..Default::default()
        });
        message
    }

    #[test]
    fn only_messages_with_a_time_to_live_are_kept_and_each_once() {
        let expiry = Expiry::default();
        expiry.note(&finished("kept", Some(60), 1000), None);
        expiry.note(&finished("no-ttl", None, 1000), None);
        expiry.note(&finished("provider-ttl", None, 1000), Some(30));
        expiry.note(&finished("kept", Some(120), 1000), None);
        assert_eq!(expiry.len(), 2);
        let at = |s| Timestamp::from_second(s).expect("a time");
        let (due, next) = expiry.take_due(at(1059));
        assert_eq!(due.len(), 1, "the provider's 30 s passed");
        assert_eq!(&*due[0].0, "team/provider-ttl");
        assert_eq!(next, Some(at(1120)), "the newer ttl replaced the older");
        let (due, next) = expiry.take_due(at(1120));
        assert_eq!(due.len(), 1);
        assert_eq!(next, None);
        assert!(expiry.is_empty());
    }

    #[test]
    fn a_message_a_gitops_tool_manages_expires_only_when_its_own_ttl_insists() {
        let expiry = Expiry::default();
        let flux = |name: &str, ttl: Option<u32>| {
            let mut m = finished(name, ttl, 1000);
            m.labels_mut()
                .insert("kustomize.toolkit.fluxcd.io/name".into(), "apps".into());
            m
        };
        expiry.note(&flux("own-ttl", Some(60)), None);
        expiry.note(&flux("provider-ttl", None), Some(60));
        let mut argo = finished("argo", Some(60), 1000);
        argo.annotations_mut().insert(
            "argocd.argoproj.io/tracking-id".into(),
            "app:mailroom.dev/EmailMessage:team/argo".into(),
        );
        expiry.note(&argo, Some(60));
        assert!(expiry.is_empty(), "neither its own nor its provider's ttl");
        let mut insisting = flux("insisting", Some(60));
        insisting
            .annotations_mut()
            .insert(EXPIRE_MANAGED_ANNOTATION.into(), "true".into());
        expiry.note(&insisting, Some(5));
        let at = |s| Timestamp::from_second(s).expect("a time");
        assert!(
            expiry.take_due(at(1059)).0.is_empty(),
            "not the provider's 5 s"
        );
        let (due, _) = expiry.take_due(at(1060));
        assert_eq!(due.len(), 1, "its own 60 s");
        assert_eq!(&*due[0].0, "team/insisting");
    }

    #[test]
    fn a_message_in_flight_again_is_forgotten() {
        let expiry = Expiry::default();
        let message = finished("retried", Some(60), 1000);
        expiry.note(&message, None);
        expiry.forget(&message);
        assert!(expiry.is_empty());
        assert!(expiry.take_due(Timestamp::now()).0.is_empty());
    }

    #[test]
    fn finished_messages_are_held_only_when_a_retry_is_asked() {
        let mut message = finished("m", None, 1000);
        assert!(!held(&message));
        message
            .annotations_mut()
            .insert(RETRY_ANNOTATION.into(), "true".into());
        assert!(held(&message));
        message.status = None;
        assert!(held(&message), "a new message is in flight");
    }
}
