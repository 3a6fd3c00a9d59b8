//! The per-attempt timeout bounded by the caller's remaining deadline.
//!
//! // why: a fixed per-attempt timeout longer than what the caller has left keeps a doomed
//! attempt (and its breaker permit) alive after the caller gave up, so the breaker never
//! learns that the backend was too slow. The request's `grpc-timeout` header (which a proxy
//! rewrites to the remaining budget before each attempt) is the caller's deadline; the attempt
//! gets the shorter of the two. Its expiry counts against the backend when the budget was at
//! least the layer's floor (default: always); a caller's own deadline below the floor that
//! runs out is not recorded (see [`Elapsed`]).

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{Elapsed, ResponseFuture};
use crate::BoxError;
use crate::retry::grpc_timeout;

/// A gRPC transport whose calls fail with [`Elapsed`](super::Elapsed) after the shorter of
/// its timeout and the request's `grpc-timeout`.
#[derive(Debug, Clone)]
pub struct BoundedTimeout<S> {
    inner: S,
    timeout: Duration,
    counted_from: Duration,
}

// ===== impl BoundedTimeout =====

impl<S> BoundedTimeout<S> {
    /// Wraps `inner`; each call gets at most `timeout`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            counted_from: Duration::ZERO,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<http::Request<B>> for BoundedTimeout<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (timeout, elapsed) = match grpc_timeout(request.headers()) {
            Some(caller) if caller < self.timeout && caller < self.counted_from => {
                (caller, Elapsed::caller())
            }
            Some(caller) => (caller.min(self.timeout), Elapsed::backend()),
            None => (self.timeout, Elapsed::backend()),
        };
        ResponseFuture::failing_with(
            self.inner.call(request),
            tokio::time::sleep(timeout),
            elapsed,
        )
    }
}

/// Wraps services in a [`BoundedTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct BoundedTimeoutLayer {
    timeout: Duration,
    counted_from: Duration,
}

impl BoundedTimeoutLayer {
    /// A layer whose services give each call at most `timeout`.
    #[must_use]
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            counted_from: Duration::ZERO,
        }
    }

    /// Caller deadlines shorter than `floor` that run out are not counted against the backend
    /// (default zero: every expiry counts).
    #[must_use]
    pub const fn counting_caller_deadlines_from(mut self, floor: Duration) -> Self {
        self.counted_from = floor;
        self
    }
}

impl<S> Layer<S> for BoundedTimeoutLayer {
    type Service = BoundedTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedTimeout {
            inner,
            timeout: self.timeout,
            counted_from: self.counted_from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn slow() -> impl Service<http::Request<()>, Response = (), Error = BoxError> + Clone {
        tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, BoxError>(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_callers_deadline_bounds_the_attempt() {
        let svc = BoundedTimeout::new(slow(), Duration::from_secs(30));
        let request = http::Request::builder()
            .header("grpc-timeout", "200m")
            .body(())
            .unwrap();
        let started = tokio::time::Instant::now();
        let err = svc.clone().oneshot(request).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(
            tonic::Status::from_error(err).code(),
            tonic::Code::DeadlineExceeded
        );
        // Without a header, the layer's own timeout.
        let started = tokio::time::Instant::now();
        let _ = svc.oneshot(http::Request::new(())).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_caller_deadline_does_not_count_against_the_backend() {
        let classifier = crate::GrpcClassifier::new();
        let layer = BoundedTimeoutLayer::new(Duration::from_secs(30))
            .counting_caller_deadlines_from(Duration::from_secs(1));
        let svc = layer.layer(slow());
        let with_deadline = |t: &str| {
            http::Request::builder()
                .header("grpc-timeout", t)
                .body(())
                .unwrap()
        };
        // 200 ms asked for by the caller, below the 1 s floor: ignored by the breaker.
        let err = svc
            .clone()
            .oneshot(with_deadline("200m"))
            .await
            .unwrap_err();
        assert_eq!(classifier.error(err.as_ref()), crate::Outcome::Ignore);
        assert_eq!(
            tonic::Status::from_error(err).code(),
            tonic::Code::DeadlineExceeded
        );
        // 2 s is a budget the backend should meet: a failure.
        let err = svc.clone().oneshot(with_deadline("2S")).await.unwrap_err();
        assert_eq!(classifier.error(err.as_ref()), crate::Outcome::Failure);
        // No deadline: the layer's own timeout, a failure.
        let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
        assert_eq!(classifier.error(err.as_ref()), crate::Outcome::Failure);
    }
}
