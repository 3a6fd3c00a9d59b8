//! How the gateway talks to each backend: balancing, breaker, timeout, retries
//! (`UMCP_UPSTREAM__*`; see the README's configuration table).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_config::check_range;
use umcp_resilience::BalanceConfig;
use umcp_resilience::breaker::BreakerConfig;
use umcp_resilience::retry::{Backoff, BudgetConfig, RetryConfig};

/// Per-backend client settings; every backend gets its own pool, breaker and budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// HTTP/2 connections kept to each resolved backend address (default 2).
    pub connections_per_endpoint: usize,
    /// How often backend host names are resolved again, in ms (default 5000).
    pub resolve_interval_ms: u64,
    /// One attempt's limit until response headers, in ms, further bounded by the caller's
    /// remaining deadline (default 120000: above the longest sandbox run, 60 s wall time plus
    /// 10 s of queueing, so it only ends calls that carry no deadline and hang).
    pub attempt_timeout_ms: u64,
    /// A caller's own deadline shorter than this, in ms, that runs out is not counted against
    /// the backend's breaker (default 1000): one client asking for 5 ms answers must not open
    /// the breaker for everybody, while a backend missing a budget of a second or more is in
    /// trouble. Expiries of longer deadlines, and of the attempt timeout, count.
    pub counted_deadline_min_ms: u64,
    /// Attempts in all for a retryable call, the first included; 1 disables retries
    /// (default 2).
    pub retry_attempts: u32,
    /// Retries may add this percentage of the last 10 s of calls (default 20).
    pub retry_budget_percent: u32,
    /// Plus this many retries per second regardless of traffic (default 10).
    pub retry_min_per_sec: u32,
    /// Calls the breaker's window remembers (default 20).
    pub breaker_window: usize,
    /// Calls in the window before the breaker decides (default 10).
    pub breaker_min_calls: usize,
    /// Failure percentage that opens the breaker (default 50).
    pub breaker_failure_rate: u32,
    /// How long the breaker stays open before probing, in ms (default 5000).
    pub breaker_open_ms: u64,
    /// Probes let through while half-open (default 3).
    pub breaker_half_open_calls: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connections_per_endpoint: 2,
            resolve_interval_ms: 5000,
            attempt_timeout_ms: 120_000,
            counted_deadline_min_ms: 1000,
            retry_attempts: 2,
            retry_budget_percent: 20,
            retry_min_per_sec: 10,
            breaker_window: 20,
            breaker_min_calls: 10,
            breaker_failure_rate: 50,
            breaker_open_ms: 5000,
            breaker_half_open_calls: 3,
        }
    }
}

impl UpstreamConfig {
    /// Every out-of-range value, named by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let key = |k: &str| format!("upstream.{k}");
        [
            check_range(
                &key("connections_per_endpoint"),
                self.connections_per_endpoint,
                1..=64,
            ),
            check_range(
                &key("resolve_interval_ms"),
                self.resolve_interval_ms,
                100..=300_000,
            ),
            check_range(
                &key("attempt_timeout_ms"),
                self.attempt_timeout_ms,
                10..=600_000,
            ),
            check_range(
                &key("counted_deadline_min_ms"),
                self.counted_deadline_min_ms,
                0..=600_000,
            ),
            check_range(&key("retry_attempts"), self.retry_attempts, 1..=5),
            check_range(
                &key("retry_budget_percent"),
                self.retry_budget_percent,
                0..=100,
            ),
            check_range(&key("retry_min_per_sec"), self.retry_min_per_sec, 0..=1000),
            check_range(&key("breaker_window"), self.breaker_window, 1..=1000),
            check_range(
                &key("breaker_min_calls"),
                self.breaker_min_calls,
                1..=self.breaker_window.max(1),
            ),
            check_range(
                &key("breaker_failure_rate"),
                self.breaker_failure_rate,
                1..=100,
            ),
            check_range(&key("breaker_open_ms"), self.breaker_open_ms, 10..=600_000),
            check_range(
                &key("breaker_half_open_calls"),
                self.breaker_half_open_calls,
                1..=100,
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The balanced channel's settings.
    #[must_use]
    pub fn balance(&self) -> BalanceConfig {
        BalanceConfig {
            connections_per_endpoint: self.connections_per_endpoint,
            resolve_interval: Duration::from_millis(self.resolve_interval_ms),
        }
    }

    /// The per-attempt timeout.
    #[must_use]
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.attempt_timeout_ms)
    }

    /// Caller deadlines below this that run out do not count against the breaker.
    #[must_use]
    pub fn counted_deadline_min(&self) -> Duration {
        Duration::from_millis(self.counted_deadline_min_ms)
    }

    /// The retry settings (full-jitter backoff 50 ms doubling to 2 s, under the budget).
    #[must_use]
    pub fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.retry_attempts,
            backoff: Backoff::default(),
            budget: Some(BudgetConfig {
                ttl: Duration::from_secs(10),
                min_per_sec: self.retry_min_per_sec,
                retry_percent: self.retry_budget_percent as f32 / 100.0,
            }),
        }
    }

    /// The breaker settings (slow calls are left to the attempt timeout).
    #[must_use]
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            sliding_window_size: self.breaker_window,
            minimum_number_of_calls: self.breaker_min_calls,
            failure_rate_threshold: f64::from(self.breaker_failure_rate),
            wait_duration_in_open_state: Duration::from_millis(self.breaker_open_ms),
            permitted_number_of_calls_in_half_open_state: self.breaker_half_open_calls,
            ..BreakerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_convert() {
        let c = UpstreamConfig::default();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(c.breaker().check().is_ok());
        assert_eq!(c.balance(), BalanceConfig::default());
        assert_eq!(c.retry().max_attempts, 2);
    }

    #[test]
    fn env_variables_set_the_section_and_bad_values_stop_start_up() {
        use crate::GatewayConfig;
        use umcp_config::{Sources, load};
        let cfg: GatewayConfig = load(&Sources::env([
            ("UMCP_UPSTREAM__CONNECTIONS_PER_ENDPOINT", "4"),
            ("UMCP_UPSTREAM__BREAKER_OPEN_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(cfg.upstream.connections_per_endpoint, 4);
        assert_eq!(cfg.upstream.breaker_open_ms, 250);
        let err = load::<GatewayConfig>(&Sources::env([("UMCP_UPSTREAM__RETRY_ATTEMPTS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("UMCP_UPSTREAM__RETRY_ATTEMPTS"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let c = UpstreamConfig {
            connections_per_endpoint: 0,
            breaker_min_calls: 50,
            retry_attempts: 9,
            ..UpstreamConfig::default()
        };
        let problems = c.problems().join("\n");
        for key in [
            "connections_per_endpoint",
            "breaker_min_calls",
            "retry_attempts",
        ] {
            assert!(problems.contains(key), "{key} missing in {problems}");
        }
    }
}
