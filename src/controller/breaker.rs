//! Circuit breakers, one per provider, shared by every message: after
//! `--breaker-failures` sends in a row failed for the provider's own reason
//! (see `message::failover`), or at once after a failure that takes the
//! provider's transport out of service (connection, TLS, credentials), the
//! breaker opens, and EmailRoutes pass the provider over for the cool-down;
//! then one message probes it (half-open): a success closes the breaker, a
//! failure opens it again for twice as long. The state lives in memory and,
//! while open, in the provider's status (`status.breaker`, condition
//! `Degraded`), so a new leader honours it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::ProviderId;
use crate::api::provider::BreakerStatus;

/// How long one message holds the half-open probe before another may take
/// it (a probe that never sends: the message waited for a slot instead).
const PROBE_LEASE: Duration = Duration::from_secs(15);
/// The most cool-downs a failed probe doubles to: 16 times the setting.
const MAX_DOUBLINGS: u32 = 4;
/// The most providers remembered with failures; beyond it the closed ones
/// are forgotten first (their counts restart at zero).
const MAX_TRACKED: usize = 10_000;

/// Whether a provider may take a message now, as a route asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: sends go through.
    Closed,
    /// Half-open, and this message is the one probe.
    Probe,
    /// Open (or half-open with the probe taken) until then.
    Open {
        /// When to ask again.
        until: Timestamp,
    },
}

/// A change of a breaker, to publish (status, Event, metric).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// It opened (again, after a failed probe).
    Opened(BreakerStatus),
    /// It closed.
    Closed,
}

#[derive(Debug, Clone, Default)]
struct Breaker {
    /// Sends in a row that failed for the provider's own reason.
    failures: u32,
    /// Set while open or half-open.
    open: Option<BreakerStatus>,
    /// The message holding the half-open probe, and since when.
    probe: Option<(String, Timestamp)>,
    /// Whether the persisted state was read already.
    seeded: bool,
}

/// Every provider's breaker.
pub struct Breakers {
    inner: Mutex<HashMap<ProviderId, Breaker>>,
    threshold: u32,
    cooldown: Duration,
}

impl Breakers {
    /// Breakers that open after `threshold` failures in a row for
    /// `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether `provider` may take message `who` at `now`; `persisted` is
    /// its `status.breaker` as the cache holds it (read once, after a
    /// restart or a leader change). Hands out the half-open probe, and
    /// gives it again to the message that holds it.
    pub fn admit(
        &self,
        provider: &ProviderId,
        persisted: Option<&BreakerStatus>,
        now: Timestamp,
        who: &str,
    ) -> Admission {
        let mut map = self.lock();
        let Some(breaker) = map.get_mut(provider) else {
            let Some(persisted) = persisted else {
                return Admission::Closed;
            };
            let seeded = Breaker {
                failures: persisted.failures,
                open: Some(persisted.clone()),
                probe: None,
                seeded: true,
            };
            map.insert(provider.clone(), seeded);
            drop(map);
            return self.admit(provider, None, now, who);
        };
        if !breaker.seeded {
            breaker.seeded = true;
            if breaker.open.is_none()
                && let Some(persisted) = persisted
            {
                breaker.open = Some(persisted.clone());
            }
        }
        let Some(open) = &breaker.open else {
            return Admission::Closed;
        };
        if now < open.open_until.0 {
            return Admission::Open {
                until: open.open_until.0,
            };
        }
        match &breaker.probe {
            Some((holder, _)) if holder == who => Admission::Probe,
            Some((_, taken)) if now < plus(*taken, PROBE_LEASE) => Admission::Open {
                until: plus(*taken, PROBE_LEASE),
            },
            _ => {
                breaker.probe = Some((who.to_string(), now));
                Admission::Probe
            }
        }
    }

    /// A send through `provider` went through, or the server answered about
    /// the message itself (it is up): the count restarts, and an open
    /// breaker closes.
    pub fn succeeded(&self, provider: &ProviderId) -> Option<Change> {
        let mut map = self.lock();
        let breaker = map.get_mut(provider)?;
        // Kept, closed and seeded, so the status copy that still says open
        // (until the write reaches the cache) is not read back.
        breaker.failures = 0;
        breaker.probe = None;
        breaker.seeded = true;
        breaker.open.take().is_some().then_some(Change::Closed)
    }

    /// A send through `provider` failed for the provider's own reason at
    /// `now`. Opens the breaker at the threshold (at once when `at_once`: a
    /// failure that took the provider's transport out of service), and
    /// again when the probe fails.
    pub fn failed(&self, provider: &ProviderId, now: Timestamp, at_once: bool) -> Option<Change> {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(provider) {
            map.retain(|_, b| b.open.is_some());
            if map.len() >= MAX_TRACKED {
                return None;
            }
        }
        let breaker = map.entry(provider.clone()).or_default();
        breaker.failures = breaker.failures.saturating_add(1);
        match &breaker.open {
            // A send claimed before the breaker opened: nothing new.
            Some(open) if now < open.open_until.0 => None,
            Some(open) => {
                let failed_probes = open.failed_probes.saturating_add(1);
                let doubled = self.cooldown * 2u32.pow(failed_probes.min(MAX_DOUBLINGS));
                let status = BreakerStatus {
                    opened_at: open.opened_at.clone(),
                    open_until: Time(plus(now, doubled)),
                    failures: breaker.failures,
                    failed_probes,
                };
                breaker.open = Some(status.clone());
                breaker.probe = None;
                Some(Change::Opened(status))
            }
            None if at_once || breaker.failures >= self.threshold => {
                let status = BreakerStatus {
                    opened_at: Time(now),
                    open_until: Time(plus(now, self.cooldown)),
                    failures: breaker.failures,
                    failed_probes: 0,
                };
                breaker.open = Some(status.clone());
                breaker.probe = None;
                Some(Change::Opened(status))
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProviderId, Breaker>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn plus(at: Timestamp, by: Duration) -> Timestamp {
    SignedDuration::try_from(by)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProviderId {
        ProviderId::Namespaced {
            namespace: "team".into(),
            name: "primary".into(),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    #[test]
    fn it_opens_after_the_threshold_probes_once_and_closes_on_success() {
        let breakers = Breakers::new(3, Duration::from_secs(30));
        assert_eq!(breakers.failed(&id(), at(0), false), None);
        assert_eq!(breakers.failed(&id(), at(1), false), None);
        assert_eq!(breakers.admit(&id(), None, at(1), "m"), Admission::Closed);
        let Some(Change::Opened(open)) = breakers.failed(&id(), at(2), false) else {
            panic!("the third failure opens it");
        };
        assert_eq!(open.open_until.0, at(32));
        assert_eq!(
            breakers.admit(&id(), None, at(10), "m"),
            Admission::Open { until: at(32) }
        );
        // Half-open: one probe, the others wait for it; the message that
        // holds it gets it again when it comes back.
        assert_eq!(breakers.admit(&id(), None, at(33), "m"), Admission::Probe);
        assert!(matches!(
            breakers.admit(&id(), None, at(34), "other"),
            Admission::Open { .. }
        ));
        assert_eq!(breakers.admit(&id(), None, at(35), "m"), Admission::Probe);
        assert_eq!(breakers.succeeded(&id()), Some(Change::Closed));
        assert_eq!(breakers.admit(&id(), None, at(35), "m"), Admission::Closed);
        // Closed again, the count starts over.
        assert_eq!(breakers.failed(&id(), at(36), false), None);
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long() {
        let breakers = Breakers::new(1, Duration::from_secs(30));
        assert!(matches!(
            breakers.failed(&id(), at(0), false),
            Some(Change::Opened(_))
        ));
        // A send claimed before it opened fails meanwhile: nothing new.
        assert_eq!(breakers.failed(&id(), at(5), false), None);
        assert_eq!(breakers.admit(&id(), None, at(31), "m"), Admission::Probe);
        let Some(Change::Opened(again)) = breakers.failed(&id(), at(31), false) else {
            panic!("a failed probe opens it again");
        };
        assert_eq!(again.open_until.0, at(91));
        assert_eq!(again.failed_probes, 1);
        assert_eq!(again.opened_at.0, at(0));
    }

    #[test]
    fn a_new_leader_honours_the_persisted_state() {
        let persisted = BreakerStatus {
            opened_at: Time(at(0)),
            open_until: Time(at(30)),
            failures: 5,
            failed_probes: 0,
        };
        let breakers = Breakers::new(5, Duration::from_secs(30));
        assert_eq!(
            breakers.admit(&id(), Some(&persisted), at(1), "m"),
            Admission::Open { until: at(30) }
        );
        assert_eq!(
            breakers.admit(&id(), Some(&persisted), at(31), "m"),
            Admission::Probe
        );
        assert_eq!(breakers.succeeded(&id()), Some(Change::Closed));
        // Closed here: the cache's copy that still says open (until the
        // status write reaches it) is not read back.
        assert_eq!(
            breakers.admit(&id(), Some(&persisted), at(32), "m"),
            Admission::Closed
        );
    }

    #[test]
    fn a_failure_that_takes_the_provider_out_opens_it_at_once() {
        let breakers = Breakers::new(5, Duration::from_secs(30));
        let Some(Change::Opened(open)) = breakers.failed(&id(), at(0), true) else {
            panic!("it opens at once");
        };
        assert_eq!((open.failures, open.open_until.0), (1, at(30)));
    }

    #[test]
    fn a_success_on_a_closed_breaker_changes_nothing() {
        let breakers = Breakers::new(2, Duration::from_secs(30));
        assert_eq!(breakers.succeeded(&id()), None);
        assert_eq!(breakers.failed(&id(), at(0), false), None);
        assert_eq!(breakers.succeeded(&id()), None);
        assert_eq!(breakers.failed(&id(), at(1), false), None);
    }
}
