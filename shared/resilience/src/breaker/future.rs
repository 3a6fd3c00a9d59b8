//! The breaker's response future: records the outcome when the inner call completes.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::Open;
use super::state::Permit;
use crate::BoxError;
use crate::classify::Classify;

pin_project! {
    /// Either an immediate rejection or the inner call holding its permit. Dropped before
    /// completion, the permit is released unrecorded.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C, Res> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        classifier: C,
        _response: PhantomData<fn() -> Res>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Call { #[pin] future: F },
        Rejected,
    }
}

impl<F, C, Res> ResponseFuture<F, C, Res> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Call { future },
            permit: Some(permit),
            classifier,
            _response: PhantomData,
        }
    }

    pub(crate) fn rejected(classifier: C) -> Self {
        Self {
            kind: Kind::Rejected,
            permit: None,
            classifier,
            _response: PhantomData,
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res, BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected => Poll::Ready(Err(Box::new(Open))),
            KindProj::Call { future } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(permit) = this.permit.take() {
                    permit.record(this.classifier.classify(&result));
                }
                Poll::Ready(result)
            }
        }
    }
}
