//! The gRPC adapter: decode the request, call the store, encode the answer or map the error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument;
use umcp_proto::graph::v1 as gpb;
use umcp_proto::graph::v1::graph_service_server::GraphService;
use umcp_store::{GraphStore, ReadQuery, StoreError, validate};

use crate::convert;
use crate::error::GraphError;

/// `GraphService` over any [`GraphStore`].
#[derive(Debug, Clone)]
pub struct GraphGrpc {
    store: Arc<dyn GraphStore>,
}

impl GraphGrpc {
    /// Serves `store`.
    pub fn new(store: Arc<dyn GraphStore>) -> Self {
        Self { store }
    }
}

/// The deadline handed to the store: the caller's `grpc-timeout`, less a small margin. tonic
/// (client and server alike) turns an expired `grpc-timeout` into CANCELLED, so the store must
/// answer DEADLINE_EXCEEDED a little before either side's timer fires.
fn store_deadline<T>(request: &Request<T>) -> Option<Instant> {
    let now = Instant::now();
    let deadline = umcp_rpc::deadline::of(request)?;
    let budget = deadline.saturating_duration_since(now);
    let margin = (budget / 10).min(Duration::from_millis(50));
    Some(deadline.checked_sub(margin).unwrap_or(now))
}

/// Logs the failures whose detail the caller never sees (it may name files or engine internals),
/// here in the adapter so the `Status` mapping stays free of side effects.
/// The trace span of one store operation (nothing when traces are not exported).
fn store_span(op: &'static str) -> tracing::Span {
    if umcp_telemetry::trace::exporting() {
        tracing::info_span!(
            "store",
            otel.name = %format_args!("store.{op}"),
            otel.kind = "client",
            db.operation = op,
        )
    } else {
        tracing::Span::none()
    }
}

fn store_failed(err: StoreError) -> GraphError {
    match &err {
        StoreError::Unavailable(detail) => tracing::warn!(detail, "graph store unavailable"),
        StoreError::Internal(detail) => tracing::error!(detail, "graph store internal error"),
        _ => {}
    }
    GraphError::Store(err)
}

#[tonic::async_trait]
impl GraphService for GraphGrpc {
    async fn upsert(
        &self,
        request: Request<gpb::UpsertRequest>,
    ) -> Result<Response<gpb::UpsertResponse>, Status> {
        let batch = convert::upsert_from_proto(request.into_inner())?;
        let (nodes, rels) = (batch.nodes.len(), batch.rels.len());
        let counts = self
            .store
            .upsert(batch)
            .instrument(store_span("upsert"))
            .await
            .map_err(store_failed)?;
        tracing::info!(
            nodes,
            rels,
            nodes_created = counts.nodes_created,
            nodes_updated = counts.nodes_updated,
            rels_created = counts.rels_created,
            rels_updated = counts.rels_updated,
            "graph upsert"
        );
        Ok(Response::new(convert::upsert_to_proto(counts)))
    }

    async fn query(
        &self,
        request: Request<gpb::QueryRequest>,
    ) -> Result<Response<gpb::QueryResponse>, Status> {
        let started = Instant::now();
        let deadline = store_deadline(&request);
        // The auth layer has put the verified principal here; its subject is the admission key.
        let caller = Some(umcp_authz::principal(&request)?.user_id.clone());
        let req = request.into_inner();
        let row_limit = validate::row_limit(req.row_limit).map_err(GraphError::from)?;
        let query = ReadQuery {
            cypher: req.cypher,
            params: convert::params_from_proto(req.parameters)?,
            row_limit,
            deadline,
            caller,
        };
        let result = self
            .store
            .query(query)
            .instrument(store_span("query"))
            .await
            .map_err(store_failed)?;
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(
            rows = result.rows.len(),
            truncated = result.truncated,
            elapsed_micros = elapsed,
            "graph query"
        );
        Ok(Response::new(convert::query_to_proto(result, elapsed)))
    }

    async fn delete(
        &self,
        request: Request<gpb::DeleteRequest>,
    ) -> Result<Response<gpb::DeleteResponse>, Status> {
        let batch = convert::delete_from_proto(request.into_inner());
        let counts = self
            .store
            .delete(batch)
            .instrument(store_span("delete"))
            .await
            .map_err(store_failed)?;
        tracing::info!(
            nodes_deleted = counts.nodes_deleted,
            rels_deleted = counts.rels_deleted,
            not_found = counts.not_found,
            "graph delete"
        );
        Ok(Response::new(convert::delete_to_proto(counts)))
    }

    async fn get_metrics(
        &self,
        _request: Request<gpb::GetMetricsRequest>,
    ) -> Result<Response<gpb::GetMetricsResponse>, Status> {
        let metrics = self
            .store
            .metrics()
            .instrument(store_span("metrics"))
            .await
            .map_err(store_failed)?;
        Ok(Response::new(convert::metrics_to_proto(metrics)))
    }
}
