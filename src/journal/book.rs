//! One namespace's journal as the controller holds it: the attempts this
//! process claimed and has not recorded (open), those an earlier process
//! (or another replica) listed (inherited), the claims waiting for the next
//! write, and the page's version. No I/O: `Journal` writes what `page`
//! returns and reports back with `committed` or `failed`.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::oneshot;

use crate::api::journal::JournalClaim;

/// One attempt under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The message's name.
    pub name: String,
    /// The message's uid.
    pub uid: String,
    /// The attempt's number.
    pub attempt: u32,
    /// When it was claimed.
    pub claimed: Timestamp,
}

impl Claim {
    /// The claim as a page lists it.
    pub fn listed(&self) -> JournalClaim {
        JournalClaim {
            name: self.name.clone(),
            uid: self.uid.clone(),
            attempt: self.attempt,
            claimed: Time(self.claimed),
        }
    }

    /// A claim from a page.
    pub fn from_listed(listed: &JournalClaim) -> Self {
        Self {
            name: listed.name.clone(),
            uid: listed.uid.clone(),
            attempt: listed.attempt,
            claimed: listed.claimed.0,
        }
    }
}

/// What became of a claim sent to the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Written: the attempt may be made.
    Claimed,
    /// The page changed under this writer (another replica wrote it, or it
    /// was created meanwhile): nothing may be sent; the message is looked at
    /// again once the page is read afresh.
    Conflict,
    /// The write failed (the apiserver's answer, or none in time): nothing
    /// may be sent.
    Failed(String),
}

/// What a due tidy write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tidy {
    /// Write the page now (the caller writes).
    Now,
    /// Claims are being written: look again later.
    Later,
    /// The page lists nothing finished.
    Nothing,
}

/// A claim waiting for the next write, and who waits for it.
pub type Waiting = (Claim, oneshot::Sender<Committed>);

/// One namespace's journal.
#[derive(Default)]
pub struct Book {
    /// The page's resourceVersion as last read or written; `None` when
    /// there is no page yet.
    version: Option<String>,
    /// The page must be read again before the next write (a write failed).
    stale: bool,
    /// Attempts this process claimed and has not recorded, by uid.
    open: HashMap<String, Claim>,
    /// Attempts another process listed, not yet resolved, by uid.
    inherited: HashMap<String, Claim>,
    /// Attempts of a write that failed: never made, so a page read later
    /// that lists them (the write landed after all) does not count them.
    not_made: HashSet<(String, u32)>,
    /// Claims waiting for the next write.
    waiting: Vec<Waiting>,
    /// A write is under way (its task takes the waiting claims in turn).
    writing: bool,
    /// Attempts taken off the book (closed, resolved, pruned) so far ...
    removed: u64,
    /// ... and how many of those the page as last written left out: when
    /// fewer, the page lists attempts that are over.
    removed_written: u64,
    /// A write that only takes finished attempts off the page is due.
    tidy_scheduled: bool,
}

impl Book {
    /// How many attempts the page would list with every waiting claim.
    pub fn len(&self) -> usize {
        self.open.len() + self.inherited.len() + self.waiting.len()
    }

    /// Whether the book lists nothing and nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the page as read from the apiserver (`None`: there is none):
    /// every attempt on it that this process did not claim is inherited.
    pub fn read(&mut self, version: Option<String>, claims: &[JournalClaim]) {
        self.version = version;
        self.stale = false;
        self.inherited = claims
            .iter()
            .map(Claim::from_listed)
            .filter(|c| !self.open.contains_key(&c.uid))
            .filter(|c| !self.not_made.contains(&(c.uid.clone(), c.attempt)))
            .map(|c| (c.uid.clone(), c))
            .collect();
    }

    /// Queues `claim` for the next write; `true` when no write is under
    /// way, so the caller starts one.
    pub fn wait(&mut self, waiting: Waiting) -> bool {
        self.waiting.push(waiting);
        let start = !self.writing;
        self.writing = true;
        start
    }

    /// The claims waiting, taken for one write (none, for a write that
    /// only takes finished attempts off the page, when `tidy` and the page
    /// lists some); `None`, and the writing ends, when there is nothing to
    /// write.
    pub fn take_waiting(&mut self, tidy: bool) -> Option<Vec<Waiting>> {
        let taken = std::mem::take(&mut self.waiting);
        if taken.is_empty() && !(tidy && self.lists_finished()) {
            self.writing = false;
            return None;
        }
        Some(taken)
    }

    /// Whether the page as last written lists attempts that are over.
    pub fn lists_finished(&self) -> bool {
        self.removed > self.removed_written
    }

    /// Asks for the tidying (writes that take finished attempts off the
    /// page); `true` when it is not under way yet (the caller starts it).
    pub fn ask_tidy(&mut self) -> bool {
        let first = !self.tidy_scheduled;
        self.tidy_scheduled = true;
        first
    }

    /// A tidy write is due: what to do now.
    pub fn tidy_due(&mut self) -> Tidy {
        if self.writing {
            return Tidy::Later;
        }
        if !self.lists_finished() {
            return Tidy::Nothing;
        }
        self.writing = true;
        Tidy::Now
    }

    /// Whether the tidying goes on: the page lists finished attempts, or
    /// inherited ones wait to be resolved. When not, it ends (and the next
    /// `ask_tidy` starts it again).
    pub fn keep_tidying(&mut self) -> bool {
        let go_on = self.lists_finished() || !self.inherited.is_empty();
        self.tidy_scheduled = go_on;
        go_on
    }

    /// Whether the page must be read before the next write.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The version the next write is guarded by (`None`: create the page).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The page with `batch` added: the inherited attempts, the open ones
    /// and the batch (a message's newer attempt replaces its older), in a
    /// stable order, and the count of removals it reflects (for
    /// `committed`).
    pub fn page(&self, batch: &[Claim]) -> (Vec<JournalClaim>, u64) {
        let mut all: HashMap<&str, &Claim> = HashMap::new();
        for claim in self
            .inherited
            .values()
            .chain(self.open.values())
            .chain(batch)
        {
            all.insert(&claim.uid, claim);
        }
        let mut listed: Vec<JournalClaim> = all.values().map(|c| c.listed()).collect();
        listed.sort_by(|a, b| (&a.claimed, &a.uid).cmp(&(&b.claimed, &b.uid)));
        (listed, self.removed)
    }

    /// `batch` was written as version `version`, on a page that reflects
    /// `removed` removals: its attempts may be made.
    pub fn committed(&mut self, version: String, batch: Vec<Claim>, removed: u64) {
        self.version = Some(version);
        self.removed_written = self.removed_written.max(removed);
        self.not_made.clear();
        for claim in batch {
            self.inherited.remove(&claim.uid);
            self.open.insert(claim.uid.clone(), claim);
        }
    }

    /// The write of `batch` failed: none of it is made, and the page is
    /// read again before the next write.
    pub fn failed(&mut self, batch: &[Claim]) {
        self.stale = true;
        self.not_made
            .extend(batch.iter().map(|c| (c.uid.clone(), c.attempt)));
    }

    /// The outcome of `uid`'s `attempt` is on its message: the attempt
    /// leaves the page with the next write. `true` when it was open.
    pub fn close(&mut self, uid: &str, attempt: u32) -> bool {
        if self.open.get(uid).is_some_and(|c| c.attempt == attempt) {
            self.open.remove(uid);
            self.removed += 1;
            return true;
        }
        false
    }

    /// The attempt an earlier process made of message `uid` and never
    /// recorded, if its status (`recorded` attempts) does not show it. An
    /// attempt the status shows is resolved and forgotten.
    pub fn interrupted(&mut self, uid: &str, recorded: u32) -> Option<Claim> {
        let claim = self.inherited.get(uid)?;
        if claim.attempt > recorded {
            return Some(claim.clone());
        }
        self.inherited.remove(uid);
        self.removed += 1;
        None
    }

    /// Forgets the inherited attempts `keep` refuses (their messages are
    /// gone, or show the attempt): they leave the page with the next write.
    pub fn prune_inherited(&mut self, keep: impl Fn(&Claim) -> bool) {
        let before = self.inherited.len();
        self.inherited.retain(|_, claim| keep(claim));
        self.removed += (before - self.inherited.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str, attempt: u32) -> Claim {
        Claim {
            name: format!("m-{uid}"),
            uid: uid.into(),
            attempt,
            claimed: Timestamp::from_second(1_000 + i64::from(attempt)).expect("time"),
        }
    }

    fn uids(page: &[JournalClaim]) -> Vec<(String, u32)> {
        let mut all: Vec<_> = page.iter().map(|c| (c.uid.clone(), c.attempt)).collect();
        all.sort();
        all
    }

    #[test]
    fn a_write_lists_the_open_and_inherited_attempts_and_closed_ones_leave() {
        let mut book = Book::default();
        book.read(Some("1".into()), &[claim("old", 2).listed()]);
        assert_eq!(book.version(), Some("1"));
        book.committed("2".into(), vec![claim("a", 1), claim("b", 1)], 0);
        assert_eq!(
            uids(&book.page(&[claim("c", 1)]).0),
            vec![
                ("a".into(), 1),
                ("b".into(), 1),
                ("c".into(), 1),
                ("old".into(), 2)
            ]
        );
        assert!(!book.lists_finished());
        assert!(book.close("a", 1));
        // Closing another attempt of the same message changes nothing.
        assert!(!book.close("b", 7));
        // The page as written lists a finished attempt: a tidy write is
        // asked for once, and is due while nothing else is written.
        assert!(book.lists_finished());
        assert!(book.ask_tidy());
        assert!(!book.ask_tidy());
        assert_eq!(book.tidy_due(), Tidy::Now);
        let (page, removed) = book.page(&[]);
        assert!(book.take_waiting(true).is_some_and(|b| b.is_empty()));
        book.committed("3".into(), vec![], removed);
        assert!(!book.lists_finished());
        assert_eq!(page.len(), 2);
        // Nothing left to write: the writing ends.
        assert!(book.take_waiting(true).is_none());
        assert_eq!(book.tidy_due(), Tidy::Nothing);
        // The inherited attempt waits to be resolved: the tidying goes on.
        assert!(book.keep_tidying());
        assert_eq!(book.interrupted("old", 2), None);
        assert!(
            book.keep_tidying(),
            "it leaves the page with the next write"
        );
        assert_eq!(book.tidy_due(), Tidy::Now);
        let (_, removed) = book.page(&[]);
        book.committed("4".into(), vec![], removed);
        assert!(book.take_waiting(false).is_none());
        // Nothing finished listed, nothing inherited: the tidying ends.
        assert!(!book.keep_tidying());
        assert!(book.ask_tidy());
        assert_eq!(uids(&book.page(&[]).0), vec![("b".into(), 1)]);
    }

    #[test]
    fn a_newer_attempt_replaces_the_inherited_one() {
        let mut book = Book::default();
        book.read(Some("1".into()), &[claim("m", 1).listed()]);
        assert_eq!(book.interrupted("m", 0), Some(claim("m", 1)));
        book.committed("2".into(), vec![claim("m", 2)], 0);
        assert_eq!(uids(&book.page(&[]).0), vec![("m".into(), 2)]);
        // Its own open attempt is not reported as interrupted.
        assert_eq!(book.interrupted("m", 1), None);
    }

    #[test]
    fn an_attempt_the_status_shows_is_resolved() {
        let mut book = Book::default();
        book.read(Some("1".into()), &[claim("m", 3).listed()]);
        assert_eq!(book.interrupted("m", 3), None);
        // Forgotten: the next write leaves it out.
        assert!(book.page(&[]).0.is_empty());
    }

    #[test]
    fn a_failed_write_makes_nothing_and_its_attempts_do_not_count_if_they_landed() {
        let mut book = Book::default();
        let (tx, _rx) = oneshot::channel();
        assert!(book.wait((claim("m", 1), tx)));
        let (tx, _rx) = oneshot::channel();
        // A write is under way: the second claim rides on it.
        assert!(!book.wait((claim("n", 1), tx)));
        let batch: Vec<Claim> = book
            .take_waiting(false)
            .expect("a batch")
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(batch.len(), 2);
        book.failed(&batch);
        assert!(book.is_stale());
        // The write landed after all: read back, it is not an interruption.
        book.read(
            Some("5".into()),
            &[claim("m", 1).listed(), claim("x", 4).listed()],
        );
        assert!(!book.is_stale());
        assert_eq!(book.interrupted("m", 0), None);
        assert_eq!(book.interrupted("x", 3), Some(claim("x", 4)));
        assert_eq!(uids(&book.page(&[]).0), vec![("x".into(), 4)]);
        // Nothing waits: the writing ends, and the next claim starts one.
        assert!(book.take_waiting(false).is_none());
        let (tx, _rx) = oneshot::channel();
        assert!(book.wait((claim("y", 1), tx)));
        // A tidy write waits while claims are written.
        assert_eq!(book.tidy_due(), Tidy::Later);
    }

    #[test]
    fn pruned_attempts_leave_the_page() {
        let mut book = Book::default();
        book.read(
            Some("1".into()),
            &[claim("gone", 1).listed(), claim("here", 1).listed()],
        );
        book.prune_inherited(|c| c.uid == "here");
        assert_eq!(uids(&book.page(&[]).0), vec![("here".into(), 1)]);
        assert_eq!(book.len(), 1);
    }
}
