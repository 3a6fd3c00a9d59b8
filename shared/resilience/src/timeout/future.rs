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
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Box::new(*this.elapsed))),
            Poll::Pending => Poll::Pending,
        }
    }
}
