//! Circuit breaker with resilience4j's semantics (COUNT_BASED window).
//!
//! // why: a backend that is down should cost its callers nothing: no connect timeout per
//! call, no queue of doomed requests, no load on a backend trying to recover. After enough
//! failures in the window the breaker opens and rejects at once ([`Open`], which a tonic
//! client sees as `UNAVAILABLE`); after a wait it lets a fixed number of probes through and
//! their outcomes alone decide whether it closes again. Only infrastructure failures count
//! (see [`crate::classify`]).
//!
//! Place it outside the per-attempt timeout (so timeouts count as failures) and inside the
//! retry (so every attempt is recorded and a rejection ends the retries). A call's duration,
//! for the slow-call rate, runs from the permit to the response headers (under a tonic client:
//! the whole unary call but not a streaming body).

mod error;
mod future;
mod layer;
mod state;

use std::task::{Context, Poll};

use tower::Service;

pub use error::{Open, is_breaker_open};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use state::{Breaker, BreakerConfig, BreakerMetrics, Permit, State};

use crate::BoxError;
use crate::classify::Classify;

/// A service behind a breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Breaker,
    classifier: C,
}

// ===== impl CircuitBreaker =====

impl<S, C> CircuitBreaker<S, C> {
    /// `inner` behind `breaker`, outcomes decided by `classifier`.
    pub const fn new(inner: S, breaker: Breaker, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
        }
    }

    /// The shared breaker (for metrics).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(Open) => ResponseFuture::rejected(self.classifier.clone()),
        }
    }
}
