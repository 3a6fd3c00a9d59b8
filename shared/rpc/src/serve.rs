//! The one way every umcp process assembles its gRPC server: [`Server`].
//!
//! ```text
//! Server::new("graph").auth(verifier).audit(emitter).add_service(svc).serve(listener, stop)
//! ```
//!
//! The layer stack, outermost first, is built in [`Server::serve`] and nowhere else; the gateway
//! uses [`Server::serve_proxy`], the same stack without the routes of its own.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tower::Service;

use umcp_audit_client::{AuditLayer, Emitter};
use umcp_authz::{AuthLayer, Verifier};

use crate::correlation::CorrelationLayer;
use crate::framing::FramingLayer;
use crate::metrics::MetricsLayer;

/// Largest request or response message any umcp service decodes or encodes (4 MiB). Services
/// with smaller documented limits check them in their own validation.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor sets.
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A tonic `Server` builder with the transport settings every umcp process shares.
#[must_use]
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        // gRPC is latency-sensitive request/response traffic: never wait for Nagle.
        .tcp_nodelay(true)
        // Detect dead peers (half-open connections through NATs, killed pods).
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Bound per-connection work so one client cannot pin unbounded state.
        .max_concurrent_streams(Some(1024))
        // Metadata beyond 16 KiB is abuse (the gRPC suggestion is 8 KiB).
        .http2_max_header_list_size(Some(16 * 1024))
}

/// Reflection services (v1 and v1alpha: grpcurl 1.8 speaks v1alpha) describing every umcp API,
/// its method policies included, and `grpc.health.v1`.
///
/// # Errors
/// When the embedded descriptor sets are invalid (a build defect).
#[allow(clippy::type_complexity)]
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(umcp_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// A umcp gRPC server under construction. See the module docs.
pub struct Server {
    component: &'static str,
    verifier: Option<Arc<Verifier>>,
    emitter: Option<Emitter>,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("component", &self.component)
            .field("auth", &self.verifier.is_some())
            .field("audit", &self.emitter.is_some())
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server named `component` in logs and audit events. Without [`Server::auth`] it
    /// enforces nothing: only test doubles serve that way.
    #[must_use]
    pub fn new(component: &'static str) -> Self {
        Self {
            component,
            verifier: None,
            emitter: None,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
        }
    }

    /// Enforces the method catalogue's access rules with `verifier` on this port (not only at
    /// the gateway: a client that bypasses it gets the same answer).
    #[must_use]
    pub fn auth(mut self, verifier: Arc<Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// [`Server::auth`] when a verifier is given (the gateway with `require_auth=false`).
    #[must_use]
    pub fn auth_if(self, verifier: Option<Arc<Verifier>>) -> Self {
        match verifier {
            Some(verifier) => self.auth(verifier),
            None => self,
        }
    }

    /// Records every authorization decision, and the catalogue's audit rules of the added
    /// services, through `emitter` (a disabled emitter records nothing).
    #[must_use]
    pub fn audit(mut self, emitter: Emitter) -> Self {
        self.emitter = Some(emitter);
        self
    }

    /// Serves `service`, and reports it `SERVING` on the health service.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    fn auth_layer(&self) -> Option<AuthLayer> {
        let layer = AuthLayer::new(Arc::clone(self.verifier.as_ref()?));
        Some(match &self.emitter {
            Some(emitter) if emitter.enabled() => layer.observed(Arc::new(emitter.clone())),
            _ => layer,
        })
    }

    /// Serves the added services, their health and reflection on `listener` until `shutdown`
    /// completes; in-flight calls finish first.
    ///
    /// # Errors
    /// See [`ServeError`].
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        for name in &self.services {
            reporter
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let (v1, v1alpha) = reflection_services()?;
        self.routes
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha);
        let auth = self.auth_layer();
        let audit = self
            .emitter
            .take()
            .map(|emitter| AuditLayer::for_services(emitter, self.services.iter().copied()));
        let Self {
            component, routes, ..
        } = self;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tracing::info!(component, auth = auth.is_some(), "serving");
        server_builder()
            // Outermost, so even a rejected call has a correlation id on its logs and response.
            .layer(CorrelationLayer::new(component))
            // Every call counted and timed with its final code, refused ones included.
            .layer(MetricsLayer::new(component))
            // Malformed calls (not gRPC, no or two messages, cut short) get a precise status.
            .layer(FramingLayer)
            // Then the catalogue's access rules: nothing below runs for a caller who may not.
            .layer(tower::util::option_layer(auth))
            // Below auth, so events name the verified caller; before the handler, so a
            // critical call's event is durable before it runs.
            .layer(tower::util::option_layer(audit))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        tracing::info!(component, "stopped");
        Ok(())
    }

    /// Serves `proxy` (the gateway, which answers health and reflection itself and forwards
    /// the rest) behind correlation and access rules, until `shutdown` completes. Framing is
    /// left to the backends, which see every byte of the call.
    ///
    /// # Errors
    /// See [`ServeError`].
    pub async fn serve_proxy<P>(
        self,
        proxy: P,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError>
    where
        P: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        P::Future: Send + 'static,
    {
        let auth = self.auth_layer();
        let component = self.component;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tracing::info!(component, auth = auth.is_some(), "serving");
        server_builder()
            // Outermost: every request, even a rejected one, gets a correlation id and a span.
            .layer(CorrelationLayer::new(component))
            // Every call counted and timed with its final code, refused ones included.
            .layer(MetricsLayer::new(component))
            // Then the access rules, before any routing work or backend connection is spent.
            .layer(tower::util::option_layer(auth))
            .serve_with_incoming_shutdown(proxy, incoming, shutdown)
            .await?;
        tracing::info!(component, "stopped");
        Ok(())
    }
}

/// What a service needs from the rest of the mesh to serve: the token verifier and the audit
/// emitter. `run` builds it from config; tests build it from their own issuer.
#[derive(Clone)]
pub struct Wiring {
    /// Verifies tokens on the service's own port.
    pub verifier: Arc<Verifier>,
    /// Records authorization decisions and the catalogue's audit rules.
    pub emitter: Emitter,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("audit", &self.emitter.enabled())
            .finish_non_exhaustive()
    }
}

impl Wiring {
    /// Tokens verified by `verifier`, nothing audited (`component` names the disabled emitter).
    #[must_use]
    pub fn unaudited(verifier: Arc<Verifier>, component: &'static str) -> Self {
        Self {
            verifier,
            emitter: Emitter::new(None, component),
        }
    }

    /// A [`Server`] named `component` that enforces and audits with this wiring.
    #[must_use]
    pub fn server(self, component: &'static str) -> Server {
        Server::new(component)
            .auth(self.verifier)
            .audit(self.emitter)
    }
}
