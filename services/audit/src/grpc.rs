//! The gRPC adapter: decode the request, call [`AuditLog`], encode the answer or map the error.
//! The permission table (Record = `audit:write`, the rest = `system:admin`) is enforced by the
//! auth layer before any of this runs.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use umcp_proto::audit::v1::audit_service_server::AuditService;
use umcp_proto::audit::v1::{
    AuditEvent, ExportCheckpointRequest, ExportCheckpointResponse, QueryRequest, QueryResponse,
    RecordRequest, RecordResponse, TailRequest, TailResponse, VerifyRequest, VerifyResponse,
};

use crate::convert;
use crate::log::AuditLog;

/// `AuditService` over any [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    log: Arc<dyn AuditLog>,
}

impl AuditGrpc {
    /// An adapter over `log`.
    #[must_use]
    pub fn new(log: Arc<dyn AuditLog>) -> Self {
        Self { log }
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<TailResponse, Status>> + Send>>;

/// A span per event that names its producer's span, children of it; they end when dropped.
fn commit_spans(events: &[AuditEvent]) -> Vec<tracing::Span> {
    if !umcp_telemetry::trace::exporting() {
        return Vec::new();
    }
    events
        .iter()
        .filter(|e| !e.trace_id.is_empty() && !e.span_id.is_empty())
        .map(|e| {
            let span = tracing::info_span!(
                "audit.commit",
                otel.kind = "internal",
                event_id = %e.event_id,
                action = %e.action,
            );
            umcp_telemetry::trace::follow(&span, &e.trace_id, &e.span_id);
            span
        })
        .collect()
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn record(
        &self,
        request: Request<RecordRequest>,
    ) -> Result<Response<RecordResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let events = request.into_inner().events;
        let count = events.len();
        // Each traced event's commit is a span of its producer's trace (events reach us in
        // batches, off the request's path, so the Record call itself starts a trace of its own).
        let _commits = commit_spans(&events);
        let outcome = self.log.record(events).await.inspect_err(|e| {
            tracing::debug!(caller = %caller.user_id, events = count, error = %e, "audit record refused");
        })?;
        Ok(Response::new(convert::record_response(outcome)))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let request = request.into_inner();
        let filter = convert::query_filter(&request)?;
        let page = request.page.unwrap_or_default();
        let size = usize::try_from(page.page_size).unwrap_or(usize::MAX);
        let result = self.log.query(filter, size, &page.page_token).await?;
        tracing::info!(caller = %caller.user_id, returned = result.events.len(), "audit log queried");
        Ok(Response::new(convert::query_response(result)))
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let request = request.into_inner();
        let filter = convert::tail_filter(&request)?;
        tracing::info!(caller = %caller.user_id, after = request.after_sequence, "audit tail started");
        let events = self.log.tail(filter, request.after_sequence);
        let stream = events.map(|item| {
            item.map(|event| TailResponse { event: Some(event) })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let request = request.into_inner();
        let report = self
            .log
            .verify(request.from_sequence, request.to_sequence)
            .await?;
        match &report.problem {
            None => {
                tracing::info!(caller = %caller.user_id, checked = report.checked, "audit log verified");
            }
            Some(p) => {
                tracing::error!(caller = %caller.user_id, first_bad_sequence = p.sequence, problem = %p, "audit log verification failed");
            }
        }
        Ok(Response::new(convert::verify_response(&report)))
    }

    async fn export_checkpoint(
        &self,
        request: Request<ExportCheckpointRequest>,
    ) -> Result<Response<ExportCheckpointResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let (cp, key) = self.log.signed_checkpoint()?;
        tracing::info!(
            caller = %caller.user_id,
            sequence = cp.sequence,
            key_id = %key.key_id(),
            "audit checkpoint exported"
        );
        Ok(Response::new(convert::checkpoint_response(&cp, key)))
    }
}
