//! One backend's client: balanced connections → circuit breaker → per-attempt timeout, with
//! retries of the calls that are safe to repeat.
//!
//! Stack, outermost first, and why in this order:
//! 0. [`ClientService`]: one client span per call (all its attempts), injected as the call's
//!    `traceparent`.
//! 1. [`Retry`]: replays a buffered unary request after an `UNAVAILABLE` that came before any
//!    response headers (a refused connection, a reset stream, a trailers-only `UNAVAILABLE`),
//!    under a per-backend budget and within the caller's deadline. Only requests the proxy
//!    marked [`Idempotent`] (see [`retry_safe`]) are buffered; everything else, streaming
//!    requests included, passes through once.
//! 2. [`CircuitBreaker`]: records each attempt, so a backend that is down opens it and calls
//!    are refused in microseconds instead of each waiting for a connect; a rejection ends the
//!    retries.
//! 3. [`BoundedTimeout`]: one attempt gets `attempt_timeout`, or less when the caller's
//!    `grpc-timeout` (rewritten before every attempt) says so; an expiry counts as a failure,
//!    except a caller's own deadline below `counted_deadline_min` (the caller's choice, not
//!    the backend's fault).
//! 4. [`BalancedChannel`]: every address of the backend host, several HTTP/2 connections each.

use std::sync::Arc;

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{ServiceBuilder, ServiceExt};
use umcp_proto::catalogue::{Lookup, MethodCatalogue, SideEffects};
use umcp_resilience::balance::{BalanceError, BalancedChannel, Configure};
use umcp_resilience::breaker::{Breaker, CircuitBreaker, State};
use umcp_resilience::retry::{Idempotent, Retrier, Retry, RetryLayer};
use umcp_resilience::timeout::BoundedTimeout;
use umcp_resilience::{BoundedTimeoutLayer, BoxError, CircuitBreakerLayer, GrpcClassifier};
use umcp_telemetry::trace::{ClientLayer, ClientService};

use crate::config::GatewayConfig;

/// The metadata key a client sets to make a call of an `IDEMPOTENT_WITH_KEY` method
/// retryable; it must carry the same key as the request's `idempotency_key` field, which is
/// what the backend deduplicates on.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// gRPC's 5-byte frame header on top of the largest message a service accepts.
const MAX_REPLAY_BYTES: usize = umcp_rpc::MAX_MESSAGE_BYTES + 5;

type Stack = ClientService<Retry<CircuitBreaker<BoundedTimeout<Channel>, GrpcClassifier>>>;

/// The client of one backend; clones share connections, breaker and budget.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pool: BalancedChannel,
    /// How long a call waits for the first resolution (the connect timeout).
    resolve_wait: std::time::Duration,
    breaker: Breaker,
    stack: Stack,
}

impl Upstream {
    /// Starts resolving `url` and builds the stack; connections open on the first call.
    pub(crate) fn start(
        name: &'static str,
        url: &str,
        config: &GatewayConfig,
    ) -> Result<Self, BalanceError> {
        let connect_timeout = std::time::Duration::from_millis(config.connect_timeout_ms);
        let configure: Configure = Arc::new(move |endpoint: Endpoint| {
            endpoint
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(std::time::Duration::from_secs(30))
                .keep_alive_timeout(std::time::Duration::from_secs(10))
        });
        let upstream = &config.upstream;
        let pool = BalancedChannel::start(url, upstream.balance(), configure)?;
        let breaker = Breaker::new(name, upstream.breaker());
        let stack = ServiceBuilder::new()
            .layer(ClientLayer::new(name))
            .layer(
                RetryLayer::new(Retrier::new(upstream.retry())).max_replay_bytes(MAX_REPLAY_BYTES),
            )
            .layer(CircuitBreakerLayer::new(
                breaker.clone(),
                GrpcClassifier::new(),
            ))
            .layer(
                BoundedTimeoutLayer::new(upstream.attempt_timeout())
                    .counting_caller_deadlines_from(upstream.counted_deadline_min()),
            )
            .service(pool.channel());
        Ok(Self {
            pool,
            resolve_wait: connect_timeout,
            breaker,
            stack,
        })
    }

    /// The balanced channel without breaker or retries (for health checks, which must reach
    /// the backend while the breaker is open to see it recover).
    pub(crate) fn channel(&self) -> Channel {
        self.pool.channel()
    }

    /// This backend's breaker.
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Open and still refusing calls (an open breaker whose wait is over lets the next call
    /// probe, so it no longer counts as down).
    pub(crate) fn refusing(&self) -> bool {
        self.breaker.state() == State::Open
            && self.breaker.retry_after().is_some_and(|d| !d.is_zero())
    }

    /// Sends one call through the stack; `retryable` marks it for replay.
    pub(crate) async fn call(
        &self,
        mut request: Request<Body>,
        retryable: bool,
    ) -> Result<Response<Body>, BoxError> {
        // A host that does not resolve (yet) has no connection: the balancer would hold the
        // call until its deadline; waiting briefly for the first resolution covers start-up.
        if !self.pool.has_endpoints(self.resolve_wait).await {
            return Err("no address of the backend host has resolved".into());
        }
        if retryable {
            request.extensions_mut().insert(Idempotent);
        }
        let response = self.stack.clone().oneshot(request).await?;
        Ok(response.map(Body::new))
    }
}

/// Whether the call at `path` may be sent again: a unary call (a streaming request cannot be
/// replayed, a streaming response may already have been partly consumed) of a method without
/// side effects or with idempotent ones, or of an `IDEMPOTENT_WITH_KEY` method when the client
/// sent an [`IDEMPOTENCY_KEY`].
pub(crate) fn retry_safe(path: &str, headers: &http::HeaderMap) -> bool {
    let Lookup::Method(method) = MethodCatalogue::global().lookup(path) else {
        return false;
    };
    if method.client_streaming || method.server_streaming {
        return false;
    }
    match method.side_effects {
        SideEffects::IdempotentWithKey => headers
            .get(IDEMPOTENCY_KEY)
            .is_some_and(|v| !v.as_bytes().is_empty()),
        other => other.retry_safe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unary_calls_without_repeatable_side_effects_are_retried() {
        let none = http::HeaderMap::new();
        let mut keyed = http::HeaderMap::new();
        keyed.insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("k-1"));
        assert!(retry_safe("/umcp.graph.v1.GraphService/Query", &none));
        assert!(retry_safe("/umcp.graph.v1.GraphService/Upsert", &none));
        assert!(!retry_safe("/umcp.auth.v1.AuthService/Login", &keyed));
        assert!(!retry_safe(
            "/umcp.execution.v1.ExecutionService/RunTests",
            &keyed
        ));
        assert!(!retry_safe(
            "/umcp.execution.v1.ExecutionService/Execute",
            &none
        ));
        assert!(retry_safe(
            "/umcp.execution.v1.ExecutionService/Execute",
            &keyed
        ));
        // Streaming: never, key or not.
        assert!(!retry_safe(
            "/umcp.execution.v1.ExecutionService/ExecuteStream",
            &keyed
        ));
        assert!(!retry_safe("/umcp.audit.v1.AuditService/Tail", &none));
        assert!(!retry_safe("/nope.Service/Method", &none));
    }
}
