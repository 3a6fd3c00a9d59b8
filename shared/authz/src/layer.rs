//! The tower layer that enforces the catalogue's access rules on every request, in the gateway and
//! again in every service (a client that bypasses the gateway gets the same answer).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::metadata::MetadataValue;
use tower::{Layer, Service};
use umcp_proto::catalogue::{Access, Lookup, MethodCatalogue};

use crate::forwarded;
use crate::principal::Principal;
use crate::verifier::{AuthError, Verifier};

/// What the layer decides before calling the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No token needed (public RPCs, health, reflection).
    Public,
    /// Not a umcp method: the inner service answers (UNIMPLEMENTED, naming it).
    Unknown,
    /// A token is needed, and maybe a permission.
    Protected(Access),
}

/// Classifies a request path by the method catalogue. There is no "unlisted" case: the
/// catalogue refuses to load when any RPC lacks a policy.
#[must_use]
pub fn gate(path: &str) -> Gate {
    match MethodCatalogue::global().lookup(path) {
        Lookup::Infrastructure => Gate::Public,
        Lookup::Method(method) => match method.access {
            Access::Public => Gate::Public,
            access => Gate::Protected(access),
        },
        Lookup::UnknownMethod { .. } | Lookup::UnknownService(_) | Lookup::Malformed => {
            Gate::Unknown
        }
    }
}

/// One authorization decision, as observers see it.
#[derive(Debug)]
pub struct Decision<'a> {
    /// `/package.Service/Method`.
    pub path: &'a str,
    /// The request headers (correlation id, peer, user agent for the observer's records).
    pub headers: &'a http::HeaderMap,
    /// What happened.
    pub outcome: Outcome<'a>,
}

/// The outcome of a decision.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The caller may call the method.
    Granted(&'a Principal),
    /// Valid token, missing permission.
    Denied(&'a Principal, crate::permissions::Permission),
    /// No valid token.
    Unauthenticated(&'a AuthError),
}

/// Receives every decision of an [`AuthLayer`] on a protected method (audit events). Must not
/// block: it runs on the request path.
pub trait AuthObserver: Send + Sync + 'static {
    /// Called once per protected request, before the answer is sent or the call proceeds.
    fn decided(&self, decision: &Decision<'_>);
}

/// Layer adding [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    observer: Option<Arc<dyn AuthObserver>>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer")
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Enforces the table with `verifier`.
    #[must_use]
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            verifier,
            observer: None,
        }
    }

    /// Also reports every decision to `observer`.
    #[must_use]
    pub fn observed(mut self, observer: Arc<dyn AuthObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: Arc::clone(&self.verifier),
            observer: self.observer.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    observer: Option<Arc<dyn AuthObserver>>,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, R> Service<Request<B>> for AuthService<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.verifier);
        let requirement = match gate(request.uri().path()) {
            Gate::Public | Gate::Unknown => {
                return Box::pin(async move {
                    // Public calls (Login) throttle by client address: settle it here too.
                    forwarded::settle(&verifier, request.headers_mut()).await;
                    inner.call(request).await
                });
            }
            Gate::Protected(requirement) => requirement,
        };
        let observer = self.observer.clone();
        Box::pin(async move {
            forwarded::settle(&verifier, request.headers_mut()).await;
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"));
            let principal = match verifier.verify_header(header).await {
                Ok(principal) => principal,
                Err(error) => {
                    observe(
                        observer.as_deref(),
                        &request,
                        Outcome::Unauthenticated(&error),
                    );
                    return Ok(reject(&error).into_http());
                }
            };
            if let Access::Permission(permission) = requirement
                && !principal.has(permission)
            {
                observe(
                    observer.as_deref(),
                    &request,
                    Outcome::Denied(&principal, permission),
                );
                let status = Status::permission_denied(format!(
                    "permission `{permission}` is required for {}; the caller's roles ({}) do not grant it",
                    request.uri().path(),
                    principal.role_names()
                ));
                return Ok(status.into_http());
            }
            observe(observer.as_deref(), &request, Outcome::Granted(&principal));
            tracing::Span::current().record("user_id", principal.user_id.as_str());
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}

fn observe<B>(observer: Option<&dyn AuthObserver>, request: &Request<B>, outcome: Outcome<'_>) {
    if let Some(observer) = observer {
        observer.decided(&Decision {
            path: request.uri().path(),
            headers: request.headers(),
            outcome,
        });
    }
}

/// The status for a rejected token, with an RFC 6750 `www-authenticate` challenge.
#[must_use]
pub fn reject(error: &AuthError) -> Status {
    if matches!(error, AuthError::KeysUnavailable) {
        return Status::unavailable(error.to_string());
    }
    let mut status = Status::unauthenticated(error.to_string());
    let challenge = match error {
        AuthError::Missing => "Bearer realm=\"umcp\"".to_owned(),
        other => format!(
            "Bearer realm=\"umcp\", error=\"invalid_token\", error_description=\"{}\"",
            other.to_string().replace('"', "'")
        ),
    };
    if let Ok(value) = MetadataValue::try_from(challenge.as_str()) {
        status.metadata_mut().insert("www-authenticate", value);
    }
    status
}

/// The caller of a request that passed the layer.
///
/// # Errors
/// `UNAUTHENTICATED` when the request did not pass through [`AuthLayer`] as a protected method.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("this call needs an authenticated caller"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permission;

    #[test]
    fn paths_are_classified() {
        assert_eq!(gate("/grpc.health.v1.Health/Check"), Gate::Public);
        assert_eq!(gate("/umcp.auth.v1.AuthService/Login"), Gate::Public);
        assert_eq!(
            gate("/umcp.auth.v1.AuthService/WhoAmI"),
            Gate::Protected(Access::Authenticated)
        );
        assert_eq!(
            gate("/umcp.graph.v1.GraphService/Delete"),
            Gate::Protected(Access::Permission(Permission::GraphDelete))
        );
        assert_eq!(gate("/umcp.graph.v1.GraphService/Nope"), Gate::Unknown);
        assert_eq!(gate("/acme.Billing/Charge"), Gate::Unknown);
    }

    #[test]
    fn rejections_carry_a_challenge() {
        let status = reject(&AuthError::Missing);
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status.metadata().get("www-authenticate").unwrap(),
            "Bearer realm=\"umcp\""
        );
        let status = reject(&AuthError::Expired);
        let challenge = status
            .metadata()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        assert_eq!(
            reject(&AuthError::KeysUnavailable).code(),
            tonic::Code::Unavailable
        );
    }
}
