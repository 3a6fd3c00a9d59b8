//! A per-attempt timeout whose expiry a tonic client reports as `DEADLINE_EXCEEDED`.
//!
//! // why: tower's `Timeout` fails with `Elapsed`, which tonic turns into `UNKNOWN` (and tonic's
//! own `grpc-timeout` enforcement into `CANCELLED`); neither tells the caller or the breaker
//! that the backend was too slow. This one's error carries a `DEADLINE_EXCEEDED` status in its
//! source chain, which tonic finds, and the gRPC classifier counts as a failure.

mod bounded;
mod error;
mod future;
mod layer;

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use bounded::{BoundedTimeout, BoundedTimeoutLayer};
pub use error::Elapsed;
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;

use crate::BoxError;

/// A service whose calls fail with [`Elapsed`] after `timeout`.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

// ===== impl Timeout =====

impl<S> Timeout<S> {
    /// Wraps `inner`; each call fails with the timeout error after `timeout`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(request), tokio::time::sleep(self.timeout))
    }
}
