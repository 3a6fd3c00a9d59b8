//! `x-correlation-id`: accepted when valid, created (UUIDv7) when absent or invalid, put in the
//! request extensions and headers (so it is forwarded), returned in the response headers, and
//! recorded on a tracing span that wraps the whole request, so every log line carries it.
//!
//! The same span is the call's server span in a distributed trace: the child of the caller's
//! `traceparent`, named after the method, with OpenTelemetry's gRPC attributes (`rpc.system`,
//! `rpc.service`, `rpc.method`; `rpc.grpc.status_code` is recorded when the call ends, by
//! [`crate::metrics`]) and the `trace_id` for log lines.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

/// Header (gRPC metadata key) of the correlation id.
pub const HEADER: &str = "x-correlation-id";

/// Longest accepted correlation id.
pub const MAX_LEN: usize = 128;

/// A validated correlation id: 1–128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// Accepts `raw` when it follows the rule; `None` otherwise.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| Self(raw.to_owned()))
    }

    /// A new UUIDv7 id (time-ordered, so ids sort by creation).
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of a request: its valid header value, else a fresh one.
    #[must_use]
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }

    fn header_value(&self) -> HeaderValue {
        // The rule admits only visible ASCII, which is always a valid header value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Layer adding [`CorrelationService`]; `component` names the process in the span.
#[derive(Debug, Clone, Copy)]
pub struct CorrelationLayer {
    component: &'static str,
}

impl CorrelationLayer {
    /// A layer whose spans are named after `component` (e.g. `graph`).
    #[must_use]
    pub const fn new(component: &'static str) -> Self {
        Self { component }
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = CorrelationService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorrelationService {
            inner,
            component: self.component,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct CorrelationService<S> {
    inner: S,
    component: &'static str,
}

impl<S, B, R> Service<Request<B>> for CorrelationService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = CorrelationId::from_headers(request.headers());
        let value = id.header_value();
        request.headers_mut().insert(HEADER, value.clone());
        // Bounded by the catalogue (the path is the caller's input), shared with the metrics.
        let labels = crate::metrics::method_labels(self.component, request.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{}/{}", labels.service, labels.method),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %labels.service,
            rpc.method = %labels.method,
            rpc.grpc.status_code = tracing::field::Empty,
            component = self.component,
            method = %request.uri().path(),
            correlation_id = %id,
            trace_id = tracing::field::Empty,
            user_id = tracing::field::Empty,
        );
        umcp_telemetry::trace::server_span(&span, request.headers_mut());
        request.extensions_mut().insert(id);
        request.extensions_mut().insert(labels);
        // The clone that was driven to readiness is the one we call; a fresh clone takes its
        // place (tower's "be careful when cloning inner services").
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let mut response = inner.call(request).await?;
                response.headers_mut().insert(HEADER, value);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_safe_ids_and_rejects_the_rest() {
        for ok in [
            "a",
            "req-1",
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "svc:1.2_x",
        ] {
            assert!(CorrelationId::parse(ok).is_some(), "{ok}");
        }
        let long = "x".repeat(MAX_LEN + 1);
        for bad in ["", "a b", "a\nb", "ü", "a/b", "<script>", long.as_str()] {
            assert!(CorrelationId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(CorrelationId::parse(&"x".repeat(MAX_LEN)).is_some());
    }

    #[test]
    fn invalid_or_missing_header_gets_a_fresh_uuid_v7() {
        let mut headers = http::HeaderMap::new();
        let fresh = CorrelationId::from_headers(&headers);
        assert_eq!(
            uuid::Uuid::parse_str(fresh.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
        headers.insert(HEADER, HeaderValue::from_static("bad id"));
        assert_ne!(CorrelationId::from_headers(&headers).as_str(), "bad id");
        headers.insert(HEADER, HeaderValue::from_static("good-id"));
        assert_eq!(CorrelationId::from_headers(&headers).as_str(), "good-id");
    }
}
