//! A client span per outgoing gRPC call, injected as the call's `traceparent`.
//!
//! The span starts as a child of the current span (the server span of the request being
//! handled, when there is one), is named after the method, and ends when the response body
//! ends, with `rpc.grpc.status_code` from the trailers (or the headers of a trailers-only
//! answer). Without export the layer only wraps the body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

/// Adds [`ClientService`]; `peer` names the called component (`peer.service`).
#[derive(Debug, Clone, Copy)]
pub struct ClientLayer {
    peer: &'static str,
}

impl ClientLayer {
    /// Spans of calls to `peer` (e.g. `audit`).
    #[must_use]
    pub const fn new(peer: &'static str) -> Self {
        Self { peer }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientService {
            inner,
            peer: self.peer,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ClientService<S> {
    inner: S,
    peer: &'static str,
}

/// `/pkg.Service/Method` split into its halves (bounded: these are our own calls' paths).
fn split(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("unknown", "unknown"))
}

impl<S, B, R> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<TracedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !super::exporting() {
            let call = self.inner.call(request);
            return Box::pin(async move {
                Ok(call.await?.map(|inner| TracedBody { inner, span: None }))
            });
        }
        let path = request.uri().path();
        let (service, method) = split(path);
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            peer.service = self.peer,
        );
        super::inject(&span, request.headers_mut());
        let call = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    if let Some(code) = status_of(response.headers()) {
                        record(&span, code);
                    }
                    Ok(response.map(|inner| TracedBody {
                        inner,
                        span: Some(span),
                    }))
                }
                Err(error) => {
                    // No answer at all: UNAVAILABLE, as tonic reports a transport failure.
                    record(&span, 14);
                    Err(error)
                }
            }
        })
    }
}

fn status_of(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Records the gRPC code; server-side failures mark the span as an error (OpenTelemetry's
/// gRPC conventions: for clients, every non-OK code).
fn record(span: &Span, code: i64) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

pin_project! {
    /// A response body that ends its call's span when it ends.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
    }
}

impl<B> Body for TracedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(span)) = (frame.trailers_ref(), this.span.take()) {
                    record(&span, status_of(trailers).unwrap_or(0));
                }
            }
            Some(Err(_)) => {
                if let Some(span) = this.span.take() {
                    record(&span, 14);
                }
            }
            None => drop(this.span.take()),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
