//! Retry settings, the budget, and the one rule of what may be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::{Code, Status};
use tower::retry::budget::{Budget, TpsBudget};

use super::backoff::Backoff;
use crate::breaker::is_breaker_open;

/// Whether a call may run more than once with the same effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat (reads, merges, calls carrying an idempotency key).
    Idempotent,
    /// Never retried: a second run could repeat a side effect.
    NotIdempotent,
}

/// Marks an `http::Request` (or a `tonic::Request`, whose extensions tonic carries over) as
/// safe to retry for the [`RetryLayer`](super::RetryLayer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idempotent;

/// The retry budget: retries may add at most `retry_percent` of the requests of the last
/// `ttl`, plus `min_per_sec` (defaults 20 % + 10/s over 10 s: Finagle's, tower's, Linkerd's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// How long a request counts towards the budget.
    pub ttl: Duration,
    /// Retries allowed per second regardless of traffic.
    pub min_per_sec: u32,
    /// Retries allowed as a fraction of recent requests (0.2 = 20 %).
    pub retry_percent: f32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_percent: 0.2,
        }
    }
}

/// Retry settings (defaults: 3 attempts, 50 ms–2 s full-jitter backoff, the default budget).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
    /// `None`: no budget. Only for comparisons and tests: without a budget every failing call
    /// becomes `max_attempts` calls exactly when the backend can least afford it.
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
            budget: Some(BudgetConfig::default()),
        }
    }
}

/// Counters of a [`Retrier`](super::Retrier), for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Calls made (first attempts).
    pub calls: u64,
    /// Retries made.
    pub retries: u64,
    /// Retries refused by the budget.
    pub budget_exhausted: u64,
    /// Retries not made because the backoff would pass the deadline.
    pub deadline_reached: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
    pub(crate) deadline_reached: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RetryStats {
        RetryStats {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            deadline_reached: self.deadline_reached.load(Ordering::Relaxed),
        }
    }
}

/// Whether a failed attempt may be retried, idempotency aside: only `UNAVAILABLE` (the
/// backend did not process the call, or it was never reached), never a breaker rejection
/// (retrying one only spins against the open breaker).
#[must_use]
pub fn is_retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && !std::error::Error::source(status).is_some_and(is_breaker_open)
}

pub(crate) fn budget(config: Option<BudgetConfig>) -> Option<Arc<TpsBudget>> {
    config.map(|b| Arc::new(TpsBudget::new(b.ttl, b.min_per_sec, b.retry_percent)))
}

/// Deposits for a call; `Budget` is tower's trait.
pub(crate) fn deposit(budget: Option<&TpsBudget>) {
    if let Some(b) = budget {
        b.deposit();
    }
}

pub(crate) fn withdraw(budget: Option<&TpsBudget>) -> bool {
    budget.is_none_or(Budget::withdraw)
}
