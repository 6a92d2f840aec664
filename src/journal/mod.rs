//! The claim journal: before a message is handed to a server that cannot
//! drop a repeat by itself (SMTP, Mailtrap, Postmark, Mailgun, SendGrid),
//! its attempt is written to its namespace's `EmailJournal`, and the send
//! waits for that write. Claims that come while a write is under way go
//! out together in the next one (group commit), so a busy namespace pays a
//! fraction of a write per message instead of a status write each. Each
//! write replaces the page guarded by its resourceVersion, so a second
//! replica's claim conflicts as a claim on the message itself would.
//!
//! The journal is read before any message is judged after a start. An
//! attempt listed there that the message's status does not show was
//! interrupted: the message is judged as if its status said `Sending`
//! (`overlay`). An attempt leaves the page with the first write after its
//! outcome is on the message.

pub mod book;
pub mod page;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::api::journal::MAX_CLAIMS;
use crate::api::{EmailMessage, Phase};
use book::{Book, Tidy, Waiting};
pub use book::{Claim, Committed};

/// How long one write of a page may take before its claims are given up
/// (none of them is sent).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon after an attempt's outcome is recorded the page is written
/// without it, when no claim's write takes it off first.
const TIDY_AFTER: Duration = Duration::from_secs(2);
/// How soon a failed start-up list is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(5);

/// The journal is full in a namespace: the attempt is claimed on its
/// message instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The attempts under way, for every namespace served.
pub struct Journal {
    books: Mutex<HashMap<String, Book>>,
    client: Client,
    loaded: watch::Sender<bool>,
    namespace: Option<String>,
    writes: AtomicU64,
    messages: OnceLock<Store<EmailMessage>>,
}

impl Journal {
    /// A journal for `namespace` (all when `None`).
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        Self {
            books: Mutex::default(),
            client,
            loaded: watch::channel(false).0,
            namespace,
            writes: AtomicU64::new(0),
            messages: OnceLock::new(),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, HashMap<String, Book>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every journal once. Until it has, `loaded` waits.
    pub async fn load(&self) -> Result<(), page::Error> {
        let mut read = Vec::new();
        page::list(&self.client, self.namespace.as_deref(), |page| {
            read.push(page)
        })
        .await?;
        let mut claims = 0;
        let mut books = self.books();
        for page in read {
            claims += page.claims.len();
            books
                .entry(page.namespace)
                .or_default()
                .read(page.version, &page.claims);
        }
        drop(books);
        info!(claims, "claim journal loaded");
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Reads the journals until it succeeds.
    pub async fn run(&self) {
        while let Err(e) = self.load().await {
            warn!(error = %e, "the claim journal could not be read (is the EmailJournal CRD installed?); no message is sent until it is");
            tokio::time::sleep(LOAD_RETRY).await;
        }
    }

    /// Waits until the journals are read; `false` if the journal was dropped.
    pub async fn loaded(&self) -> bool {
        let mut loaded = self.loaded.subscribe();
        loaded.wait_for(|l| *l).await.is_ok()
    }

    /// The message cache, against which inherited attempts of deleted
    /// messages are dropped once it has listed everything.
    pub fn watch_messages(&self, store: Store<EmailMessage>) {
        let _ = self.messages.set(store);
    }

    /// Writes made since start.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Attempts listed, in every namespace.
    pub fn len(&self) -> usize {
        self.books().values().map(Book::len).sum()
    }

    /// Whether no attempt is listed anywhere.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims `attempt` of `message`, waiting until the journal lists it.
    /// `Err(Full)` when the namespace's journal holds `MAX_CLAIMS` already.
    pub async fn claim(
        self: &Arc<Self>,
        message: &EmailMessage,
        attempt: u32,
    ) -> Result<Committed, Full> {
        let namespace = message.namespace().unwrap_or_default();
        let claim = Claim {
            name: message.name_any(),
            uid: message.uid().unwrap_or_default(),
            attempt,
            claimed: Timestamp::now(),
        };
        let (tx, rx) = oneshot::channel();
        if self.book(&namespace, |book| book.len() >= MAX_CLAIMS) {
            // Full: of claims left by others, perhaps, whose messages are gone.
            self.prune_gone(&namespace);
        }
        let start = {
            let mut books = self.books();
            let book = books.entry(namespace.clone()).or_default();
            if book.len() >= MAX_CLAIMS {
                return Err(Full);
            }
            book.wait((claim, tx))
        };
        if start {
            tokio::spawn(self.clone().write_waiting(namespace, false));
        }
        Ok(rx
            .await
            .unwrap_or_else(|_| Committed::Failed("the journal's writer stopped".into())))
    }

    /// Writes the waiting claims of `namespace`, a batch at a time, until
    /// none wait. `tidy`: the first write goes out even with no claim, to
    /// take the attempts that are over off the page.
    async fn write_waiting(self: Arc<Self>, namespace: String, mut tidy: bool) {
        loop {
            let Some(batch) = self.book(&namespace, |book| book.take_waiting(tidy)) else {
                return;
            };
            tidy = false;
            let result = self.write(&namespace, &batch).await;
            for (_, waiter) in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }

    /// One write of `batch` (reading the page first when a write failed).
    async fn write(&self, namespace: &str, batch: &[Waiting]) -> Committed {
        let claims: Vec<Claim> = batch.iter().map(|(c, _)| c.clone()).collect();
        let stale = self.book(namespace, |book| book.is_stale());
        if stale {
            match tokio::time::timeout(WRITE_TIMEOUT, page::read(&self.client, namespace)).await {
                Ok(Ok(read)) => self.book(namespace, |book| match read {
                    Some(read) => book.read(read.version, &read.claims),
                    None => book.read(None, &[]),
                }),
                Ok(Err(e)) => return self.failed(namespace, &claims, e.to_string()),
                Err(_) => return self.failed(namespace, &claims, timed_out()),
            }
        }
        self.prune_gone(namespace);
        let (version, (listed, removed)) = self.book(namespace, |book| {
            (book.version().map(str::to_string), book.page(&claims))
        });
        let written = tokio::time::timeout(
            WRITE_TIMEOUT,
            page::write(&self.client, namespace, version.as_deref(), listed),
        )
        .await;
        self.writes.fetch_add(1, Ordering::Relaxed);
        match written {
            Ok(Ok(version)) => {
                self.book(namespace, |book| book.committed(version, claims, removed));
                Committed::Claimed
            }
            Ok(Err(e)) if e.is_conflict() => {
                self.book(namespace, |book| book.failed(&claims));
                Committed::Conflict
            }
            Ok(Err(e)) => self.failed(namespace, &claims, e.to_string()),
            Err(_) => self.failed(namespace, &claims, timed_out()),
        }
    }

    fn failed(&self, namespace: &str, claims: &[Claim], why: String) -> Committed {
        warn!(namespace, error = %why, "the claim journal could not be written; nothing it would have listed is sent");
        self.book(namespace, |book| book.failed(claims));
        Committed::Failed(why)
    }

    fn book<T>(&self, namespace: &str, f: impl FnOnce(&mut Book) -> T) -> T {
        let mut books = self.books();
        f(books.entry(namespace.to_string()).or_default())
    }

    /// Drops inherited attempts whose message is gone (or is another
    /// message of the same name) or shows the attempt in its status, once
    /// the message cache has listed all.
    fn prune_gone(&self, namespace: &str) {
        let Some(store) = self.messages.get() else {
            return;
        };
        if store.wait_until_ready().now_or_never().is_none() {
            return;
        }
        self.book(namespace, |book| {
            book.prune_inherited(|claim| {
                let key = ObjectRef::new(&claim.name).within(namespace);
                store.get(&key).is_some_and(|m| {
                    m.uid().as_deref() == Some(claim.uid.as_str())
                        && m.status.as_ref().map_or(0, |s| s.attempts) < claim.attempt
                })
            })
        });
    }

    /// The outcome of `attempt` of `message` is on the message: the attempt
    /// leaves the page with the next write.
    pub fn close(self: &Arc<Self>, message: &EmailMessage, attempt: u32) {
        let namespace = message.namespace().unwrap_or_default();
        let uid = message.uid().unwrap_or_default();
        let schedule = {
            let mut books = self.books();
            books
                .get_mut(&namespace)
                .is_some_and(|book| book.close(&uid, attempt) && book.ask_tidy())
        };
        if schedule {
            tokio::spawn(self.clone().tidy(namespace));
        }
    }

    /// Every `TIDY_AFTER`, drops the inherited attempts that the message
    /// cache shows resolved, and writes the page without the attempts that
    /// are over unless claims are being written (their writes take those
    /// off as well). Ends when nothing is left to take off; one such task
    /// per namespace at most.
    async fn tidy(self: Arc<Self>, namespace: String) {
        loop {
            tokio::time::sleep(TIDY_AFTER).await;
            self.prune_gone(&namespace);
            if self.book(&namespace, Book::tidy_due) == Tidy::Now {
                self.clone().write_waiting(namespace.clone(), true).await;
            }
            if !self.book(&namespace, Book::keep_tidying) {
                return;
            }
        }
    }

    /// `message` as it is to be judged: when the journal lists an attempt
    /// of it that an earlier process made and its status does not show, the
    /// status says that attempt is `Sending` (it was interrupted).
    pub fn overlay(self: &Arc<Self>, message: Arc<EmailMessage>) -> Arc<EmailMessage> {
        let namespace = message.namespace().unwrap_or_default();
        let uid = message.uid().unwrap_or_default();
        let recorded = message.status.as_ref().map_or(0, |s| s.attempts);
        let (interrupted, schedule) = {
            let mut books = self.books();
            let Some(book) = books.get_mut(&namespace) else {
                return message;
            };
            let interrupted = book.interrupted(&uid, recorded);
            // A resolved attempt leaves the page soon, and so does one
            // resolved by the write this judgement leads to.
            let schedule = (interrupted.is_some() || book.lists_finished()) && book.ask_tidy();
            (interrupted, schedule)
        };
        if schedule {
            tokio::spawn(self.clone().tidy(namespace));
        }
        let Some(claim) = interrupted else {
            return message;
        };
        let mut judged = (*message).clone();
        let status = judged.status.get_or_insert_with(Default::default);
        status.phase = Some(Phase::Sending);
        status.attempts = claim.attempt;
        status.last_attempt_time = Some(Time(claim.claimed));
        status.next_attempt_time = None;
        Arc::new(judged)
    }
}

fn timed_out() -> String {
    format!("no answer within {} s", WRITE_TIMEOUT.as_secs())
}
