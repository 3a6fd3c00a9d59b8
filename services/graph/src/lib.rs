//! `umcp-graph`: the knowledge-graph gRPC service (`umcp.graph.v1.GraphService`) over a
//! [`GraphStore`](umcp_store::GraphStore), by default the embedded Grafeo database.

mod cached;
mod config;
mod convert;
mod error;
mod grpc;

use std::future::Future;
use std::sync::Arc;

use umcp_authz::AuthClient;
use umcp_proto::graph::v1::graph_service_server::GraphServiceServer;
use umcp_store::GraphStore;
use umcp_store::grafeo::GrafeoStore;
use umcp_store::neo4j::Neo4jStore;

pub use umcp_rpc::Wiring;

pub use cached::CachedStore;
pub use config::GraphConfig;
pub use error::GraphError;
pub use grpc::GraphGrpc;

/// Serves the graph service on `listener` until `shutdown` completes, verifying tokens with the
/// auth service of `config.auth` and auditing through `config.audit`. Opens (and on return
/// closes) the store: Neo4j when `UMCP_NEO4J__URI` is set, else the embedded one in
/// `config.data_dir`.
///
/// # Errors
/// When the verifier cannot start, the store cannot be opened (e.g. another process holds its
/// lock) or the server fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = umcp_redis::Redis::connect(&config.redis).await?;
    let auth = AuthClient::start(&config.auth, shared).await?;
    let credentials = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn umcp_audit_client::TokenProvider>);
    let emitter = umcp_audit_client::start_emitter(&config.audit, credentials, "graph")?;
    let wiring = Wiring {
        verifier: Arc::clone(&auth.verifier),
        emitter,
    };
    serve(listener, config, wiring, shutdown).await
}

/// [`run`] with the verifier and emitter given: the entry tests use.
///
/// # Errors
/// When the store cannot be opened or the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store: Arc<dyn GraphStore> = match config.neo4j_store() {
        Some(neo4j) => {
            let uri = neo4j.uri.clone();
            let store = Neo4jStore::open(neo4j)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the neo4j store at {uri}: {e}"))?;
            tracing::info!(backend = store.backend(), uri = %uri, "graph store open");
            Arc::new(store)
        }
        None => {
            let store = GrafeoStore::open(config.store()).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the graph store in {}: {e}",
                    config.data_dir.display()
                )
            })?;
            tracing::info!(backend = store.backend(), data_dir = %config.data_dir.display(), "graph store open");
            Arc::new(store)
        }
    };
    serve_store(listener, store, config, wiring, shutdown).await
}

/// [`serve`] over a store that is already open (tests run two replicas over one store): wraps
/// it in a [`CachedStore`] with its own cache and Redis connection (`config.cache`,
/// `config.redis`).
///
/// # Errors
/// When the Redis settings are invalid or the server fails.
pub async fn serve_store(
    listener: tokio::net::TcpListener,
    store: Arc<dyn GraphStore>,
    config: GraphConfig,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let redis = umcp_redis::Redis::connect(&config.redis).await?;
    let shared = redis.is_some();
    let cache = umcp_cache::TwoTier::new("graph", config.cache.clone(), redis).await;
    let store: Arc<dyn GraphStore> = Arc::new(CachedStore::new(store, cache));
    tracing::info!(
        backend = store.backend(),
        cache = config.cache.enabled,
        shared_cache = shared,
        "graph service ready"
    );
    let svc = GraphServiceServer::new(GraphGrpc::new(store))
        .max_decoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES);
    wiring
        .server("graph")
        .add_service(svc)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
