//! `umcp-graph`: the knowledge-graph gRPC service (`umcp.graph.v1.GraphService`) over a
//! [`GraphStore`](umcp_store::GraphStore), by default the embedded Grafeo database.

mod config;
mod convert;
mod error;
mod grpc;

use std::future::Future;
use std::sync::Arc;

use tonic::service::Routes;
use umcp_audit_client::{AuditLayer, Emitter, Rule};
use umcp_authz::{AuthClient, AuthLayer, Verifier};
use umcp_proto::audit::v1::EventType;
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
    let credentials = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn umcp_audit_client::TokenProvider>);
    let emitter = umcp_audit_client::start_emitter(&config.audit, credentials, "graph")?;
    let verifier = Arc::clone(&auth.verifier);
    run_with_audit(listener, config, verifier, emitter, shutdown).await
}

/// [`run`] with the token verifier given (tests bring their own issuer), without auditing.
///
/// # Errors
/// When the store cannot be opened or the server fails.
pub async fn run_with(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let emitter = Emitter::new(None, "graph");
    run_with_audit(listener, config, verifier, emitter, shutdown).await
}

/// [`run_with`], emitting audit events through `emitter`.
///
/// # Errors
/// When the store cannot be opened or the server fails.
pub async fn run_with_audit(
    listener: tokio::net::TcpListener,
    config: GraphConfig,
    verifier: Arc<Verifier>,
    emitter: Emitter,
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
    serve(listener, store, verifier, emitter, shutdown).await
}

/// Serves the graph service over an already opened store (tests use it with other backends).
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn GraphStore>,
    verifier: Arc<Verifier>,
    emitter: Emitter,
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
    let mut auth = AuthLayer::new(verifier);
    if emitter.enabled() {
        auth = auth.observed(Arc::new(emitter.clone()));
    }
    let audit = AuditLayer::new(emitter, audit_rules());
    umcp_rpc::serve_with_auth_and("graph", listener, routes, auth, audit, shutdown).await?;
    Ok(())
}

/// What each RPC records. Writes are audited-critical: their event is durable before they run.
/// A permission error from `Query` can only be the read-only check (the auth layer answers
/// missing permissions before this layer), so it is a security violation.
fn audit_rules() -> Vec<(String, Rule)> {
    const SERVICE: &str = "/umcp.graph.v1.GraphService/";
    let query = Rule {
        violation_on: &[tonic::Code::PermissionDenied],
        ..Rule::after(EventType::GraphQuery, "query")
    };
    [
        ("Query", query),
        ("GetMetrics", Rule::after(EventType::DataRead, "metrics")),
        (
            "Upsert",
            Rule::critical(EventType::GraphUpsert, EventType::DataWrite, "upsert"),
        ),
        (
            "Delete",
            Rule::critical(EventType::DataDelete, EventType::DataDelete, "delete"),
        ),
    ]
    .into_iter()
    .map(|(method, rule)| (format!("{SERVICE}{method}"), rule))
    .collect()
}
