//! Retries below the tonic client, for requests whose body can be buffered.
//!
//! // why a second retry path: the typed [`Retrier::call`](super::Retrier::call) needs a
//! closure at every call site; a proxy (the gateway) forwards `http::Request`s it cannot
//! rebuild from typed messages. Here the request body is buffered (see `replay`) and the
//! response is inspected at the headers level, which is exactly where gRPC's commit rule
//! lives: a trailers-only `UNAVAILABLE` or an error before any response may be retried; a
//! response with headers is committed and returned as it is, its body never read here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body as GrpcBody;
use tower::{Service, ServiceExt};

use super::Retrier;
use super::policy::Idempotent;
use super::replay::{self, Buffered};
use crate::BoxError;
use crate::breaker::is_breaker_open;

/// Retries idempotent gRPC calls: those carrying the [`Idempotent`] extension or whose path
/// the layer lists. Everything else passes through untouched, unbuffered.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    retrier: Retrier,
    idempotent_methods: Arc<[String]>,
    max_replay_bytes: usize,
}

// ===== impl Retry =====

impl<S> Retry<S> {
    pub(crate) fn new(
        inner: S,
        retrier: Retrier,
        idempotent_methods: Arc<[String]>,
        max_replay_bytes: usize,
    ) -> Self {
        Self {
            inner,
            retrier,
            idempotent_methods,
            max_replay_bytes,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn idempotent<B>(&self, request: &http::Request<B>) -> bool {
        request.extensions().get::<Idempotent>().is_some()
            || self
                .idempotent_methods
                .iter()
                .any(|m| m == request.uri().path())
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> Service<http::Request<GrpcBody>> for Retry<S>
where
    S: Service<http::Request<GrpcBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<GrpcBody>) -> Self::Future {
        if !self.idempotent(&request) {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        }
        // The ready service goes to the future; a clone (not necessarily ready) stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(
            inner,
            self.retrier.clone(),
            self.max_replay_bytes,
            request,
        ))
    }
}

async fn run<S, ResBody>(
    mut inner: S,
    retrier: Retrier,
    limit: usize,
    request: http::Request<GrpcBody>,
) -> Result<http::Response<ResBody>, BoxError>
where
    S: Service<http::Request<GrpcBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    let deadline = grpc_timeout(request.headers()).map(|t| Instant::now() + t);
    let (parts, body) = request.into_parts();
    retrier.start_call();
    let bytes = match replay::buffer(body, limit).await? {
        Buffered::Whole(bytes) => bytes,
        Buffered::Once(body) => {
            let request = http::Request::from_parts(parts, body);
            let ready = inner.ready().await.map_err(Into::into)?;
            return ready.call(request).await.map_err(Into::into);
        }
    };
    let mut rng = fastrand::Rng::new();
    let mut number = 1u32;
    loop {
        let mut request = http::Request::from_parts(parts.clone(), replay::replay(&bytes));
        if number > 1 {
            let headers = request.headers_mut();
            headers.insert("grpc-previous-rpc-attempts", HeaderValue::from(number - 1));
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                headers.insert("grpc-timeout", format_timeout(left));
            }
        }
        let ready = inner.ready().await.map_err(Into::into)?;
        let result = ready.call(request).await.map_err(Into::into);
        if !retryable(&result) {
            return result;
        }
        let Some(delay) = retrier.next_delay(number, deadline, &mut rng) else {
            return result;
        };
        tracing::debug!(
            attempt = number,
            delay_ms = delay.as_millis() as u64,
            path = parts.uri.path(),
            "retrying"
        );
        tokio::time::sleep(delay).await;
        number += 1;
    }
}

/// A trailers-only `UNAVAILABLE`, or an error before any response other than a breaker
/// rejection or a timeout.
fn retryable<B>(result: &Result<http::Response<B>, BoxError>) -> bool {
    match result {
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .is_some_and(|v| Code::from_bytes(v.as_bytes()) == Code::Unavailable),
        Err(e) => {
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            if is_breaker_open(e) {
                return false;
            }
            let mut next = Some(e);
            while let Some(err) = next {
                if let Some(status) = err.downcast_ref::<tonic::Status>() {
                    return status.code() == Code::Unavailable;
                }
                next = err.source();
            }
            // Connect, h2 and I/O errors: no response was received.
            true
        }
    }
}

/// The `grpc-timeout` header (`<digits><unit>`), if present and valid.
pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Milliseconds, at most 8 digits as the spec allows.
fn format_timeout(d: Duration) -> HeaderValue {
    let ms = d.as_millis().min(99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or(HeaderValue::from_static("0m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses_every_unit() {
        let h = |v: &'static str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", HeaderValue::from_static(v));
            grpc_timeout(&m)
        };
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("150m"), Some(Duration::from_millis(150)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5u"), Some(Duration::from_micros(5)));
        assert_eq!(h("x"), None);
        assert_eq!(h("123456789S"), None);
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500m");
    }
}
