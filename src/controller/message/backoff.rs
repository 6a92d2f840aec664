//! Per-message retry delays: exponential with jitter, never shorter than the
//! server's Retry-After. kube-runtime has no per-object backoff of its own, so
//! the attempt number in the message's status drives it.

use std::time::Duration;

/// The delay after the first failed attempt.
pub const BASE: Duration = Duration::from_secs(5);
/// The longest delay between two attempts.
pub const MAX: Duration = Duration::from_secs(300);
/// The longest Retry-After honoured: a server may answer any number, and a
/// wait must stay within what timers and timestamps can hold.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The delay before the attempt after `attempt` (1-based): BASE·2^(attempt-1),
/// capped at MAX, with ±20% jitter so retries of many messages spread out,
/// and never less than `retry_after` (itself capped at MAX_RETRY_AFTER).
pub fn delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let raw = BASE.saturating_mul(1u32 << exponent).min(MAX);
    let jitter = 0.8 + fastrand::f64() * 0.4;
    let jittered = raw.mul_f64(jitter);
    retry_after.map_or(jittered, |r| jittered.max(r.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        for (attempt, nominal) in [(1, 5), (2, 10), (3, 20), (4, 40), (7, 300), (30, 300)] {
            let d = delay(attempt, None).as_secs_f64();
            let n = nominal as f64;
            assert!(
                d >= n * 0.8 && d <= n * 1.2,
                "attempt {attempt}: {d}s not within 20% of {n}s"
            );
        }
    }

    #[test]
    fn never_earlier_than_retry_after() {
        assert!(delay(1, Some(Duration::from_secs(60))) >= Duration::from_secs(60));
    }

    #[test]
    fn a_retry_after_past_any_timer_is_capped() {
        assert_eq!(
            delay(1, Some(Duration::from_secs(u64::MAX))),
            MAX_RETRY_AFTER
        );
    }
}
