//! Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff and
//! Jitter"): retry `n` sleeps `U(0, min(cap, base · 2^(n-1)))`.
//!
//! // why full jitter: clients that failed together must not retry together. Full jitter
//! spreads them over the whole interval and does the least total work of the published
//! variants; tower's `ExponentialBackoff` adds a bounded jitter on top of the exponential delay
//! instead, which keeps retry waves synchronised.

use std::time::Duration;

/// Backoff settings (defaults: base 50 ms, cap 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry waits up to this long; each later one up to twice the previous bound.
    pub base: Duration,
    /// No wait is ever longer.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The upper bound of the sleep before retry `retry` (1 = the first retry).
    #[must_use]
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(30);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random sleep before retry `retry`, uniform in `[0, ceiling]`.
    #[must_use]
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.u64(0..=ceiling))
    }
}

/// The running delays of a loop that retries until it succeeds (a spool replaying to a
/// service that is down): each [`Attempts::next_delay`] draws from a ceiling one step higher,
/// [`Attempts::reset`] starts over after a success.
#[derive(Debug, Clone)]
pub struct Attempts {
    backoff: Backoff,
    retry: u32,
    rng: fastrand::Rng,
}

impl Attempts {
    /// A fresh sequence over `backoff`.
    #[must_use]
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            retry: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The next wait, growing the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        self.retry = self.retry.saturating_add(1);
        self.backoff.delay(self.retry, &mut self.rng)
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.retry = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_delays_stay_below() {
        let b = Backoff::default();
        let ms = |n| b.ceiling(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(6), ms(7), ms(40)],
            [50, 100, 200, 1600, 2000, 2000]
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(200)));
        // Full jitter uses the whole interval, not just its top.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(20)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(180)));
    }

    #[test]
    fn attempts_grow_then_reset() {
        let mut a = Attempts::new(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        });
        for n in 0..10u32 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(n)).min(Duration::from_secs(1));
            assert!(a.next_delay() <= ceiling);
        }
        a.reset();
        assert!(a.next_delay() <= Duration::from_millis(100));
    }
}
