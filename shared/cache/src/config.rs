//! `UMCP_CACHE__*`: how much to cache, for how long, and how stale a replica may be.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_config::check_range;

/// Settings of one [`TwoTier`](crate::TwoTier) cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether to cache at all (`UMCP_CACHE__ENABLED`, default true); off, every read loads.
    pub enabled: bool,
    /// Bytes the L1 of one process may hold, keys and values (`UMCP_CACHE__MAX_BYTES`,
    /// 1024..=2^40, default 64 MiB); least valuable entries are evicted past it.
    pub max_bytes: u64,
    /// Lifetime of a cached answer, in ms, in L1 and L2 (`UMCP_CACHE__TTL_MS`, 10..=86400000,
    /// default 60000). Writes invalidate earlier; the TTL only bounds memory.
    pub ttl_ms: u64,
    /// Lifetime of a cached "missing" answer, in ms (`UMCP_CACHE__NEGATIVE_TTL_MS`,
    /// 1..=ttl_ms, default 5000).
    pub negative_ttl_ms: u64,
    /// Lifetime of L1 entries while a configured Redis is not answering, in ms
    /// (`UMCP_CACHE__DEGRADED_TTL_MS`, 1..=ttl_ms, default 1000): replicas cannot tell each
    /// other about writes then, so their answers age out quickly.
    pub degraded_ttl_ms: u64,
    /// Longest time after an acknowledged write that any replica may still answer from its
    /// L1 with the old value, in ms (`UMCP_CACHE__MAX_STALENESS_MS`, 10..=60000, default 50).
    /// A replica that has not confirmed its generation within it serves only entries younger
    /// than it.
    pub max_staleness_ms: u64,
    /// How often each replica re-reads the generation from Redis, in ms, in case a pub/sub
    /// message was lost (`UMCP_CACHE__GENERATION_POLL_MS`, 1..=max_staleness_ms/2, default 25).
    pub generation_poll_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 * 1024 * 1024,
            ttl_ms: 60_000,
            negative_ttl_ms: 5_000,
            degraded_ttl_ms: 1_000,
            max_staleness_ms: 50,
            generation_poll_ms: 25,
        }
    }
}

impl CacheConfig {
    /// Every problem with the settings (empty when valid).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(check_range(
            "cache.max_bytes",
            self.max_bytes,
            1024..=1 << 40,
        ));
        problems.extend(check_range("cache.ttl_ms", self.ttl_ms, 10..=86_400_000));
        problems.extend(check_range(
            "cache.negative_ttl_ms",
            self.negative_ttl_ms,
            1..=self.ttl_ms.max(1),
        ));
        problems.extend(check_range(
            "cache.degraded_ttl_ms",
            self.degraded_ttl_ms,
            1..=self.ttl_ms.max(1),
        ));
        problems.extend(check_range(
            "cache.max_staleness_ms",
            self.max_staleness_ms,
            10..=60_000,
        ));
        problems.extend(check_range(
            "cache.generation_poll_ms",
            self.generation_poll_ms,
            1..=(self.max_staleness_ms / 2).max(1),
        ));
        problems
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    pub(crate) fn negative_ttl(&self) -> Duration {
        Duration::from_millis(self.negative_ttl_ms)
    }

    pub(crate) fn degraded_ttl(&self) -> Duration {
        Duration::from_millis(self.degraded_ttl_ms)
    }

    pub(crate) fn max_staleness(&self) -> Duration {
        Duration::from_millis(self.max_staleness_ms)
    }

    pub(crate) fn generation_poll(&self) -> Duration {
        Duration::from_millis(self.generation_poll_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_variable() {
        assert!(CacheConfig::default().problems().is_empty());
        let bad = CacheConfig {
            negative_ttl_ms: 120_000,
            generation_poll_ms: 40,
            ..CacheConfig::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("UMCP_CACHE__NEGATIVE_TTL_MS"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("UMCP_CACHE__GENERATION_POLL_MS"),
            "{problems:?}"
        );
    }
}
