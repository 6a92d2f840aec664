//! Time arithmetic of the send path: status times are stored to the second,
//! and a retry or a wait must never come earlier than asked.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Now, as a status time.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Time left from `now` until `t`, or `None` if it has passed.
pub fn until(t: &Time, now: jiff::Timestamp) -> Option<Duration> {
    let left = t.0.duration_since(now);
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

/// Time left until `t`, or `None` if it has passed.
pub fn remaining(t: &Time) -> Option<Duration> {
    until(t, jiff::Timestamp::now())
}

/// `from + delay`, rounded up to a whole second: status times are stored to
/// the second, and a retry must never come earlier than the server asked.
/// A delay past the end of representable time (a server may answer any
/// Retry-After) saturates there.
pub fn not_before(from: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    let Ok(due) = from.checked_add(delay) else {
        return jiff::Timestamp::MAX;
    };
    let whole = jiff::Timestamp::from_second(due.as_second()).unwrap_or(due);
    if whole < due {
        whole
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(due)
    } else {
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_attempt_is_rounded_up_to_a_whole_second() {
        let from = jiff::Timestamp::from_millisecond(1_000_300).expect("time");
        let due = not_before(from, Duration::from_secs(7));
        assert_eq!(due.as_millisecond(), 1_008_000);
        let exact = jiff::Timestamp::from_second(1_000).expect("time");
        assert_eq!(not_before(exact, Duration::from_secs(7)).as_second(), 1_007);
    }

    #[test]
    fn a_delay_past_the_end_of_time_saturates_instead_of_panicking() {
        let now = jiff::Timestamp::now();
        assert_eq!(
            not_before(now, Duration::from_secs(u64::MAX)),
            jiff::Timestamp::MAX
        );
        let last = jiff::Timestamp::MAX;
        assert_eq!(not_before(last, Duration::from_millis(1)), last);
    }

    #[test]
    fn a_time_passed_leaves_nothing() {
        let now = jiff::Timestamp::from_second(1_000).expect("time");
        let earlier = Time(jiff::Timestamp::from_second(999).expect("time"));
        let later = Time(jiff::Timestamp::from_second(1_003).expect("time"));
        assert_eq!(until(&earlier, now), None);
        assert_eq!(until(&Time(now), now), None);
        assert_eq!(until(&later, now), Some(Duration::from_secs(3)));
    }
}
