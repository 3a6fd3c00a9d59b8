//! Failed-login throttling, per username and per client address.
//!
//! Each key counts failures; once `free` failures are reached, every failure locks the key
//! for `base × 2^(failures − free)` (capped). While locked, attempts are refused before any
//! password is hashed, so a locked-out attacker costs no argon2 work. Counters are forgotten
//! `window` after the last failure; a successful login clears the username's counter (not the
//! address's, so one valid account cannot launder a guessing run from the same address).
//!
//! Per-username lockout lets anyone delay a victim's logins; the delays are short and grow
//! only while failures continue, which is the usual trade-off (OWASP Authentication Cheat
//! Sheet). Counters are per process: replicas each apply the limits.

use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::config::ThrottleConfig;
use crate::error::AuthError;

/// Keys tracked at most per table; the oldest are evicted beyond that.
const MAX_KEYS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
}

/// The throttle tables.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    users: Cache<String, Entry>,
    peers: Cache<String, Entry>,
}

impl Throttle {
    /// Empty tables.
    #[must_use]
    pub fn new(config: ThrottleConfig) -> Self {
        let table = || {
            Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(Duration::from_secs(config.window_secs))
                .build()
        };
        Self {
            users: table(),
            peers: table(),
            config,
        }
    }

    /// Refuses the attempt while the username or the address is locked.
    ///
    /// # Errors
    /// [`AuthError::Throttled`] with the longer of the remaining lock times.
    pub fn check(&self, username: &str, peer: Option<&str>) -> Result<(), AuthError> {
        let now = Instant::now();
        let remaining = |e: Option<Entry>| {
            e.and_then(|e| e.locked_until)
                .and_then(|until| until.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let user = remaining(self.users.get(username));
        let peer = peer.and_then(|p| remaining(self.peers.get(p)));
        match user.max(peer) {
            Some(retry_after) => Err(AuthError::Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt.
    pub fn failure(&self, username: &str, peer: Option<&str>) {
        let now = Instant::now();
        self.bump(
            &self.users,
            username,
            self.config.free_failures_per_user,
            now,
        );
        if let Some(peer) = peer {
            self.bump(&self.peers, peer, self.config.free_failures_per_peer, now);
        }
    }

    /// Clears the username's counter after a successful login.
    pub fn success(&self, username: &str) {
        self.users.invalidate(username);
    }

    fn bump(&self, table: &Cache<String, Entry>, key: &str, free: u32, now: Instant) {
        let base = Duration::from_millis(self.config.base_delay_ms);
        let max = Duration::from_secs(self.config.max_delay_secs);
        table.entry(key.to_owned()).and_upsert_with(|current| {
            let failures = current
                .map_or(0, |e| e.into_value().failures)
                .saturating_add(1);
            let locked_until = (failures >= free).then(|| {
                let exponent = (failures - free).min(30);
                let delay = base.saturating_mul(1u32 << exponent).min(max);
                now + delay
            });
            Entry {
                failures,
                locked_until,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            free_failures_per_user: 3,
            free_failures_per_peer: 5,
            base_delay_ms: 100,
            max_delay_secs: 1,
            window_secs: 60,
        }
    }

    #[test]
    fn user_locks_after_free_failures_and_delays_grow_to_the_cap() {
        let t = Throttle::new(config());
        for _ in 0..2 {
            t.failure("alice", None);
            assert!(t.check("alice", None).is_ok());
        }
        t.failure("alice", None);
        let Err(AuthError::Throttled { retry_after }) = t.check("alice", None) else {
            panic!("third failure must lock");
        };
        assert!(retry_after <= Duration::from_millis(100));
        assert!(t.check("bob", None).is_ok(), "other users are not affected");
        for _ in 0..10 {
            t.failure("alice", None);
        }
        let Err(AuthError::Throttled { retry_after }) = t.check("alice", None) else {
            panic!("still locked");
        };
        assert!(retry_after > Duration::from_millis(500) && retry_after <= Duration::from_secs(1));
        t.success("alice");
        assert!(t.check("alice", None).is_ok());
    }

    #[test]
    fn peers_lock_across_usernames_and_locks_expire() {
        let t = Throttle::new(config());
        for i in 0..5 {
            t.failure(&format!("user{i}"), Some("10.0.0.1"));
        }
        assert!(t.check("someone", Some("10.0.0.1")).is_err());
        assert!(t.check("someone", Some("10.0.0.2")).is_ok());
        std::thread::sleep(Duration::from_millis(120));
        assert!(t.check("someone", Some("10.0.0.1")).is_ok());
    }
}
