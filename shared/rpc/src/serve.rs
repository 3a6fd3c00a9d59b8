//! Serving a set of tonic services the same way in every process.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use umcp_authz::AuthLayer;

use crate::correlation::CorrelationLayer;
use crate::framing::FramingLayer;

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

/// A `Server` builder with the settings every umcp process shares.
#[must_use]
pub fn server_builder() -> Server {
    Server::builder()
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

/// Reflection services (v1 and v1alpha: grpcurl 1.8 speaks v1alpha) describing every umcp API
/// and `grpc.health.v1`.
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

/// Serves `routes` (the service's own gRPC services and its health service) plus reflection on
/// `listener` until `shutdown` completes. `component` names the process in log spans.
///
/// Without an [`AuthLayer`]: only for test doubles. Services use [`serve_with_auth`].
///
/// # Errors
/// See [`ServeError`].
pub async fn serve(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_inner(component, listener, routes, None, shutdown).await
}

/// [`serve`] with the permission table enforced on the service's own port (not only at the
/// gateway: a client that bypasses the gateway gets the same answer).
///
/// # Errors
/// See [`ServeError`].
pub async fn serve_with_auth(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    auth: AuthLayer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_inner(component, listener, routes, Some(auth), shutdown).await
}

/// [`serve_with_auth`] with `inner` applied to the routes, below the auth layer, so it sees the
/// verified caller (the audit layer).
///
/// # Errors
/// See [`ServeError`].
pub async fn serve_with_auth_and<L>(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    auth: AuthLayer,
    inner: L,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError>
where
    L: tower::Layer<Routes>,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
{
    let (v1, v1alpha) = reflection_services()?;
    let routes = routes.add_service(v1).add_service(v1alpha);
    let service = inner.layer(routes);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(component, auth = true, "serving");
    server_builder()
        .layer(CorrelationLayer::new(component))
        // Malformed calls (not gRPC, no or two messages, cut short) get a precise status.
        .layer(FramingLayer)
        .layer(auth)
        .serve_with_incoming_shutdown(service, incoming, shutdown)
        .await?;
    tracing::info!(component, "stopped");
    Ok(())
}

async fn serve_inner(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    auth: Option<AuthLayer>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (v1, v1alpha) = reflection_services()?;
    let routes = routes.add_service(v1).add_service(v1alpha);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(component, auth = auth.is_some(), "serving");
    server_builder()
        // Outermost, so even a rejected call has a correlation id on its logs and response.
        .layer(CorrelationLayer::new(component))
        // Malformed calls (not gRPC, no or two messages, cut short) get a precise status.
        .layer(FramingLayer)
        // Then the permission table: nothing below runs for a caller who may not call it.
        .layer(tower::util::option_layer(auth))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!(component, "stopped");
    Ok(())
}
