//! How long a send takes to be answered, as a real service's does: a
//! log-normal spread fitted to a median and a 99th percentile (request
//! times of HTTP services are skewed so, a long tail over a steady middle).

use std::time::Duration;

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874;

/// A log-normal answer time, given by its median and 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Half of the answers come sooner than this.
    pub p50: Duration,
    /// 99 in 100 answers come sooner than this.
    pub p99: Duration,
}

impl Latency {
    /// A median and a 99th percentile; `p99` below `p50` is taken as `p50`.
    pub fn new(p50: Duration, p99: Duration) -> Self {
        Self {
            p50,
            p99: p99.max(p50),
        }
    }

    /// One answer time drawn from the distribution.
    pub fn sample(&self) -> Duration {
        let median = self.p50.as_secs_f64();
        if median <= 0.0 {
            return Duration::ZERO;
        }
        let sigma = (self.p99.as_secs_f64() / median).ln() / Z99;
        Duration::from_secs_f64(median * (sigma * standard_normal()).exp())
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal() -> f64 {
    let u1 = fastrand::f64().max(f64::MIN_POSITIVE);
    let u2 = fastrand::f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_match_the_median_and_the_99th_percentile() {
        let latency = Latency::new(Duration::from_millis(150), Duration::from_millis(600));
        let mut draws: Vec<f64> = (0..200_000)
            .map(|_| latency.sample().as_secs_f64() * 1000.0)
            .collect();
        draws.sort_by(f64::total_cmp);
        let at = |q: f64| draws[((draws.len() as f64) * q) as usize];
        assert!((at(0.50) - 150.0).abs() < 5.0, "p50 {}", at(0.50));
        assert!((at(0.99) - 600.0).abs() < 30.0, "p99 {}", at(0.99));
    }

    #[test]
    fn no_latency_answers_at_once() {
        assert_eq!(
            Latency::new(Duration::ZERO, Duration::ZERO).sample(),
            Duration::ZERO
        );
    }
}
