//! The timeout's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::error::Elapsed;
use crate::BoxError;

pin_project! {
    /// The inner call raced against a sleep.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        response: F,
        #[pin]
        sleep: Sleep,
        elapsed: Elapsed,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(response: F, sleep: Sleep) -> Self {
        Self::failing_with(response, sleep, Elapsed::backend())
    }

    /// Fails with `elapsed` when `sleep` ends first.
    pub(crate) fn failing_with(response: F, sleep: Sleep, elapsed: Elapsed) -> Self {
        Self {
            response,
            sleep,
            elapsed,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.response.poll(cx) {
            // why: a tonic channel enforces the same `grpc-timeout` itself and may fire a hair
            // before our sleep; its `TimeoutExpired` is this expiry, so it gets this layer's
            // verdict (a caller's short deadline is not the backend's failure).
            return Poll::Ready(result.map_err(|e| {
                let e: BoxError = e.into();
                if is_channel_timeout(e.as_ref()) {
                    Box::new(*this.elapsed)
                } else {
                    e
                }
            }));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Box::new(*this.elapsed))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn is_channel_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = e.source();
    }
    false
}
