//! Exponential backoff with full jitter: the n-th wait is uniform in
//! `[0, min(max, base · 2^n)]`, which spreads the retries of many producers after an audit
//! outage instead of having them all hit the service at the same instants.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next wait, growing the ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let mut bytes = [0u8; 8];
        // Without randomness, fall back to the ceiling (still bounded, just not spread).
        if getrandom::fill(&mut bytes).is_err() {
            return ceiling;
        }
        let fraction = u64::from_le_bytes(bytes) as f64 / u64::MAX as f64;
        ceiling.mul_f64(fraction)
    }

    /// After a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_growing_capped_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for n in 0..10u32 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(n)).min(Duration::from_secs(1));
            assert!(b.next_delay() <= ceiling);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
