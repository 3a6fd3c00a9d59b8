//! The GCRA maths, shared by the Redis script and the in-process limiter.
//!
//! A rule of `limit` calls per `period` spaces calls `T = period / limit` apart and allows a
//! burst of `limit`. The state of a key is one number, its theoretical arrival time (TAT):
//! a call is admitted while `now >= TAT + T·cost − T·burst`, and then moves the TAT by
//! `T·cost`. Everything is in integer microseconds so both implementations agree exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Spacing and burst of one rule, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed per period (also the burst).
    pub limit: u32,
    /// `period_us / limit`: the emission interval.
    pub interval_us: i64,
}

impl Rate {
    /// `limit` calls per `period` (`limit` ≥ 1; the interval is at least 1 µs).
    #[must_use]
    pub fn new(limit: u32, period: Duration) -> Self {
        let limit = limit.max(1);
        let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
        Self {
            limit,
            interval_us: (period_us / i64::from(limit)).max(1),
        }
    }
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The call may go ahead.
    pub allowed: bool,
    /// Calls still allowed right now after this one.
    pub remaining: u64,
    /// When limited: how long until this call would be admitted.
    pub retry_after: Duration,
    /// How long until the key is back to a full burst.
    pub reset_after: Duration,
}

/// One GCRA step: the outcome, and the new TAT to store when admitted.
#[must_use]
pub fn step(now_us: i64, stored_tat: Option<i64>, rate: Rate, cost: u32) -> (Outcome, Option<i64>) {
    let interval = rate.interval_us;
    let tat = stored_tat.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(interval.saturating_mul(i64::from(cost)));
    let allow_at = new_tat.saturating_sub(interval.saturating_mul(i64::from(rate.limit)));
    if now_us < allow_at {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            retry_after: micros(allow_at - now_us),
            reset_after: micros(tat - now_us),
        };
        return (outcome, None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: u64::try_from((now_us - allow_at) / interval).unwrap_or(0),
        retry_after: Duration::ZERO,
        reset_after: micros(new_tat - now_us),
    };
    (outcome, Some(new_tat))
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// The in-process limiter: the same maths over a bounded map of keys. Exact within one
/// process; with several replicas each has its own budget.
#[derive(Debug, Clone)]
pub struct LocalLimiter {
    epoch: Instant,
    keys: Cache<String, Arc<parking_lot::Mutex<i64>>>,
}

impl LocalLimiter {
    /// A limiter holding at most `max_keys` keys, each forgotten `idle` after its last use
    /// (pass the longest period: a key idle that long is back to a full burst anyway).
    #[must_use]
    pub fn new(max_keys: u64, idle: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            keys: Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(idle.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// Checks (and, when admitted, charges) `cost` calls against `key`.
    #[must_use]
    pub fn check(&self, key: &str, rate: Rate, cost: u32) -> Outcome {
        // Microseconds since this limiter started, offset by one so a fresh key (TAT = now)
        // and a stored TAT of zero cannot be confused.
        let now = i64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(i64::MAX - 1) + 1;
        // A fresh key starts at a TAT in the past, i.e. a full burst.
        let cell = self
            .keys
            .get_with_by_ref(key, || Arc::new(parking_lot::Mutex::new(0)));
        let mut tat = cell.lock();
        let stored = (*tat > 0).then_some(*tat);
        let (outcome, new_tat) = step(now, stored, rate, cost);
        if let Some(new_tat) = new_tat {
            *tat = new_tat;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn interval_is_period_over_limit() {
        let rate = Rate::new(10, MINUTE);
        assert_eq!(rate.interval_us, 6_000_000);
        assert_eq!(Rate::new(0, MINUTE).limit, 1);
    }

    #[test]
    fn a_fresh_key_allows_exactly_the_burst() {
        let rate = Rate::new(10, MINUTE);
        let now = 1_000_000_000;
        let mut tat = None;
        for expected_remaining in (0..10).rev() {
            let (outcome, new) = step(now, tat, rate, 1);
            assert!(outcome.allowed);
            assert_eq!(outcome.remaining, expected_remaining);
            tat = new;
        }
        let (outcome, new) = step(now, tat, rate, 1);
        assert!(!outcome.allowed);
        assert_eq!(new, None);
        assert_eq!(outcome.remaining, 0);
        // The next slot opens one interval later; the burst is back after the whole period.
        assert_eq!(outcome.retry_after, Duration::from_secs(6));
        assert_eq!(outcome.reset_after, MINUTE);
    }

    #[test]
    fn one_call_per_interval_is_sustained() {
        let rate = Rate::new(10, MINUTE);
        let mut now = 0;
        let mut tat = None;
        for _ in 0..10 {
            tat = step(now, tat, rate, 1).1;
        }
        for _ in 0..100 {
            assert!(!step(now, tat, rate, 1).0.allowed);
            now += rate.interval_us;
            let (outcome, new) = step(now, tat, rate, 1);
            assert!(outcome.allowed, "one call per interval must pass");
            assert_eq!(outcome.remaining, 0);
            tat = new;
        }
    }

    #[test]
    fn idle_time_refills_but_never_beyond_the_burst() {
        let rate = Rate::new(5, Duration::from_secs(5));
        let mut tat = None;
        for _ in 0..5 {
            tat = step(0, tat, rate, 1).1;
        }
        let later = 3_600_000_000;
        let (outcome, _) = step(later, tat, rate, 1);
        assert!(outcome.allowed);
        assert_eq!(outcome.remaining, 4);
    }

    #[test]
    fn cost_charges_several_slots_and_too_large_a_cost_is_refused() {
        let rate = Rate::new(10, MINUTE);
        let (outcome, tat) = step(0, None, rate, 4);
        assert!(outcome.allowed);
        assert_eq!(outcome.remaining, 6);
        assert!(!step(0, tat, rate, 7).0.allowed);
        assert!(step(0, tat, rate, 6).0.allowed);
        assert!(!step(0, None, rate, 11).0.allowed);
    }

    #[test]
    fn local_limiter_keys_are_independent() {
        let limiter = LocalLimiter::new(1000, MINUTE);
        let rate = Rate::new(3, MINUTE);
        let admitted = (0..10)
            .filter(|_| limiter.check("a", rate, 1).allowed)
            .count();
        assert_eq!(admitted, 3);
        assert!(limiter.check("b", rate, 1).allowed);
        let refused = limiter.check("a", rate, 1);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(19));
        assert!(refused.retry_after <= Duration::from_secs(20));
    }
}
