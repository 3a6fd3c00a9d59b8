//! The gateway's one tower service: local services or transparent forwarding.
//!
//! Messages are never decoded: the HTTP/2 request (headers, streamed body, trailers) goes to the
//! backend's client stack (`upstream`: retry → breaker → attempt timeout → balanced
//! connections) as it came, so unary and streaming calls pass through unchanged. Only the
//! `grpc-timeout` header is rewritten, to the budget that remains.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tower::{Service, ServiceExt};
use umcp_authz::forwarded::{FORWARDED_FOR, FORWARDER};
use umcp_authz::remote::TokenProvider;
use umcp_rpc::{deadline, framing};

use umcp_resilience::breaker::is_breaker_open;
use umcp_resilience::timeout::Elapsed;

use crate::routes::{Backend, Route, RouteTable};
use crate::upstream::{Upstream, retry_safe};

/// Routes each request to the gateway's own services or a backend.
#[derive(Debug, Clone)]
pub(crate) struct GatewayService {
    table: Arc<RouteTable>,
    local: Routes,
    /// The gateway's own credentials, vouching for the client address it forwards.
    forwarder: Option<Arc<dyn TokenProvider>>,
}

impl GatewayService {
    pub(crate) fn new(
        table: Arc<RouteTable>,
        local: Routes,
        forwarder: Option<Arc<dyn TokenProvider>>,
    ) -> Self {
        Self {
            table,
            local,
            forwarder,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl Service<Request<Body>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked per call on the chosen target (`oneshot`), not here: one slow
        // backend must not stall requests for the others.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let received = Instant::now();
        if !framing::is_grpc(request.headers()) {
            // Refused here, before any backend or token work (HTTP 415, INVALID_ARGUMENT).
            let response = framing::not_grpc(request.headers());
            return Box::pin(async move { Ok(response) });
        }
        // Decide before moving the request: only owned data leaves the borrow of its path.
        let decision = match self.table.route(request.uri().path()) {
            Route::Local => Decision::Local(self.local.clone()),
            Route::Backend(backend) => Decision::Backend(self.table.index_of(backend)),
            Route::UnknownMethod { service, method } => Decision::Reject(Status::unimplemented(
                format!("method `{method}` does not exist in service `{service}`"),
            )),
            Route::UnknownService(service) => Decision::Reject(Status::unimplemented(format!(
                "service `{service}` does not exist; served here: {}",
                self.table
                    .backends()
                    .iter()
                    .map(|b| b.service)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Route::Malformed => Decision::Reject(Status::unimplemented(format!(
                "`{}` is not a gRPC method path (expected /package.Service/Method)",
                request.uri().path()
            ))),
        };
        let table = Arc::clone(&self.table);
        let forwarder = self.forwarder.clone();
        Box::pin(async move {
            let response = match decision {
                Decision::Local(local) => match local.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Decision::Backend(index) => {
                    let backend = &table.backends()[index];
                    forward(backend, request, forwarder.as_deref(), received).await
                }
                Decision::Reject(rejection) => status(rejection),
            };
            Ok(response)
        })
    }
}

/// What to do with a request, decided synchronously in `call`.
enum Decision {
    Local(Routes),
    Backend(usize),
    Reject(Status),
}

/// Forwards one call, honouring and forwarding its deadline.
async fn forward(
    backend: &Backend,
    mut request: Request<Body>,
    forwarder: Option<&dyn TokenProvider>,
    received: Instant,
) -> Response<Body> {
    let Some(upstream) = &backend.upstream else {
        return status(Status::unavailable(format!(
            "service `{}` is not enabled on this gateway (backends.{} is empty)",
            backend.service, backend.name
        )));
    };
    // The backend sees the real client address (auth throttles failed logins per address);
    // a client-supplied value is replaced, never trusted.
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    match peer.and_then(|addr| http::HeaderValue::from_str(&addr.ip().to_string()).ok()) {
        Some(value) => request.headers_mut().insert(FORWARDED_FOR, value),
        None => request.headers_mut().remove(FORWARDED_FOR),
    };
    vouch(request.headers_mut(), forwarder).await;
    let deadline = match deadline::from_headers(request.headers(), received) {
        Ok(deadline) => deadline,
        Err(raw) => {
            return status(Status::invalid_argument(format!(
                "grpc-timeout `{raw}` is malformed: expected 1-8 digits and a unit (H, M, S, m, u, n)"
            )));
        }
    };
    if let Some(deadline) = deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return status(deadline_exceeded(backend));
        }
        request
            .headers_mut()
            .insert(deadline::HEADER, deadline::encode(remaining));
    }
    let retryable = retry_safe(request.uri().path(), request.headers());
    let call = upstream.call(request, retryable);
    let result = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(result) => result,
            Err(_elapsed) => return status(deadline_exceeded(backend)),
        },
        None => call.await,
    };
    match result {
        Ok(response) => response,
        Err(error) => status(failure(backend, upstream, error.as_ref())),
    }
}

/// The status for a call that got no response: refused by the open breaker (no log line: one
/// per refused call would flood the log; the breaker logs its transitions), timed out, or
/// failed in transport.
fn failure(
    backend: &Backend,
    upstream: &Upstream,
    error: &(dyn std::error::Error + 'static),
) -> Status {
    if is_breaker_open(error) {
        let after = upstream.breaker().retry_after().map_or_else(
            || "a moment".to_owned(),
            |d| format!("{} ms", d.as_millis()),
        );
        return Status::unavailable(format!(
            "service `{}` is unavailable: circuit breaker open for backend `{}`; retry after {after}",
            backend.service, backend.name
        ));
    }
    if is_caused_by::<Elapsed>(error) {
        return Status::deadline_exceeded(format!(
            "deadline exceeded before `{}` answered (backend `{}`: the caller's deadline or the attempt timeout)",
            backend.service, backend.name
        ));
    }
    tracing::warn!(backend = backend.name, error = %error_chain(error), "backend call failed");
    Status::unavailable(format!(
        "service `{}` is unavailable: the `{}` backend cannot be reached; retry later",
        backend.service, backend.name
    ))
}

fn is_caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Adds the gateway's own token in `x-umcp-forwarder`, so the backend believes the client
/// address in `x-forwarded-for` (a client-sent forwarder header never passes: the auth layer in
/// front of this service removed it). Without a token the backend sees the gateway's address.
async fn vouch(headers: &mut http::HeaderMap, forwarder: Option<&dyn TokenProvider>) {
    let Some(provider) = forwarder else { return };
    match provider.token().await {
        Ok(token) => match http::HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.insert(FORWARDER, value);
            }
            Err(_) => tracing::warn!(
                "gateway token is not a header value; client address not vouched for"
            ),
        },
        Err(status) => tracing::warn!(
            code = ?status.code(),
            "no gateway token; backends see the gateway's address instead of the client's"
        ),
    }
}

fn deadline_exceeded(backend: &Backend) -> Status {
    Status::deadline_exceeded(format!(
        "deadline exceeded before `{}` answered",
        backend.service
    ))
}

fn status(status: Status) -> Response<Body> {
    status.into_http()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
