//! The audit service's one error type and its exhaustive mapping to gRPC status codes.

use tonic::{Code, Status};
use umcp_rpc::status::{invalid_argument, with_reason};

/// Why an audit call failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The request is malformed; the field path and what is allowed.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Path of the offending field, e.g. `events[3].details["password"]`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The writer's queue is full: the service is saturated; retry with backoff.
    #[error("the audit log is saturated; retry with backoff")]
    Overloaded,
    /// A `Tail` consumer fell too far behind the live log.
    #[error(
        "tail consumer fell more than {buffer} events behind; reconnect with after_sequence={last_sent}"
    )]
    TailLagged {
        /// Size of the per-stream buffer.
        buffer: usize,
        /// Last sequence delivered on the stream.
        last_sent: u64,
    },
    /// The log failed verification (at start-up); writes are refused so evidence is kept.
    #[error(
        "the audit log failed verification at sequence {first_bad} ({problem}); writes are \
         refused until an operator restores the log (see Verify)"
    )]
    Damaged {
        /// First bad sequence.
        first_bad: u64,
        /// What is wrong.
        problem: String,
    },
    /// Storage failed while writing (e.g. fsync error); the service must be restarted.
    #[error("the audit log storage failed; the service must be restarted")]
    StorageFailed,
    /// Nothing to return yet (e.g. no signed checkpoint).
    #[error("{0}")]
    NotFound(String),
    /// The service is shutting down.
    #[error("the audit service is shutting down")]
    ShuttingDown,
    /// Unexpected internal failure; the detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuditError {
    /// An invalid-argument error for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Self {
        let message = err.to_string();
        match err {
            AuditError::InvalidArgument { field, message } => invalid_argument(&field, &message),
            AuditError::Overloaded => {
                with_reason(Code::ResourceExhausted, "audit_overloaded", message)
            }
            AuditError::TailLagged { .. } => {
                with_reason(Code::ResourceExhausted, "tail_consumer_too_slow", message)
            }
            AuditError::Damaged { .. } => with_reason(Code::DataLoss, "audit_log_damaged", message),
            AuditError::NotFound(_) => Status::not_found(message),
            AuditError::StorageFailed | AuditError::ShuttingDown => {
                with_reason(Code::Unavailable, "audit_unavailable", message)
            }
            AuditError::Internal(detail) => {
                // The detail may name files; it stays in the log.
                tracing::error!(detail, "audit internal error");
                Status::internal("internal error in the audit service")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code_and_internals_stay_inside() {
        let cases = [
            (
                AuditError::invalid("events", "1 to 1000"),
                Code::InvalidArgument,
            ),
            (AuditError::Overloaded, Code::ResourceExhausted),
            (
                AuditError::TailLagged {
                    buffer: 1,
                    last_sent: 2,
                },
                Code::ResourceExhausted,
            ),
            (
                AuditError::Damaged {
                    first_bad: 3,
                    problem: "edited".into(),
                },
                Code::DataLoss,
            ),
            (AuditError::NotFound("none".into()), Code::NotFound),
            (AuditError::StorageFailed, Code::Unavailable),
            (AuditError::ShuttingDown, Code::Unavailable),
            (AuditError::Internal("/secret/path".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("/secret/path"));
        }
    }
}
