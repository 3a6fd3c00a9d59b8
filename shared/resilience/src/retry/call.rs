//! Retries of typed calls: a closure that makes one attempt, run again while the rules allow.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tower::retry::budget::TpsBudget;

use super::policy::{self, Counters, Idempotency, RetryConfig, RetryStats, is_retryable};

/// What one attempt is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// Time left until the caller's deadline; give it to the attempt
    /// (`request.set_timeout(remaining)`) so the server stops when the caller has given up.
    pub remaining: Option<Duration>,
}

/// Runs calls with retries under one shared budget; clones share the budget and counters
/// (make one per backend, not per call: a budget only works across calls).
#[derive(Debug, Clone)]
pub struct Retrier {
    config: Arc<RetryConfig>,
    budget: Option<Arc<TpsBudget>>,
    counters: Arc<Counters>,
}

impl Retrier {
    /// A retrier with `config`.
    ///
    /// # Panics
    /// When the budget settings are outside tower's ranges (ttl 1–60 s, percent 0–1000).
    #[must_use]
    pub fn new(config: RetryConfig) -> Self {
        Self {
            budget: policy::budget(config.budget),
            config: Arc::new(config),
            counters: Arc::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Counters since the retrier was made.
    #[must_use]
    pub fn stats(&self) -> RetryStats {
        self.counters.snapshot()
    }

    /// Runs `attempt` until it succeeds or must not be retried: it failed with something other
    /// than `UNAVAILABLE` (or a breaker rejection), the call is not idempotent, `max_attempts`
    /// were made, the next backoff would pass `deadline`, or the budget is spent. Returns the
    /// last attempt's result.
    ///
    /// Every attempt is a complete unary call, so an `UNAVAILABLE` here came either before any
    /// response or as a trailers-only answer, after which gRPC (A6) still allows a retry; the
    /// "never after response headers" rule cannot be checked at this level and is why the
    /// helper insists on idempotent calls and is not meant for streaming responses.
    ///
    /// # Errors
    /// The last attempt's status; `DEADLINE_EXCEEDED` when the deadline has passed before the
    /// first attempt.
    pub async fn call<T, F, Fut>(
        &self,
        idempotency: Idempotency,
        deadline: Option<Instant>,
        mut attempt: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.start_call();
        let mut rng = fastrand::Rng::new();
        let mut number = 1;
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                return Err(Status::deadline_exceeded(
                    "the deadline passed before the call",
                ));
            }
            let status = match attempt(Attempt { number, remaining }).await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            if idempotency == Idempotency::NotIdempotent || !is_retryable(&status) {
                return Err(status);
            }
            let Some(delay) = self.next_delay(number, deadline, &mut rng) else {
                return Err(status);
            };
            tracing::debug!(
                attempt = number,
                delay_ms = delay.as_millis() as u64,
                code = ?status.code(),
                "retrying"
            );
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }

    /// Counts a new call against the budget.
    pub(crate) fn start_call(&self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        policy::deposit(self.budget.as_deref());
    }

    /// The sleep before retrying after attempt `number` failed retryably, or `None` when no
    /// retry may be made (attempts used up, deadline, budget). A `Some` is counted as a retry.
    pub(crate) fn next_delay(
        &self,
        number: u32,
        deadline: Option<Instant>,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        if number >= self.config.max_attempts {
            return None;
        }
        let delay = self.config.backoff.delay(number, rng);
        if deadline.is_some_and(|d| Instant::now() + delay >= d) {
            self.counters
                .deadline_reached
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if !policy::withdraw(self.budget.as_deref()) {
            self.counters
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        Some(delay)
    }
}
