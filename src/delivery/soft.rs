//! Counts soft bounces per provider and address, in memory, so that the
//! provider's `softBounces.limit` within `windowHours` suppresses the
//! address. Bounded: at most [`MAX_ADDRESSES`] addresses are tracked (the
//! one seen longest ago is forgotten first) and each keeps at most `limit`
//! times. Counts start again when the leader changes (documented).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

use crate::api::ProviderId;
use crate::api::bounces::SoftBouncePolicy;

/// The most addresses tracked at once, over every provider.
pub const MAX_ADDRESSES: usize = 50_000;

/// The soft bounces of one address: when, and the event's id.
type Seen = VecDeque<(Timestamp, String)>;

/// Soft bounces seen, by provider and address.
#[derive(Default)]
pub struct SoftBounces {
    seen: Mutex<HashMap<(ProviderId, String), Seen>>,
}

impl SoftBounces {
    /// Counts soft bounce `event` (its id: a repeat is not counted again)
    /// of `address` at `at`; `true` when that makes `policy.limit` within
    /// the window (the count then starts again).
    pub fn count(
        &self,
        provider: &ProviderId,
        address: &str,
        event: &str,
        at: Timestamp,
        policy: &SoftBouncePolicy,
    ) -> bool {
        if policy.limit == 0 {
            return false;
        }
        let window = SignedDuration::from_hours(i64::from(policy.window_hours));
        let start = at.checked_sub(window).unwrap_or(Timestamp::MIN);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (provider.clone(), address.to_ascii_lowercase());
        if !seen.contains_key(&key) && seen.len() >= MAX_ADDRESSES {
            let oldest = seen
                .iter()
                .min_by_key(|(_, times)| times.back().map(|(t, _)| *t))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                seen.remove(&oldest);
            }
        }
        let times = seen.entry(key.clone()).or_default();
        if times.iter().any(|(_, id)| id == event) {
            return false;
        }
        times.push_back((at, event.to_string()));
        times.retain(|(t, _)| *t > start);
        while times.len() > policy.limit as usize {
            times.pop_front();
        }
        if times.len() >= policy.limit as usize {
            seen.remove(&key);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> ProviderId {
        ProviderId::Cluster {
            name: "relay".into(),
        }
    }

    #[test]
    fn the_limit_within_the_window_suppresses_once() {
        let soft = SoftBounces::default();
        let policy = SoftBouncePolicy {
            limit: 3,
            window_hours: 24,
        };
        let t0 = Timestamp::from_second(1_800_000_000).expect("time");
        let hour = SignedDuration::from_hours(1);
        assert!(!soft.count(&provider(), "a@x.org", "e1", t0, &policy));
        assert!(!soft.count(&provider(), "A@x.org", "e2", t0 + hour, &policy));
        assert!(
            !soft.count(&provider(), "a@x.org", "e2", t0 + hour, &policy),
            "a repeat is not counted"
        );
        assert!(soft.count(&provider(), "a@x.org", "e3", t0 + hour * 2, &policy));
        assert!(
            !soft.count(&provider(), "a@x.org", "e4", t0 + hour * 3, &policy),
            "counting starts again"
        );
    }

    #[test]
    fn bounces_outside_the_window_do_not_count() {
        let soft = SoftBounces::default();
        let policy = SoftBouncePolicy {
            limit: 2,
            window_hours: 1,
        };
        let t0 = Timestamp::from_second(1_800_000_000).expect("time");
        assert!(!soft.count(&provider(), "a@x.org", "e1", t0, &policy));
        assert!(!soft.count(
            &provider(),
            "a@x.org",
            "e2",
            t0 + SignedDuration::from_hours(2),
            &policy
        ));
        let off = SoftBouncePolicy {
            limit: 0,
            window_hours: 1,
        };
        assert!(!soft.count(&provider(), "b@x.org", "e1", t0, &off));
    }
}
