//! Between the wire and the domain: request filters in, reports and checkpoints out. No
//! logic beyond checking what the domain types cannot express (enum values, timestamps).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use umcp_proto::audit::v1::{
    EventType, ExportCheckpointResponse, OutcomeFilter, QueryRequest, QueryResponse,
    RecordResponse, TailRequest, VerifyResponse,
};
use umcp_proto::common::v1::PageResponse;

use crate::error::AuditError;
use crate::index::{Filter, OutcomeMatch};
use crate::log::{Page, RecordOutcome};
use crate::signed::{CheckpointKey, SignedCheckpoint};
use crate::verify::Report;

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

pub(crate) fn query_filter(request: &QueryRequest) -> Result<Filter, AuditError> {
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
pub(crate) fn tail_filter(request: &TailRequest) -> Result<Filter, AuditError> {
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

pub(crate) fn record_response(outcome: RecordOutcome) -> RecordResponse {
    RecordResponse {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        last_sequence: outcome.last_sequence,
    }
}

pub(crate) fn query_response(page: Page) -> QueryResponse {
    QueryResponse {
        events: page.events,
        page: Some(PageResponse {
            next_page_token: page.next_token.unwrap_or_default(),
        }),
    }
}

pub(crate) fn verify_response(report: &Report) -> VerifyResponse {
    VerifyResponse {
        ok: report.problem.is_none(),
        events_checked: report.checked,
        first_bad_sequence: report.problem.as_ref().map_or(0, |p| p.sequence),
        problem: report
            .problem
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        head_sequence: report.head_sequence,
        // An empty log has no head to name (its hash would be the genesis zeros).
        head_hash: if report.head_sequence == 0 {
            String::new()
        } else {
            hex::encode(report.head_hash)
        },
    }
}

pub(crate) fn checkpoint_response(
    cp: &SignedCheckpoint,
    key: &CheckpointKey,
) -> ExportCheckpointResponse {
    ExportCheckpointResponse {
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
    }
}
