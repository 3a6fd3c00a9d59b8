//! Resilience for every client a service owns: a [circuit breaker](breaker), [retries](retry)
//! with exponential backoff, full jitter and a retry budget, [timeouts](timeout), and a
//! [balanced channel](balance) over every address of a backend.
//!
//! Order, outermost first: retry → breaker → timeout → transport. The retry sees every
//! attempt's final outcome and stops at a breaker rejection; the breaker records each attempt,
//! timeouts included; the timeout bounds one attempt; the balanced channel is the transport.
//! See [`retry`] for why retries of tonic calls live above the generated client.

#![warn(missing_docs)]

pub mod balance;
pub mod breaker;
pub mod classify;
pub mod retry;
pub mod timeout;

pub use balance::{BalanceConfig, BalancedChannel};
pub use breaker::{Breaker, BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
pub use classify::{Classify, GrpcClassifier, Outcome};
pub use retry::{Idempotency, Retrier, RetryConfig};
pub use timeout::{BoundedTimeout, BoundedTimeoutLayer, Timeout, TimeoutLayer};

/// The error type of the layers: the inner error, or one of ours ([`breaker::Open`],
/// [`timeout::Elapsed`]) to downcast.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
