//! The gRPC adapter: decode requests, call [`AuditLog`], map errors. The permission table
//! (Record = `audit:write`, the rest = `system:admin`) is enforced by the auth layer before any
//! of this runs.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use umcp_proto::audit::v1::audit_service_server::AuditService;
use umcp_proto::audit::v1::{
    AuditEvent, EventType, ExportCheckpointRequest, ExportCheckpointResponse, OutcomeFilter,
    QueryRequest, QueryResponse, RecordRequest, RecordResponse, TailRequest, TailResponse,
    VerifyRequest, VerifyResponse,
};
use umcp_proto::common::v1::PageResponse;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::AuditError;
use crate::index::{Filter, OutcomeMatch};
use crate::store::AuditLog;

/// Events replayed per read while a `Tail` catches up.
const REPLAY_CHUNK: usize = 256;
/// Messages buffered between a `Tail` task and the transport.
const STREAM_BUFFER: usize = 64;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuditGrpc {
    log: Arc<AuditLog>,
}

impl AuditGrpc {
    /// An adapter over `log`.
    #[must_use]
    pub fn new(log: Arc<AuditLog>) -> Self {
        Self { log }
    }
}

fn timestamp_micros(
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Result<Option<i64>, AuditError> {
    match t {
        None => Ok(None),
        Some(t) if (0..1_000_000_000).contains(&t.nanos) => Ok(Some(
            t.seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(t.nanos / 1000)),
        )),
        Some(_) => Err(AuditError::invalid(field, "nanos must be 0..=999999999")),
    }
}

fn event_types(field: &str, types: &[i32]) -> Result<Vec<i32>, AuditError> {
    for (i, t) in types.iter().enumerate() {
        if matches!(EventType::try_from(*t), Ok(EventType::Unspecified) | Err(_)) {
            return Err(AuditError::invalid(
                format!("{field}[{i}]"),
                "one of the 17 EVENT_TYPE_* values",
            ));
        }
    }
    Ok(types.to_vec())
}

/// The `outcome` field, with the deprecated `failures_only` as an alias of FAILURE.
fn outcome(value: i32, failures_only: bool) -> Result<OutcomeMatch, AuditError> {
    match (OutcomeFilter::try_from(value), failures_only) {
        (Err(_), _) => Err(AuditError::invalid(
            "outcome",
            "one of OUTCOME_FILTER_UNSPECIFIED (any), OUTCOME_FILTER_SUCCESS, OUTCOME_FILTER_FAILURE",
        )),
        (Ok(OutcomeFilter::Success), true) => Err(AuditError::invalid(
            "failures_only",
            "contradicts outcome = OUTCOME_FILTER_SUCCESS; failures_only is deprecated, set \
             only outcome",
        )),
        (Ok(OutcomeFilter::Failure), _) | (Ok(OutcomeFilter::Unspecified), true) => {
            Ok(OutcomeMatch::Failure)
        }
        (Ok(OutcomeFilter::Success), false) => Ok(OutcomeMatch::Success),
        (Ok(OutcomeFilter::Unspecified), false) => Ok(OutcomeMatch::Any),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn filter(request: &QueryRequest) -> Result<Filter, AuditError> {
    let filter = Filter {
        event_types: event_types("event_types", &request.event_types)?,
        user_id: non_empty(&request.user_id),
        correlation_id: non_empty(&request.correlation_id),
        resource: non_empty(&request.resource),
        since_micros: timestamp_micros("since", request.since.as_ref())?,
        until_micros: timestamp_micros("until", request.until.as_ref())?,
        outcome: outcome(request.outcome, request.failures_only)?,
    };
    if let (Some(s), Some(u)) = (filter.since_micros, filter.until_micros)
        && s >= u
    {
        return Err(AuditError::invalid("until", "must be after since"));
    }
    Ok(filter)
}

/// `Query`'s filters without the time range (a tail runs in commit order, not event time).
fn tail_filter(request: &TailRequest) -> Result<Filter, AuditError> {
    Ok(Filter {
        event_types: event_types("event_types", &request.event_types)?,
        user_id: non_empty(&request.user_id),
        correlation_id: non_empty(&request.correlation_id),
        resource: non_empty(&request.resource),
        since_micros: None,
        until_micros: None,
        outcome: outcome(request.outcome, false)?,
    })
}

type TailStream = Pin<Box<dyn Stream<Item = Result<TailResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    async fn record(
        &self,
        request: Request<RecordRequest>,
    ) -> Result<Response<RecordResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let events = request.into_inner().events;
        let count = events.len();
        let outcome = self.log.record(events).await.inspect_err(|e| {
            tracing::debug!(caller = %caller.user_id, events = count, error = %e, "audit record refused");
        })?;
        Ok(Response::new(RecordResponse {
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            last_sequence: outcome.last_sequence,
        }))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let request = request.into_inner();
        let filter = filter(&request)?;
        let page = request.page.unwrap_or_default();
        let size = usize::try_from(page.page_size).unwrap_or(usize::MAX);
        let result = self.log.query(filter, size, &page.page_token).await?;
        tracing::info!(caller = %caller.user_id, returned = result.events.len(), "audit log queried");
        Ok(Response::new(QueryResponse {
            events: result.events,
            page: Some(PageResponse {
                next_page_token: result.next_token.unwrap_or_default(),
            }),
        }))
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let request = request.into_inner();
        let filter = tail_filter(&request)?;
        // Subscribe before reading history, so nothing committed in between is missed.
        let live = self.log.subscribe();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tracing::info!(caller = %caller.user_id, after = request.after_sequence, "audit tail started");
        let log = Arc::clone(&self.log);
        let stopping = log.stopping();
        // "Only new" means after the head at the time of this call, fixed before returning.
        let (after, replay) = match request.after_sequence {
            0 => (log.head(), false),
            after => (after, true),
        };
        tokio::spawn(async move {
            tokio::select! {
                () = run_tail(log, live, after, replay, filter, tx.clone()) => {}
                () = stopping => {
                    let _ = tx.send(Err(AuditError::ShuttingDown.into())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
                tracing::info!(caller = %caller.user_id, checked = report.checked, "audit log verified")
            }
            Some(p) => {
                tracing::error!(caller = %caller.user_id, first_bad_sequence = p.sequence, problem = %p, "audit log verification failed")
            }
        }
        Ok(Response::new(VerifyResponse {
            ok: report.problem.is_none(),
            events_checked: report.checked,
            first_bad_sequence: report.problem.as_ref().map_or(0, |p| p.sequence),
            problem: report
                .problem
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            head_sequence: report.head_sequence,
            head_hash: if report.head_sequence == 0 {
                String::new()
            } else {
                hex::encode(report.head_hash)
            },
        }))
    }

    async fn export_checkpoint(
        &self,
        request: Request<ExportCheckpointRequest>,
    ) -> Result<Response<ExportCheckpointResponse>, Status> {
        let caller = umcp_authz::principal(&request)?;
        let (cp, key) = self.log.signed_checkpoint().ok_or_else(|| {
            AuditError::NotFound(
                "no signed checkpoint yet (the log failed verification before one was signed)"
                    .into(),
            )
        })?;
        tracing::info!(
            caller = %caller.user_id,
            sequence = cp.sequence,
            key_id = %key.key_id(),
            "audit checkpoint exported"
        );
        Ok(Response::new(ExportCheckpointResponse {
            sequence: cp.sequence,
            hash: hex::encode(cp.hash),
            time: Some(prost_types::Timestamp {
                seconds: cp.seconds,
                // Below 10^9 by construction.
                nanos: i32::try_from(cp.nanos).unwrap_or(0),
            }),
            signature: URL_SAFE_NO_PAD.encode(cp.signature),
            public_key: key.public_key(),
            key_id: key.key_id().to_owned(),
        }))
    }
}

type Sink = mpsc::Sender<Result<TailResponse, Status>>;

/// Replays history after `after` (when `replay`), then forwards live commits after it; only
/// events matching `filter` are sent. Ends the stream with RESOURCE_EXHAUSTED when the
/// consumer falls more than the tail buffer behind: commits never wait for a reader. The
/// sequence it names to resume from is the last one examined, sent or filtered out.
async fn run_tail(
    log: Arc<AuditLog>,
    mut live: broadcast::Receiver<Arc<AuditEvent>>,
    after: u64,
    replay: bool,
    filter: Filter,
    tx: Sink,
) {
    let mut last = after;
    if replay {
        loop {
            // The index picks the matching records, so a narrow filter reads little.
            let (chunk, examined, at_head) =
                match log.read_after(filter.clone(), last, REPLAY_CHUNK).await {
                    Ok(read) => read,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            for event in chunk {
                if tx
                    .send(Ok(TailResponse { event: Some(event) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            last = examined;
            // Everything after `last` is in `live` (subscribed before the replay).
            if at_head {
                break;
            }
        }
    }
    loop {
        let event = tokio::select! {
            received = live.recv() => received,
            () = tx.closed() => return,
        };
        match event {
            Ok(event) if event.sequence <= last => {}
            Ok(event) => {
                last = event.sequence;
                if filter.matches(&event)
                    && tx
                        .send(Ok(TailResponse {
                            event: Some((*event).clone()),
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let error = AuditError::TailLagged {
                    buffer: log.tail_buffer(),
                    last_sent: last,
                };
                tracing::warn!(
                    last_sent = last,
                    "audit tail consumer too slow; ending its stream"
                );
                let _ = tx.send(Err(error.into())).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
