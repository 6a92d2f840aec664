//! The ledger: a bounded, durable record of what was sent, so a message is
//! sent once per intent, not once per object. A message's identity (see
//! `identity`) is recorded once it is Sent, in per-namespace `EmailLedger`
//! pages, for its provider's `deduplicationWindowDays` (30 by default).
//! A new message whose identity is recorded is not sent (AlreadySent).
//!
//! Writes are coalesced: entries wait in memory and go out at most once a
//! second per namespace, appended to the newest page. Memory holds 16 bytes
//! per entry (a fingerprint and where it is), never the entries; a hit reads
//! its page. Pages are deleted when their windows end, and the oldest go
//! first beyond `--ledger-max-entries` per namespace. A message is not
//! deleted by its time to live while its entry waits to be written (see
//! docs/delivery.md for the one window in which a duplicate remains possible).

pub mod book;
pub mod identity;
pub mod pages;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::api::EmailMessage;
pub use book::Entry;
use book::{Book, Place};
pub use identity::{Identity, send_key};

/// The window of a provider that sets none, in days.
pub const DEFAULT_WINDOW_DAYS: u32 = 30;
/// Entries kept per namespace at most, by default.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// How often waiting entries are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often ended windows are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How soon a failed start-up list is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(5);

/// The record of what was sent, for every namespace served.
pub struct Ledger {
    books: Mutex<HashMap<String, Book>>,
    loaded: watch::Sender<bool>,
    namespace: Option<String>,
    max_entries: usize,
    writes: AtomicU64,
    waiting: Notify,
}

/// What the ledger holds, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Entries known.
    pub entries: usize,
    /// Pages known.
    pub pages: usize,
    /// Writes (creates and appends) made since start.
    pub writes: u64,
}

impl Ledger {
    /// A ledger for `namespace` (all when `None`), keeping at most
    /// `max_entries` per namespace.
    pub fn new(namespace: Option<String>, max_entries: usize) -> Self {
        Self {
            books: Mutex::default(),
            loaded: watch::channel(false).0,
            namespace,
            max_entries,
            writes: AtomicU64::new(0),
            waiting: Notify::new(),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, HashMap<String, Book>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every page once. Until it has, `loaded` waits.
    pub async fn load(&self, client: &Client) -> Result<(), pages::Error> {
        let mut books: HashMap<String, Book> = HashMap::new();
        pages::list(client, self.namespace.as_deref(), |page| {
            books.entry(page.namespace).or_default().load_page(
                page.number,
                page.info,
                page.ids.into_iter(),
            );
        })
        .await?;
        let size: usize = books.values().map(Book::len).sum();
        let mut held = self.books();
        for (namespace, book) in books {
            held.insert(namespace, book);
        }
        drop(held);
        info!(entries = size, "ledger loaded");
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Waits until the pages are read; `false` if the ledger was dropped.
    pub async fn loaded(&self) -> bool {
        let mut loaded = self.loaded.subscribe();
        loaded.wait_for(|l| *l).await.is_ok()
    }

    /// Records a message the server accepted (a finished message with a
    /// send time), unless its identity is recorded already or its window
    /// (`window_days`, else 30) has ended.
    pub fn remember(&self, message: &EmailMessage, window_days: Option<u32>) {
        let Some(status) = &message.status else {
            return;
        };
        if !status.phase.is_some_and(|p| p.was_sent()) {
            return;
        }
        let now = Timestamp::now();
        let sent = status.sent_time.as_ref().map_or(now, |t| t.0);
        let days = window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        let window = SignedDuration::from_hours(24 * i64::from(days));
        let Ok(until) = sent.checked_add(window) else {
            return;
        };
        if until <= now {
            return;
        }
        let entry = Entry {
            id: Identity::of(message),
            name: message.name_any(),
            sent,
            until,
            provider_message_id: status
                .provider_message_id
                .as_ref()
                .map(|id| id.chars().take(512).collect()),
        };
        let namespace = message.namespace().unwrap_or_default();
        let added = self
            .books()
            .entry(namespace)
            .or_default()
            .remember(entry, now);
        if added {
            self.waiting.notify_one();
        }
    }

    /// The recorded send of `message`'s identity, if its window is open.
    pub async fn lookup(
        &self,
        client: &Client,
        message: &EmailMessage,
    ) -> Result<Option<Entry>, pages::Error> {
        let id = Identity::of(message);
        let namespace = message.namespace().unwrap_or_default();
        let now = Timestamp::now();
        let page = {
            let books = self.books();
            let Some(book) = books.get(&namespace) else {
                return Ok(None);
            };
            match book.find(&id, now) {
                None => return Ok(None),
                Some(Place::Pending) => return Ok(book.pending_entry(&id).cloned()),
                Some(Place::Page(page)) => page,
            }
        };
        let entry = pages::read(client, &namespace, page, &id).await?;
        Ok(entry.filter(|e| e.until > now))
    }

    /// The recorded send of identity `id` in any namespace served (a bounce
    /// names its message by identity only), with the namespace.
    pub async fn find_identity(
        &self,
        client: &Client,
        id: &Identity,
    ) -> Result<Option<(String, Entry)>, pages::Error> {
        let now = Timestamp::now();
        let candidates: Vec<(String, Result<Entry, u32>)> = {
            let books = self.books();
            books
                .iter()
                .filter_map(|(namespace, book)| match book.find(id, now)? {
                    Place::Pending => book
                        .pending_entry(id)
                        .cloned()
                        .map(|e| (namespace.clone(), Ok(e))),
                    Place::Page(page) => Some((namespace.clone(), Err(page))),
                })
                .collect()
        };
        for (namespace, place) in candidates {
            let entry = match place {
                Ok(entry) => Some(entry),
                Err(page) => pages::read(client, &namespace, page, id).await?,
            };
            if let Some(entry) = entry.filter(|e| e.id == *id) {
                return Ok(Some((namespace, entry)));
            }
        }
        Ok(None)
    }

    /// Whether the message `namespace/name` has an entry not yet written:
    /// it must not be deleted before.
    pub fn is_pending(&self, namespace: &str, name: &str) -> bool {
        self.books()
            .get(namespace)
            .is_some_and(|book| book.is_pending(name))
    }

    fn has_pending(&self) -> bool {
        self.books().values().any(Book::has_pending)
    }

    /// How much the ledger holds.
    pub fn size(&self) -> Size {
        let books = self.books();
        Size {
            entries: books.values().map(Book::len).sum(),
            pages: books.values().map(Book::page_count).sum(),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// Writes every waiting entry (one write per page touched). Entries
    /// whose write failed wait for the next flush.
    pub async fn flush(&self, client: &Client) {
        let namespaces: Vec<String> = {
            let books = self.books();
            books
                .iter()
                .filter(|(_, b)| b.has_pending())
                .map(|(ns, _)| ns.clone())
                .collect()
        };
        for namespace in namespaces {
            self.flush_namespace(client, &namespace).await;
        }
    }

    /// Writes what waits in `namespace`: one write, or one per page when
    /// the entries fill a page. Entries that arrive meanwhile wait for the
    /// next flush, so a busy namespace costs one write a second.
    async fn flush_namespace(&self, client: &Client, namespace: &str) {
        loop {
            let next = {
                let mut books = self.books();
                let Some(book) = books.get_mut(namespace) else {
                    return;
                };
                book.next_append().map(|append| {
                    let newest = append.entries.iter().map(|e| e.until).max();
                    let known = book.page(append.page).map(|p| p.until);
                    let until = newest.max(known).unwrap_or_else(Timestamp::now);
                    (append, until)
                })
            };
            let Some((append, until)) = next else {
                return;
            };
            let result = pages::write(client, namespace, &append, until).await;
            self.writes.fetch_add(1, Ordering::Relaxed);
            let mut books = self.books();
            let Some(book) = books.get_mut(namespace) else {
                return;
            };
            match result {
                Ok(()) if append.more => book.appended(&append),
                Ok(()) => {
                    book.appended(&append);
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "ledger write failed; retried");
                    book.append_failed(append, e.is_stale_page());
                    return;
                }
            }
        }
    }

    /// Deletes the pages whose windows ended, and the oldest beyond the
    /// limit.
    pub async fn prune(&self, client: &Client, now: Timestamp) {
        let doomed: Vec<(String, u32)> = {
            let books = self.books();
            books
                .iter()
                .flat_map(|(ns, book)| {
                    book.pages_to_drop(now, self.max_entries)
                        .into_iter()
                        .map(move |page| (ns.clone(), page))
                })
                .collect()
        };
        for (namespace, page) in doomed {
            match pages::delete(client, &namespace, page).await {
                Ok(()) => {
                    if let Some(book) = self.books().get_mut(&namespace) {
                        book.dropped(page);
                    }
                }
                Err(e) => warn!(error = %e, "ledger page not deleted; retried"),
            }
        }
    }

    /// Loads the pages, then writes waiting entries and deletes ended pages
    /// until the process ends.
    pub async fn run(&self, client: Client) {
        while let Err(e) = self.load(&client).await {
            warn!(error = %e, "the ledger could not be read (is the EmailLedger CRD installed?); no message is sent until it is");
            tokio::time::sleep(LOAD_RETRY).await;
        }
        let mut pruned = tokio::time::Instant::now();
        self.prune(&client, Timestamp::now()).await;
        loop {
            if !self.has_pending() {
                let _ = tokio::time::timeout(PRUNE_EVERY, self.waiting.notified()).await;
            }
            tokio::time::sleep(FLUSH_EVERY).await;
            self.flush(&client).await;
            if pruned.elapsed() >= PRUNE_EVERY {
                self.prune(&client, Timestamp::now()).await;
                pruned = tokio::time::Instant::now();
            }
        }
    }
}
