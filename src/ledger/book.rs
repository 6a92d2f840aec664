//! One namespace's ledger in memory: which identities were sent and on which
//! page each is stored (8 bytes of fingerprint and 8 of place per entry,
//! never the entries themselves), the entries not yet written, and the pages
//! with their sizes and end of window. Pure bookkeeping, no I/O.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;

use super::identity::Identity;
use crate::api::ledger::PAGE_ENTRIES;

/// One sent message, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The message's identity.
    pub id: Identity,
    /// The message's name.
    pub name: String,
    /// When the server accepted it.
    pub sent: Timestamp,
    /// Until when the same identity is not sent again.
    pub until: Timestamp,
    /// The server's id for it.
    pub provider_message_id: Option<String>,
}

/// Where an identity's entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In memory, not yet written.
    Pending,
    /// On the page with this number.
    Page(u32),
}

/// What the index keeps of an entry.
#[derive(Clone, Copy, Debug)]
struct Known {
    /// The page number, or `PENDING`.
    page: u32,
    /// The end of its window, in whole minutes since the epoch (rounded up).
    until_minute: u32,
}

const PENDING: u32 = u32::MAX;

fn minute_of(t: Timestamp) -> u32 {
    u32::try_from(t.as_second().div_euclid(60) + 1).unwrap_or(u32::MAX)
}

/// A page: how many entries it holds and when its last window ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PageInfo {
    /// Entries on the page.
    pub count: u32,
    /// The latest end of window among them.
    pub until: Timestamp,
}

/// A batch of entries to append to a page.
#[derive(Debug, PartialEq)]
pub struct Append {
    /// The page's number.
    pub page: u32,
    /// Whether the page must be created.
    pub create: bool,
    /// How many entries the page holds before these.
    pub count_before: u32,
    /// The entries.
    pub entries: Vec<Entry>,
    /// Whether entries that waited stay behind: the page filled up.
    pub more: bool,
}

/// One namespace's ledger.
#[derive(Default)]
pub struct Book {
    index: HashMap<u64, Known>,
    pending: Vec<Entry>,
    writing: Vec<Entry>,
    pages: BTreeMap<u32, PageInfo>,
}

impl Book {
    /// Notes a page read from the apiserver and its entries' identities.
    pub fn load_page(
        &mut self,
        page: u32,
        info: PageInfo,
        ids: impl Iterator<Item = (Identity, Timestamp)>,
    ) {
        for (id, until) in ids {
            self.index.insert(
                id.fingerprint(),
                Known {
                    page,
                    until_minute: minute_of(until),
                },
            );
        }
        self.pages.insert(page, info);
    }

    /// Where `id` is recorded, unless unknown or its window ended by `now`.
    pub fn find(&self, id: &Identity, now: Timestamp) -> Option<Place> {
        let known = self.index.get(&id.fingerprint())?;
        if known.until_minute < minute_of(now) {
            return None;
        }
        Some(match known.page {
            PENDING => Place::Pending,
            page => Place::Page(page),
        })
    }

    /// The entry for `id` not yet written, if there is one.
    pub fn pending_entry(&self, id: &Identity) -> Option<&Entry> {
        self.pending
            .iter()
            .chain(&self.writing)
            .find(|e| e.id == *id)
    }

    /// Records `entry` unless its identity is already recorded and its
    /// window still open at `now`. Returns whether it was added.
    pub fn remember(&mut self, entry: Entry, now: Timestamp) -> bool {
        if self.find(&entry.id, now).is_some() {
            return false;
        }
        self.index.insert(
            entry.id.fingerprint(),
            Known {
                page: PENDING,
                until_minute: minute_of(entry.until),
            },
        );
        self.pending.push(entry);
        true
    }

    /// Whether the message `name` has an entry not yet written.
    pub fn is_pending(&self, name: &str) -> bool {
        self.pending
            .iter()
            .chain(&self.writing)
            .any(|e| e.name == name)
    }

    /// Takes the entries to write next: the newest page's free room first,
    /// then a new page. `None` when nothing waits or a write is under way.
    pub fn next_append(&mut self) -> Option<Append> {
        if self.pending.is_empty() || !self.writing.is_empty() {
            return None;
        }
        let newest = self.pages.last_key_value().map(|(n, i)| (*n, i.count));
        let (page, create, count_before) = match newest {
            Some((page, count)) if (count as usize) < PAGE_ENTRIES => (page, false, count),
            Some((page, _)) => (page + 1, true, 0),
            None => (1, true, 0),
        };
        let room = PAGE_ENTRIES - count_before as usize;
        let take = room.min(self.pending.len());
        let entries: Vec<Entry> = self.pending.drain(..take).collect();
        self.writing = entries.clone();
        Some(Append {
            page,
            create,
            count_before,
            entries,
            more: !self.pending.is_empty(),
        })
    }

    /// The append went through: its entries now live on its page.
    pub fn appended(&mut self, append: &Append) {
        let until = append
            .entries
            .iter()
            .map(|e| e.until)
            .max()
            .unwrap_or_else(Timestamp::now);
        for entry in &append.entries {
            if let Some(known) = self.index.get_mut(&entry.id.fingerprint()) {
                known.page = append.page;
            }
        }
        let info = self
            .pages
            .entry(append.page)
            .or_insert(PageInfo { count: 0, until });
        info.count = append.count_before + append.entries.len() as u32;
        info.until = info.until.max(until);
        self.writing.clear();
    }

    /// The append failed: its entries wait again, first in line. With
    /// `reload` the page's size here is wrong (someone else wrote it): the
    /// page is forgotten so the next append starts a new one.
    pub fn append_failed(&mut self, append: Append, page_is_stale: bool) {
        let mut entries = append.entries;
        entries.append(&mut self.pending);
        self.pending = entries;
        self.writing.clear();
        if page_is_stale {
            self.pages.insert(
                append.page,
                PageInfo {
                    count: PAGE_ENTRIES as u32,
                    until: Timestamp::now(),
                },
            );
        }
    }

    /// Pages to delete at `now`: those whose every window ended, and the
    /// oldest ones beyond `max_entries`.
    pub fn pages_to_drop(&self, now: Timestamp, max_entries: usize) -> Vec<u32> {
        let mut drop: Vec<u32> = self
            .pages
            .iter()
            .filter(|(_, info)| info.until < now)
            .map(|(page, _)| *page)
            .collect();
        let mut kept: usize = self
            .pages
            .iter()
            .filter(|(page, _)| !drop.contains(page))
            .map(|(_, info)| info.count as usize)
            .sum();
        for (page, info) in &self.pages {
            if kept <= max_entries {
                break;
            }
            if !drop.contains(page) && Some(*page) != self.pages.keys().last().copied() {
                drop.push(*page);
                kept -= info.count as usize;
            }
        }
        drop
    }

    /// Forgets a deleted page and its entries.
    pub fn dropped(&mut self, page: u32) {
        self.pages.remove(&page);
        self.index.retain(|_, known| known.page != page);
    }

    /// The page's number and information.
    pub fn page(&self, page: u32) -> Option<PageInfo> {
        self.pages.get(&page).copied()
    }

    /// Entries known (written or not).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Pages known.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Whether anything waits to be written.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn id(n: usize) -> Identity {
        Identity::parse(&format!("{:016x}{n:016x}", n + 1)).expect("an identity")
    }

    fn entry(n: usize, now: Timestamp) -> Entry {
        Entry {
            id: id(n),
            name: format!("m-{n}"),
            sent: now,
            until: now + SignedDuration::from_hours(24),
            provider_message_id: Some(format!("p-{n}")),
        }
    }

    #[test]
    fn an_identity_is_pending_then_on_its_page() {
        let now = Timestamp::now();
        let mut book = Book::default();
        assert!(book.remember(entry(1, now), now));
        assert!(!book.remember(entry(1, now), now), "once");
        assert_eq!(book.find(&id(1), now), Some(Place::Pending));
        assert!(book.is_pending("m-1"));
        let append = book.next_append().expect("something to write");
        assert_eq!(
            (append.page, append.create, append.count_before),
            (1, true, 0)
        );
        assert!(book.next_append().is_none(), "one write at a time");
        assert_eq!(
            book.pending_entry(&id(1)).map(|e| e.name.as_str()),
            Some("m-1")
        );
        book.appended(&append);
        assert_eq!(book.find(&id(1), now), Some(Place::Page(1)));
        assert!(!book.is_pending("m-1"));
        assert_eq!(book.find(&id(2), now), None);
    }

    #[test]
    fn pages_fill_up_to_their_size_then_a_new_one_starts() {
        let now = Timestamp::now();
        let mut book = Book::default();
        for n in 0..(PAGE_ENTRIES + 10) {
            book.remember(entry(n, now), now);
        }
        let first = book.next_append().expect("a first page");
        assert_eq!((first.entries.len(), first.more), (PAGE_ENTRIES, true));
        book.appended(&first);
        let second = book.next_append().expect("a second page");
        assert_eq!(
            (
                second.page,
                second.create,
                second.entries.len(),
                second.more
            ),
            (2, true, 10, false)
        );
        book.appended(&second);
        book.remember(entry(99_999, now), now);
        let third = book.next_append().expect("more room on page 2");
        assert_eq!(
            (third.page, third.create, third.count_before),
            (2, false, 10)
        );
    }

    #[test]
    fn a_failed_write_is_tried_again_in_the_same_order() {
        let now = Timestamp::now();
        let mut book = Book::default();
        book.remember(entry(1, now), now);
        let append = book.next_append().expect("a write");
        book.remember(entry(2, now), now);
        book.append_failed(append, true);
        let again = book.next_append().expect("again");
        let names: Vec<_> = again.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["m-1", "m-2"]);
        assert_eq!(
            (again.page, again.create),
            (2, true),
            "the stale page is left"
        );
    }

    #[test]
    fn windows_end_and_pages_go() {
        let now = Timestamp::now();
        let mut book = Book::default();
        book.remember(entry(1, now), now);
        let append = book.next_append().expect("a write");
        book.appended(&append);
        let later = now + SignedDuration::from_hours(25);
        assert_eq!(book.find(&id(1), later), None, "its window ended");
        assert!(
            book.remember(entry(1, later), later),
            "so it may be sent again"
        );
        assert_eq!(book.pages_to_drop(now, 100), Vec::<u32>::new());
        assert_eq!(book.pages_to_drop(later, 100), vec![1]);
        book.dropped(1);
        assert_eq!(book.page_count(), 0);
    }

    #[test]
    fn the_oldest_pages_go_beyond_the_limit_but_never_the_newest() {
        let now = Timestamp::now();
        let mut book = Book::default();
        for n in 0..(3 * PAGE_ENTRIES) {
            book.remember(entry(n, now), now);
        }
        while let Some(append) = book.next_append() {
            book.appended(&append);
        }
        assert_eq!(book.page_count(), 3);
        assert_eq!(book.pages_to_drop(now, 2 * PAGE_ENTRIES), vec![1]);
        assert_eq!(
            book.pages_to_drop(now, 0),
            vec![1, 2],
            "page 3 is being filled"
        );
        book.dropped(1);
        assert_eq!(book.len(), 2 * PAGE_ENTRIES);
    }
}
