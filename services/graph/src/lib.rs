//! `umcp-graph`: the knowledge-graph gRPC service (`umcp.graph.v1.GraphService`) over a
//! [`GraphStore`](umcp_store::GraphStore), by default the embedded Grafeo database.

mod config;
mod convert;
mod error;
mod grpc;

use std::future::Future;
use std::sync::Arc;

use tonic::service::Routes;
use umcp_authz::{AuthClient, AuthLayer, Verifier};
use umcp_proto::graph::v1::graph_service_server::GraphServiceServer;
use umcp_store::GraphStore;
use umcp_store::grafeo::GrafeoStore;

pub use config::GraphConfig;
pub use error::GraphError;
pub use grpc::GraphGrpc;

/// Serves the graph service on `listener` until `shutdown` completes, verifying tokens with the
/// auth service of `config.auth`. Opens (and on return closes) the store in `config.data_dir`.
///
/// # Errors
/// When the verifier cannot start, the store cannot be opened (e.g. another process holds its
/// lock) or the server fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = AuthClient::start(&config.auth)?;
    let verifier = Arc::clone(&auth.verifier);
    run_with(listener, config, verifier, shutdown).await
}

/// [`run`] with the token verifier given (tests bring their own issuer).
///
/// # Errors
/// When the store cannot be opened or the server fails.
pub async fn run_with(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = GrafeoStore::open(config.store()).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open the graph store in {}: {e}",
            config.data_dir.display()
        )
    })?;
    let store: Arc<dyn GraphStore> = Arc::new(store);
    tracing::info!(backend = store.backend(), data_dir = %config.data_dir.display(), "graph service ready");
    serve(listener, store, verifier, shutdown).await
}

/// Serves the graph service over an already opened store (tests use it with other backends).
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn GraphStore>,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<GraphServiceServer<GraphGrpc>>()
        .await;
    let svc = GraphServiceServer::new(GraphGrpc::new(store))
        .max_decoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES);
    let routes = Routes::new(health).add_service(svc);
    umcp_rpc::serve_with_auth(
        "graph",
        listener,
        routes,
        AuthLayer::new(verifier),
        shutdown,
    )
    .await?;
    Ok(())
}
