//! Rate limits as schedules: each provider's `rateLimit` (and each
//! namespace's share of it) is a token bucket kept as the generic cell rate
//! algorithm's theoretical arrival time, and a message that finds it empty
//! is given a slot of its own in the future instead of being told "not
//! yet". It comes back at that slot and goes, so a backlog of a thousand
//! messages costs a thousand waits spread over the rate, not a thousand
//! messages asking again and again (which, with a status write each time,
//! starved every other namespace of the controller). A token-bucket crate
//! answers "may it go now?"; this needs "when may it go?", kept per message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::ProviderId;
use crate::api::provider::RateLimit;

/// Waits shorter than this are slept through; longer ones are written to
/// the message's status (RateLimited) and the message comes back then.
const SHORT_WAIT: Duration = Duration::from_millis(250);
/// The most buckets kept (providers and namespaces' shares); past it they
/// all start afresh rather than grow memory.
const MAX_BUCKETS: usize = 100_000;
/// The most slots one bucket holds for messages to come back to; past it
/// the oldest are dropped (those messages ask again).
const MAX_SLOTS: usize = 100_000;
/// A slot not taken this long after it came is dropped (its message went
/// another way).
const SLOT_KEPT: Duration = Duration::from_secs(60);

/// One bucket: the limit it follows, its theoretical arrival time, and the
/// slots handed out.
struct Bucket {
    limit: RateLimit,
    interval: Duration,
    tolerance: Duration,
    tat: Instant,
    slots: HashMap<String, Instant>,
}

impl Bucket {
    fn new(limit: &RateLimit, now: Instant) -> Self {
        let rate = limit.messages_per_second.max(1);
        let interval = Duration::from_secs(1) / rate;
        let burst = limit.burst.unwrap_or(rate).max(1);
        Self {
            limit: limit.clone(),
            interval,
            tolerance: interval * (burst - 1),
            tat: now,
            slots: HashMap::new(),
        }
    }

    /// When `who` may go: now (`None`), or after the returned wait, at a
    /// slot held for it.
    fn ask(&mut self, who: &str, now: Instant) -> Option<Duration> {
        if let Some(slot) = self.slots.get(who).copied() {
            if slot <= now + Duration::from_millis(5) {
                self.slots.remove(who);
                return None;
            }
            return Some(slot - now);
        }
        let tat = self.tat.max(now);
        self.tat = tat + self.interval;
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if earliest <= now {
            return None;
        }
        if self.slots.len() >= MAX_SLOTS {
            self.slots.retain(|_, s| *s + SLOT_KEPT > now);
            if self.slots.len() >= MAX_SLOTS {
                return Some(earliest - now);
            }
        }
        self.slots.insert(who.to_string(), earliest);
        Some(earliest - now)
    }
}

/// Every rate-limited provider's bucket, and each namespace's share.
#[derive(Default)]
pub struct RateLimits {
    inner: Mutex<HashMap<(ProviderId, String), Bucket>>,
}

impl RateLimits {
    /// Takes a slot of `provider`'s bucket (or `namespace`'s share of it)
    /// for message `who`. `None` when it may go now (after at most a short
    /// sleep), else how long until the slot held for it.
    pub async fn acquire(
        &self,
        provider: &ProviderId,
        namespace: Option<&str>,
        who: &str,
        limit: Option<&RateLimit>,
    ) -> Option<Duration> {
        let limit = limit?;
        let wait = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let key = (provider.clone(), namespace.unwrap_or_default().to_string());
            if map.len() >= MAX_BUCKETS && !map.contains_key(&key) {
                map.clear();
            }
            let bucket = map
                .entry(key)
                .and_modify(|b| {
                    if b.limit != *limit {
                        *b = Bucket::new(limit, now);
                    }
                })
                .or_insert_with(|| Bucket::new(limit, now));
            bucket.ask(who, now)
        };
        match wait {
            Some(wait) if wait <= SHORT_WAIT => {
                tokio::time::sleep(wait).await;
                None
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u32, burst: Option<u32>) -> RateLimit {
        RateLimit {
            messages_per_second: rate,
            burst,
        }
    }

    #[test]
    fn a_backlog_gets_one_slot_each_spread_over_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&limit(10, Some(2)), start);
        assert_eq!(bucket.ask("a", start), None);
        assert_eq!(bucket.ask("b", start), None, "the burst");
        let waits: Vec<Duration> = (0..5)
            .map(|i| bucket.ask(&format!("m{i}"), start).expect("a slot"))
            .collect();
        // 100 ms apart, each its own.
        for (i, wait) in waits.iter().enumerate() {
            let expected = Duration::from_millis(100 * (i as u64 + 1));
            assert!(
                wait.abs_diff(expected) < Duration::from_millis(2),
                "{i}: {wait:?}"
            );
        }
        // Asking again before its slot changes nothing; at its slot it goes.
        assert_eq!(bucket.ask("m0", start), Some(waits[0]));
        assert_eq!(bucket.ask("m0", start + waits[0]), None);
        // A newcomer queues behind the slots already held.
        let late = bucket.ask("late", start).expect("a slot");
        assert!(late > waits[4], "{late:?}");
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst() {
        let start = Instant::now();
        let mut bucket = Bucket::new(&limit(1, Some(3)), start);
        for who in ["a", "b", "c"] {
            assert_eq!(bucket.ask(who, start), None);
        }
        assert!(bucket.ask("d", start).is_some());
        let later = start + Duration::from_secs(10);
        for who in ["e", "f", "g"] {
            assert_eq!(bucket.ask(who, later), None);
        }
    }
}
