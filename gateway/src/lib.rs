//! The public gRPC entry point of the mesh.
//!
//! It authenticates every call and enforces the method catalogue's access rules, routes every method of
//! every umcp service to its backend without decoding messages, serves reflection for all of
//! them and health for itself and each backend, and carries correlation ids and deadlines.

mod config;
mod health;
pub mod mcp;
mod proxy;
mod routes;
mod upstream;
mod upstream_config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use umcp_audit_client::Emitter;
use umcp_authz::remote::TokenProvider;
use umcp_authz::{AuthClient, Verifier};
use umcp_rpc::process::ProcessConfig;

pub use config::{Backends, GatewayConfig, UpstreamConfig};
pub use mcp::HttpConfig;

impl ProcessConfig for GatewayConfig {
    fn log(&self) -> &umcp_telemetry::LogConfig {
        &self.log
    }

    fn listen(&self) -> &str {
        &self.listen
    }
}

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A backend URL could not be turned into a channel.
    #[error("invalid backend endpoint: {0}")]
    Endpoint(umcp_resilience::balance::BalanceError),
    /// The token verifier could not start.
    #[error(transparent)]
    Auth(#[from] umcp_authz::runtime::AuthClientError),
    /// The Redis settings are invalid.
    #[error(transparent)]
    Redis(#[from] umcp_redis::RedisError),
    /// The audit client could not start.
    #[error("cannot start the audit client: {0}")]
    Audit(String),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] umcp_rpc::ServeError),
    /// The HTTP port (MCP) could not be bound or served.
    #[error("http port: {0}")]
    Http(#[source] std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` completes, verifying tokens against the
/// auth service of `config.auth`.
///
/// # Errors
/// See [`GatewayError`].
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    run_with_http(listener, None, config, shutdown).await
}

/// Binds the HTTP port of `config.http.listen` (`None` when it is empty: the port is off).
///
/// # Errors
/// [`GatewayError::Http`] when the address cannot be bound.
pub async fn bind_http(config: &GatewayConfig) -> Result<Option<TcpListener>, GatewayError> {
    if config.http.listen.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(&config.http.listen)
        .await
        .map_err(GatewayError::Http)?;
    Ok(Some(listener))
}

/// [`run`], plus MCP over Streamable HTTP on `http` (see [`mcp`]), whose tool calls come back
/// to `listener` with the caller's credentials. Both stop on `shutdown`.
///
/// # Errors
/// See [`GatewayError`].
pub async fn run_with_http(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    // Its own Redis client (the limiter's has a tighter timeout): keys and revocations
    // shared by the auth service, read at start-up.
    let shared = umcp_redis::Redis::connect(&config.redis).await?;
    let auth = AuthClient::start(&config.auth, shared).await?;
    let credentials = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn umcp_audit_client::TokenProvider>);
    let emitter = umcp_audit_client::start_emitter(&config.audit, credentials, "gateway")
        .map_err(|e| GatewayError::Audit(e.to_string()))?;
    let verifier = config.require_auth.then(|| Arc::clone(&auth.verifier));
    let forwarder = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn TokenProvider>);
    let Some(http) = http else {
        return serve(listener, config, verifier, emitter, forwarder, shutdown).await;
    };
    let grpc = listener.local_addr().map_err(GatewayError::Http)?;
    // A wildcard listen address is reached over loopback.
    let host = if grpc.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        grpc.ip()
    };
    let wiring = mcp::McpWiring {
        verifier: Arc::clone(&auth.verifier),
        emitter: emitter.clone(),
        gateway_url: format!("http://{}", std::net::SocketAddr::new(host, grpc.port())),
        auth_url: config.auth.url.clone(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut mcp_stopped = stopped.clone();
    let mcp = tokio::spawn(mcp::serve(http, config.http.clone(), wiring, async move {
        let _ = mcp_stopped.changed().await;
    }));
    let result = serve(listener, config, verifier, emitter, forwarder, async move {
        shutdown.await;
        let _ = stop.send(());
    })
    .await;
    drop(stopped);
    match mcp.await {
        Ok(Err(error)) => tracing::error!(%error, "mcp http port failed"),
        Err(error) => tracing::error!(%error, "mcp http task panicked"),
        Ok(Ok(())) => {}
    }
    result
}

/// [`run`] with its parts given: the entry tests use. `verifier: None` turns the gateway's own
/// enforcement off (services still enforce); decisions are recorded through `emitter`.
/// With `forwarder` (the gateway's own service credentials), each forwarded call carries its
/// token in `x-umcp-forwarder`, so the services believe the client address the gateway passes
/// on (`umcp_authz::forwarded`); without it they see the gateway's own address.
///
/// # Errors
/// See [`GatewayError`].
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    verifier: Option<Arc<Verifier>>,
    emitter: Emitter,
    forwarder: Option<Arc<dyn TokenProvider>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GatewayError> {
    if verifier.is_none() {
        tracing::warn!(
            "gateway authentication is OFF (require_auth=false); services still enforce it"
        );
    }
    let table = Arc::new(routes::RouteTable::new(&config).map_err(GatewayError::Endpoint)?);
    // Shared rate-limit budgets; `None` (not configured) keeps them per replica.
    let redis = umcp_redis::Redis::connect(&config.rate_limits.redis_config(&config.redis)).await?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let (reflection_v1, reflection_v1alpha) =
        umcp_rpc::reflection_services().map_err(umcp_rpc::ServeError::from)?;
    let local = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let watcher = tokio::spawn(health::watch(
        Arc::clone(&table),
        reporter,
        Duration::from_millis(config.health_interval_ms),
    ));

    let service = proxy::GatewayService::new(table, local, forwarder);
    // Inside the auth layer (the principal is known), before any backend work is spent.
    let limiter = umcp_ratelimit::RateLimiter::new(config.rate_limits.clone(), redis);
    let service = tower::Layer::layer(
        &umcp_ratelimit::RateLimitLayer::new(limiter, emitter.clone()),
        service,
    );
    let result = umcp_rpc::Server::new("gateway")
        .auth_if(verifier)
        .audit(emitter)
        .serve_proxy(service, listener, shutdown)
        .await;
    watcher.abort();
    result.map_err(GatewayError::Serve)
}
