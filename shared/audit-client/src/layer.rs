//! The tower layer that audits a service's RPCs, so no handler can forget to: per method, an
//! optional event recorded durably BEFORE the call runs (audited-critical operations fail
//! closed: no record, no call), and one event when the call is answered, with outcome and
//! duration. Internal errors add a `system_error`, and configured codes a `security_violation`
//! (e.g. a write attempt through a read-only query).
//!
//! The outcome is read from the response headers: tonic answers every error of a unary call
//! as trailers-only, so the status is there; a streaming call that fails after its headers
//! (rare: the execution stream reports failures inside its result message) is recorded as OK.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tonic::Code;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use umcp_authz::Principal;
use umcp_proto::audit::v1::EventType;
use umcp_proto::catalogue::MethodCatalogue;

use crate::emit::{Emitter, Event};

/// Response metadata a handler sets to report a security violation it detected (a sandbox
/// limit kill, a reused refresh token); the value names the kind.
pub const VIOLATION_HEADER: &str = "x-umcp-violation";

/// How one method is audited: the catalogue's rule, declared in the method's policy option.
pub use umcp_proto::catalogue::AuditRule as Rule;

/// Layer adding [`AuditService`]; the rules are keyed by `/package.Service/Method`.
#[derive(Debug, Clone)]
pub struct AuditLayer {
    emitter: Emitter,
    rules: Arc<HashMap<String, Arc<Rule>>>,
}

impl AuditLayer {
    /// Audits, through `emitter`, every method of `services` (fully qualified names) whose
    /// catalogue policy has an audit rule.
    #[must_use]
    pub fn for_services<'a>(emitter: Emitter, services: impl IntoIterator<Item = &'a str>) -> Self {
        let services: Vec<&str> = services.into_iter().collect();
        let rules = MethodCatalogue::global()
            .methods()
            .filter(|m| services.contains(&m.service.as_str()))
            .filter_map(|m| Some((m.path.clone(), Arc::new(m.audit.clone()?))))
            .collect();
        Self {
            emitter,
            rules: Arc::new(rules),
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            emitter: self.emitter.clone(),
            rules: Arc::clone(&self.rules),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuditService<S> {
    inner: S,
    emitter: Emitter,
    rules: Arc<HashMap<String, Arc<Rule>>>,
}

type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, R> Service<Request<B>> for AuditService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Response<R>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(rule) = self.rules.get(request.uri().path()).cloned() else {
            return Box::pin(inner.call(request));
        };
        let emitter = self.emitter.clone();
        let base = base_event(&emitter, &request, &rule);
        Box::pin(async move {
            if let Some(before) = rule.before {
                let mut event = base.clone().detail("stage", "request");
                event.0.event_type = before as i32;
                if let Err(status) = emitter.emit_required(event).await {
                    let mut response = status.into_http::<R>();
                    response.headers_mut().insert(
                        "x-umcp-audit",
                        http::HeaderValue::from_static("unavailable"),
                    );
                    return Ok(response);
                }
            }
            let started = Instant::now();
            let response = inner.call(request).await?;
            let (code, reason) = status_of(&response);
            let elapsed = started.elapsed();
            let event_type = if code == Code::Ok {
                rule.ok
            } else {
                rule.failed
            };
            let mut event = base.clone().outcome(code, &reason).duration(elapsed);
            event.0.event_type = event_type as i32;
            if rule.before.is_some() {
                event = event.detail("stage", "response");
            }
            emitter.emit(event);
            let flagged = response
                .headers()
                .get(VIOLATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let extra = if matches!(code, Code::Internal | Code::DataLoss | Code::Unknown) {
                Some(EventType::SystemError)
            } else if flagged.is_some() || rule.violation_on.contains(&code) {
                Some(EventType::SecurityViolation)
            } else if rule.rate_limited_on.contains(&code) {
                Some(EventType::RateLimitExceeded)
            } else {
                None
            };
            if let Some(extra) = extra {
                let mut event = base.outcome(code, &reason).duration(elapsed);
                if let Some(kind) = flagged {
                    event = event.detail("violation", kind);
                }
                event.0.event_type = extra as i32;
                event.0.severity = crate::emit::default_severity(extra) as i32;
                emitter.emit(event);
            }
            Ok(response)
        })
    }
}

fn base_event<B>(emitter: &Emitter, request: &Request<B>, rule: &Rule) -> Event {
    let path = request.uri().path();
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    let mut event = emitter
        .event(rule.ok, path, &rule.action)
        .headers(request.headers(), peer);
    if let Some(principal) = request.extensions().get::<Arc<Principal>>() {
        event = event.actor(principal);
    }
    event
}

/// The gRPC status of a response whose status came with the headers (trailers-only), else OK;
/// tonic's own parser decodes `grpc-message`.
fn status_of<R>(response: &Response<R>) -> (Code, String) {
    tonic::Status::from_header_map(response.headers()).map_or((Code::Ok, String::new()), |s| {
        (s.code(), s.message().chars().take(256).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_trailers_only_headers() {
        let response =
            tonic::Status::permission_denied("writes: not allowed ✓ 100%").into_http::<()>();
        assert_eq!(
            status_of(&response),
            (Code::PermissionDenied, "writes: not allowed ✓ 100%".into())
        );
        let ok = Response::new(());
        assert_eq!(status_of(&ok).0, Code::Ok);
    }
}
