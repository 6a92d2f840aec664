//! The load client and the two runs it makes: the limit run (exactly the
//! apiserver writes one message costs, with no controller and no email) and
//! the operator run (create messages, wait until every one is Sent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use mailroom::api::{
    EmailJournal, EmailLedger, EmailMessage, EmailMessageStatus, EmailProvider, Phase,
};
use serde_json::{Value, json};

use crate::Error;

/// One message of the load.
pub fn message(i: usize) -> Result<EmailMessage, Error> {
    let object = json!({
        "apiVersion": "mailroom.dev/v1alpha1", "kind": "EmailMessage",
        "metadata": {"name": format!("m-{i:06}")},
        "spec": {"providerRef": {"name": "bench"}, "to": [format!("user{i}@example.org")],
                 "subject": format!("bench {i}"), "text": "a benchmark message"}
    });
    serde_json::from_value(object).map_err(|e| Error::Setup(format!("message JSON: {e}")))
}

/// Creates namespace `name`.
pub async fn namespace(client: &Client, name: &str) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
        .map_err(|e| Error::Setup(e.to_string()))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| Error::Kube("creating the namespace", e))?;
    Ok(())
}

/// Deletes the messages and ledger pages of namespace `name`, then the
/// namespace. The local control plane runs no namespace controller, so a
/// deleted namespace keeps its objects: without this every later run would
/// pay (in the apiserver's watch cache and heap, and in etcd) for the
/// objects of every run before it.
pub async fn drop_namespace(client: &Client, name: &str) {
    let messages: Api<EmailMessage> = Api::namespaced(client.clone(), name);
    let ledgers: Api<EmailLedger> = Api::namespaced(client.clone(), name);
    // A collection too large for one request's timeout goes in a few.
    for _ in 0..DELETE_COLLECTION_TRIES {
        let _ = messages
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let _ = ledgers
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let left = messages
            .list_metadata(&ListParams::default().limit(1))
            .await;
        if left.is_ok_and(|l| l.items.is_empty()) {
            break;
        }
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Delete-collection requests made for one namespace at most.
const DELETE_COLLECTION_TRIES: usize = 10;

/// Creates `object` in `namespace`.
pub async fn create<K>(client: &Client, namespace: &str, object: Value) -> Result<K, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).map_err(|e| Error::Setup(e.to_string()))?;
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| Error::Kube("creating a fixture", e))
}

/// The statuses a controller run wrote, as its watch first showed them: the
/// claim (none when the transport skips it) and the outcome.
#[derive(Debug, Clone)]
pub struct Written {
    /// The claim (phase Sending), if one was written.
    pub claim: Option<EmailMessageStatus>,
    /// The status of a Sent message.
    pub sent: EmailMessageStatus,
}

/// The limit run: for each of `n` messages, the create and the status
/// replaces the controller makes, `concurrency` at a time: with `same`,
/// exactly the statuses an operator run wrote (its claim, if it wrote one,
/// and its outcome); else a minimal claim and outcome (phase and attempts).
/// `watched`: with the watch the operator runs measure by, which costs the
/// apiserver the same here as there, until it has seen every one Sent.
/// Returns the seconds it took and the mean size of a Sent object as the
/// watch saw it (0 unwatched).
pub async fn limit_run(
    client: &Client,
    namespace: &str,
    n: usize,
    concurrency: usize,
    watched: bool,
    same: Option<&Written>,
) -> Result<(f64, f64), Error> {
    let minimal = Written {
        claim: Some(EmailMessageStatus {
            phase: Some(Phase::Sending),
            attempts: 1,
            ..Default::default()
        }),
        sent: EmailMessageStatus {
            phase: Some(Phase::Sent),
            attempts: 1,
            ..Default::default()
        },
    };
    let written = same.unwrap_or(&minimal);
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let timings = Arc::new(Mutex::new(Timings::default()));
    let watch = watched.then(|| watch_sent(api.clone(), started, n, timings.clone()));
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let written = written.clone();
            async move {
                let created = api
                    .create(&PostParams::default(), &message(i)?)
                    .await
                    .map_err(|e| Error::Kube("create", e))?;
                let claimed = match written.claim {
                    Some(claim) => {
                        let mut claimed = created.clone();
                        claimed.status = Some(claim);
                        api.replace_status(&created.name_any(), &PostParams::default(), &claimed)
                            .await
                            .map_err(|e| Error::Kube("claim", e))?
                    }
                    None => created,
                };
                let mut sent = claimed.clone();
                sent.status = Some(written.sent);
                api.replace_status(&claimed.name_any(), &PostParams::default(), &sent)
                    .await
                    .map_err(|e| Error::Kube("outcome", e))?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    if let Some(watch) = watch {
        let limit = Duration::from_secs(120 + n as u64 / 5);
        tokio::time::timeout(limit, watch)
            .await
            .map_err(|_| Error::Setup(format!("the watch did not see {n} Sent within {limit:?}")))?
            .map_err(|e| Error::Setup(format!("watch task: {e}")))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = timings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .mean_sent_bytes();
    Ok((seconds, bytes))
}

/// Watches the namespace's messages as the runs see them: when each of this
/// run's messages (`m-`) was first seen claimed and Sent; ends when `n` are
/// Sent.
fn watch_sent(
    watch_api: Api<EmailMessage>,
    started: Instant,
    n: usize,
    watched: Arc<Mutex<Timings>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher(watch_api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(m)) = stream.try_next().await {
            let now = started.elapsed().as_secs_f64();
            let mut t = watched.lock().unwrap_or_else(|e| e.into_inner());
            // Only this run's messages (`m-`), not a history already there.
            if m.name_any().starts_with("m-") {
                match m.status.as_ref().and_then(|s| s.phase) {
                    Some(Phase::Sending) => {
                        if t.claim_status.is_none() {
                            t.claim_status = m.status.clone();
                        }
                        t.claimed.entry(m.name_any()).or_insert(now);
                    }
                    Some(Phase::Sent) => {
                        if t.sent_status.is_none() {
                            t.sent_status = m.status.clone();
                        }
                        if !t.sent.contains_key(&m.name_any()) {
                            // The object as the apiserver stores and sends
                            // it, less managedFields.
                            let mut slim = m.clone();
                            slim.metadata.managed_fields = None;
                            t.sent_bytes += serde_json::to_vec(&slim).map_or(0, |b| b.len());
                        }
                        t.sent.entry(m.name_any()).or_insert(now);
                    }
                    _ => {}
                }
            }
            if t.sent.len() >= n {
                return;
            }
        }
    })
}

/// Watches the namespace's claim journal: when each of this run's messages
/// (`m-`) was first listed there (claimed). Runs until aborted.
fn watch_journal(
    watch_api: Api<EmailJournal>,
    started: Instant,
    watched: Arc<Mutex<Timings>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher(watch_api, watcher::Config::default()).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(journal)) = stream.try_next().await {
            let now = started.elapsed().as_secs_f64();
            let mut t = watched.lock().unwrap_or_else(|e| e.into_inner());
            for claim in journal.spec.claims {
                if claim.name.starts_with("m-") {
                    t.claimed.entry(claim.name).or_insert(now);
                }
            }
        }
    })
}

/// When each message was created and seen Sent.
#[derive(Default)]
pub struct Timings {
    /// Seconds from the run's start to each message's create request.
    pub created: HashMap<String, f64>,
    /// Seconds from the run's start to the first watch event that showed
    /// it claimed (Sending, or listed in the claim journal).
    pub claimed: HashMap<String, f64>,
    /// Seconds from the run's start to the watch event that showed it Sent.
    pub sent: HashMap<String, f64>,
    /// The JSON bytes of every message as first seen Sent, summed.
    pub sent_bytes: usize,
    /// The first claim (Sending status) seen.
    pub claim_status: Option<EmailMessageStatus>,
    /// The first Sent status seen.
    pub sent_status: Option<EmailMessageStatus>,
}

impl Timings {
    /// The mean JSON size of a Sent message object, bytes.
    pub fn mean_sent_bytes(&self) -> f64 {
        self.sent_bytes as f64 / self.sent.len().max(1) as f64
    }
}

impl Timings {
    /// Create->Sent latencies, seconds, sorted.
    pub fn latencies(&self) -> Vec<f64> {
        let mut out: Vec<f64> = self
            .sent
            .iter()
            .filter_map(|(name, at)| Some(at - self.created.get(name)?))
            .collect();
        out.sort_by(f64::total_cmp);
        out
    }

    /// The statuses the run wrote (the claim only if the watch showed one).
    pub fn written(&self) -> Option<Written> {
        Some(Written {
            claim: self.claim_status.clone(),
            sent: self.sent_status.clone()?,
        })
    }

    /// Where each Sent message spent its time, seconds, each sorted:
    /// create->claim (waiting: the watch, the queue, a send slot) and
    /// claim->Sent (the send and the outcome's write). A message whose
    /// claim the watch did not show is left out of both.
    pub fn stages(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut waiting, mut sending): (Vec<f64>, Vec<f64>) = self
            .sent
            .iter()
            .filter_map(|(name, sent)| {
                let created = self.created.get(name)?;
                let claimed = self.claimed.get(name)?;
                Some((claimed - created, sent - claimed))
            })
            .unzip();
        waiting.sort_by(f64::total_cmp);
        sending.sort_by(f64::total_cmp);
        (waiting, sending)
    }
}

/// Waits until provider `bench` in `namespace` is Ready.
pub async fn provider_ready(client: &Client, namespace: &str) -> Result<(), Error> {
    let api: Api<EmailProvider> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ready = api.get_opt("bench").await.ok().flatten().is_some_and(|p| {
            p.status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True")
        });
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Setup(
        "provider bench did not become Ready in 60 s".into(),
    ))
}

/// The operator run: creates `n` messages, `concurrency` at a time (or one
/// every `pace` when set), and waits until every one is Sent.
pub async fn operator_run(
    client: &Client,
    namespace: &str,
    n: usize,
    concurrency: usize,
    pace: Option<Duration>,
) -> Result<(f64, Timings), Error> {
    let api: Api<EmailMessage> = Api::namespaced(client.clone(), namespace);
    let timings = Arc::new(Mutex::new(Timings::default()));
    let started = Instant::now();

    let watch = watch_sent(api.clone(), started, n, timings.clone());
    let journal = watch_journal(
        Api::namespaced(client.clone(), namespace),
        started,
        timings.clone(),
    );

    let creating = timings.clone();
    let create_one = |i: usize| {
        let api = api.clone();
        let creating = creating.clone();
        async move {
            let object = message(i)?;
            let at = started.elapsed().as_secs_f64();
            creating
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .created
                .insert(object.name_any(), at);
            api.create(&PostParams::default(), &object)
                .await
                .map_err(|e| Error::Kube("create", e))?;
            Ok::<(), Error>(())
        }
    };
    match pace {
        None => {
            futures::stream::iter(0..n)
                .map(create_one)
                .buffer_unordered(concurrency)
                .try_collect::<Vec<()>>()
                .await?;
        }
        Some(every) => {
            let mut tick = tokio::time::interval(every);
            let mut pending = Vec::with_capacity(n);
            for i in 0..n {
                tick.tick().await;
                pending.push(tokio::spawn(create_one(i)));
            }
            for handle in pending {
                handle
                    .await
                    .map_err(|e| Error::Setup(format!("create task: {e}")))??;
            }
        }
    }

    let limit = Duration::from_secs(120 + n as u64 / 5);
    let watched = tokio::time::timeout(limit, watch).await;
    journal.abort();
    watched
        .map_err(|_| Error::Setup(format!("not every message was Sent within {limit:?}")))?
        .map_err(|e| Error::Setup(format!("watch task: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let timings = std::mem::take(&mut *timings.lock().unwrap_or_else(|e| e.into_inner()));
    if timings.sent.len() < n {
        return Err(Error::Setup(format!(
            "{} of {n} messages Sent",
            timings.sent.len()
        )));
    }
    Ok((seconds, timings))
}
