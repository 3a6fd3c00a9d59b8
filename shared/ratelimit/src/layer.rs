//! The tower layer: classifies each call by the catalogue's `rate_class`, keys it by the
//! authenticated user (or the peer address for anonymous calls) and refuses calls over the
//! limit with `RESOURCE_EXHAUSTED` before any backend work is spent.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use umcp_audit_client::{Emitter, RateLimitReporter};
use umcp_authz::Principal;
use umcp_proto::audit::v1::EventType;
use umcp_proto::catalogue::{Lookup, MethodCatalogue};

use crate::config::Rule;
use crate::gcra::Outcome;
use crate::limiter::{RateLimiter, Source, Verdict};

/// How often repeated rejections of one principal and class are summarised in one audit
/// event (the first of a window is recorded at once).
pub const AUDIT_WINDOW: Duration = Duration::from_secs(10);

/// Wraps a service (the gateway's proxy) with the limiter. Put it inside the auth layer, so
/// the principal is known.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limiter: RateLimiter,
    emitter: Emitter,
    reporter: RateLimitReporter,
}

impl RateLimitLayer {
    /// A layer deciding with `limiter` and recording rejections through `emitter` (one
    /// `rate_limit_exceeded` event per principal, class and [`AUDIT_WINDOW`]). Needs a Tokio
    /// runtime (the audit summary task).
    #[must_use]
    pub fn new(limiter: RateLimiter, emitter: Emitter) -> Self {
        let reporter = RateLimitReporter::start(emitter.clone(), AUDIT_WINDOW);
        Self {
            shared: Arc::new(Shared {
                limiter,
                emitter,
                reporter,
            }),
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for RateLimit<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready service is the one to call; keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let Lookup::Method(method) = MethodCatalogue::global().lookup(request.uri().path())
            else {
                // Health, reflection and unknown paths: the router answers them.
                return inner.call(request).await;
            };
            let class = method.rate_class.clone();
            let principal = principal_of(&request);
            match shared.limiter.check(&class, &principal).await {
                Verdict::Unlimited => inner.call(request).await,
                Verdict::Unavailable { rule } => {
                    // Per call at debug: umcp-redis logs the outage, the stats count refusals.
                    tracing::debug!(
                        class,
                        principal,
                        limit = rule.limit,
                        "rate limiter unavailable; call refused"
                    );
                    let status = tonic::Status::unavailable(format!(
                        "the rate limiter is unavailable (redis down, failure_mode=closed); \
                         `{class}` calls are refused until it is back"
                    ));
                    Ok(status.into_http())
                }
                Verdict::Checked {
                    rule,
                    outcome,
                    source,
                } => {
                    if !outcome.allowed {
                        if !rule.shadow {
                            return Ok(shared.refuse(&request, &class, &principal, rule, outcome));
                        }
                        tracing::info!(
                            class,
                            principal,
                            limit = rule.limit,
                            "over a shadow rate limit; admitted"
                        );
                    }
                    let mut response = inner.call(request).await?;
                    if source != Source::FailOpen {
                        headers(response.headers_mut(), rule, outcome);
                    }
                    Ok(response)
                }
            }
        })
    }
}

impl Shared {
    fn refuse(
        &self,
        request: &Request<Body>,
        class: &str,
        principal: &str,
        rule: Rule,
        outcome: Outcome,
    ) -> Response<Body> {
        let retry_secs = whole_seconds(outcome.retry_after);
        let message = format!(
            "rate limit exceeded for `{class}` calls: {} per {} s; retry after {retry_secs} s",
            rule.limit, rule.period_secs
        );
        // Per call at debug: a flood is summarised by the audit reporter and the stats.
        tracing::debug!(
            class,
            principal,
            limit = rule.limit,
            retry_secs,
            "rate limited"
        );
        let peer = peer_of(request);
        let mut event = self
            .emitter
            .event(
                EventType::RateLimitExceeded,
                request.uri().path(),
                "rate_limit",
            )
            .headers(request.headers(), peer)
            .outcome(Code::ResourceExhausted, &message)
            .detail("rate_class", class)
            .detail("principal", principal)
            .detail_int("limit", i64::from(rule.limit));
        // The client's own `x-forwarded-for` is not to be believed at the edge.
        event.0.peer_address = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        if let Some(p) = request.extensions().get::<Arc<Principal>>() {
            event = event.actor(p);
        }
        self.reporter.exceeded(principal, class, event);
        let mut response = tonic::Status::resource_exhausted(message).into_http::<Body>();
        let headers = response.headers_mut();
        headers.insert("retry-after", HeaderValue::from(retry_secs));
        self::headers(headers, rule, outcome);
        response
    }
}

/// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (whole seconds until
/// the full burst is back).
fn headers(headers: &mut HeaderMap, rule: Rule, outcome: Outcome) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(rule.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(outcome.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(whole_seconds(outcome.reset_after)),
    );
}

/// Seconds, rounded up, at least 1 (a client must not retry at once).
fn whole_seconds(d: Duration) -> u64 {
    d.as_micros()
        .div_ceil(1_000_000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The authenticated user, or the peer address of an anonymous call.
fn principal_of<B>(request: &Request<B>) -> String {
    if let Some(p) = request.extensions().get::<Arc<Principal>>()
        && !p.user_id.is_empty()
    {
        return p.user_id.clone();
    }
    peer_of(request).map_or_else(|| "unknown".to_owned(), |p| ip_key(p.ip()))
}

fn ip_key(ip: IpAddr) -> String {
    // IPv4-mapped IPv6 and plain IPv4 are one client.
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn peer_of<B>(request: &Request<B>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(6000)), 6);
        assert_eq!(whole_seconds(Duration::from_millis(6001)), 7);
    }

    #[test]
    fn anonymous_calls_are_keyed_by_address() {
        let mut request = Request::new(());
        assert_eq!(principal_of(&request), "unknown");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(ip_key(mapped), "10.1.2.3");
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("192.0.2.7:4000".parse().unwrap_or(([0, 0, 0, 0], 0).into())),
        });
        assert_eq!(principal_of(&request), "192.0.2.7");
    }
}
