//! Per-RPC metrics: count and latency by component, service, method and gRPC code, and calls
//! in flight (`umcp_telemetry::metrics::rpc`).
//!
//! A call ends when its response body ends: the code is the `grpc-status` of the trailers (or
//! of the headers, for a trailers-only answer), so a stream that fails half-way is counted with
//! its real code. A body dropped before its end (the client went away) counts as `CANCELLED`.
//!
//! // why labels come from the catalogue: the path is the caller's input; only methods the
//! catalogue (or the infrastructure services) knows become label values, everything else is
//! `unknown`, so no client can grow the label set without bound.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};
use umcp_proto::catalogue::{Lookup, MethodCatalogue, code_name};
use umcp_telemetry::metrics::{MethodLabels, RpcLabels, rpc};

/// Adds [`MetricsService`]; `component` is the `component` label.
#[derive(Debug, Clone, Copy)]
pub struct MetricsLayer {
    component: &'static str,
}

impl MetricsLayer {
    /// A layer recording under `component`.
    #[must_use]
    pub const fn new(component: &'static str) -> Self {
        Self { component }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            component: self.component,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    component: &'static str,
}

/// The (service, method) labels of `path`, bounded by the catalogue.
pub(crate) fn method_labels(component: &'static str, path: &str) -> MethodLabels {
    let (service, method) = match MethodCatalogue::global().lookup(path) {
        Lookup::Method(m) => (m.service.clone(), m.name.clone()),
        Lookup::Infrastructure => {
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("unknown", "unknown"));
            let method = match method {
                "Check" | "Watch" | "ServerReflectionInfo" => method,
                _ => "unknown",
            };
            (service.to_owned(), method.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    };
    MethodLabels {
        component: component.to_owned(),
        service,
        method,
    }
}

impl<S, B, R> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<MetricsBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let labels = request
            .extensions()
            .get::<MethodLabels>()
            .cloned()
            .unwrap_or_else(|| method_labels(self.component, request.uri().path()));
        rpc().in_flight.get_or_create(&labels).inc();
        ResponseFuture {
            inner: self.inner.call(request),
            call: Some(Call {
                labels,
                started: Instant::now(),
                // The request's span (opened by the correlation layer outside this one).
                span: tracing::Span::current(),
            }),
        }
    }
}

/// One call being measured; recorded exactly once, when it ends or is dropped.
#[derive(Debug)]
struct Call {
    labels: MethodLabels,
    started: Instant,
    /// Kept open until the call ends, so the trace's server span covers the whole response.
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: Code) {
        let elapsed = self.started.elapsed();
        let MethodLabels {
            component,
            service,
            method,
        } = &self.labels;
        self.span.record("rpc.grpc.status_code", code as i32);
        if server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // The request line: the span adds correlation id, trace id and caller. Health checks
        // and reflection (every probe interval, from every client) only at debug.
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let name = code_name(code);
        if service.starts_with("grpc.") {
            tracing::debug!(parent: &self.span, %service, %method, code = name, duration_us, "rpc finished");
        } else {
            tracing::info!(parent: &self.span, %service, %method, code = name, duration_us, "rpc finished");
        }
        let labels = RpcLabels {
            component: component.clone(),
            service: service.clone(),
            method: method.clone(),
            code: code_name(code).to_owned(),
        };
        let metrics = rpc();
        metrics.in_flight.get_or_create(&self.labels).dec();
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// The codes OpenTelemetry's gRPC conventions count as a server's error (the others are the
/// caller's: a bad argument, a missing permission).
fn server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

pin_project! {
    /// The inner service's response future.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // The caller gave up before the response headers.
            if let Some(call) = this.project().call.take() {
                call.finish(Code::Cancelled);
            }
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<MetricsBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let Some(call) = this.call.take() else {
            // Polled after completion: a tower contract violation upstream; nothing to record.
            return Poll::Ready(result.map(|r| {
                r.map(|body| MetricsBody {
                    inner: body,
                    call: None,
                })
            }));
        };
        Poll::Ready(match result {
            Ok(response) => {
                // A trailers-only answer carries its code in the headers: the call ends here
                // for the code, but the body is still timed to its end.
                let early = status_of(response.headers());
                Ok(response.map(|body| MetricsBody {
                    inner: body,
                    call: Some((call, early)),
                }))
            }
            Err(error) => {
                call.finish(Code::Unavailable);
                Err(error)
            }
        })
    }
}

pin_project! {
    /// The response body, recording the call when it ends.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        call: Option<(Call, Option<Code>)>,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((call, early)) = this.project().call.take() {
                call.finish(early.unwrap_or(Code::Cancelled));
            }
        }
    }
}

impl<B> Body for MetricsBody<B>
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
        let ended = match &polled {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_of(trailers).unwrap_or(Code::Ok)),
            Some(Err(_)) => Some(Code::Unavailable),
            None => Some(Code::Ok),
        };
        if let Some(code) = ended
            && let Some((call, early)) = this.call.take()
        {
            call.finish(early.unwrap_or(code));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_by_the_catalogue() {
        let known = method_labels("graph", "/umcp.graph.v1.GraphService/Query");
        assert_eq!(
            (known.service.as_str(), known.method.as_str()),
            ("umcp.graph.v1.GraphService", "Query")
        );
        let health = method_labels("graph", "/grpc.health.v1.Health/Check");
        assert_eq!(health.method, "Check");
        for hostile in [
            "/umcp.graph.v1.GraphService/Nope",
            "/random.Service/X",
            "/grpc.health.v1.Health/aaaaaaaaaaaa",
            "not a path",
        ] {
            let l = method_labels("graph", hostile);
            assert!(
                l.method == "unknown" && (l.service == "unknown" || l.service.starts_with("grpc.")),
                "{hostile}: {l:?}"
            );
        }
    }
}
