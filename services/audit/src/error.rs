//! The audit service's one error type, named by cause, and its exhaustive mapping to gRPC status
//! codes.
//!
//! The mapping has no side effects: details that must not reach a caller (file names, I/O
//! errors) are logged by the domain where the error leaves it (`AuditError::logged`), never
//! in the conversion.

use tonic::{Code, Status};
use umcp_rpc::status::{invalid_argument, with_reason};

/// Why an audit call failed, or why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The request is malformed; the field path and what is allowed.
    #[error("{field}: {message}")]
    BadRequest {
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
    /// No Ed25519-signed checkpoint exists yet.
    #[error("no signed checkpoint yet (the log failed verification before one was signed)")]
    NoSignedCheckpoint,
    /// The service is shutting down.
    #[error("the audit service is shutting down")]
    ShuttingDown,
    /// Reading or decoding the log on disk failed; the detail is logged, never returned.
    #[error("reading the audit log failed: {0}")]
    ReadFailed(String),
    /// A blocking task died (panicked or was cancelled); the detail is logged, never returned.
    #[error("an audit task failed: {0}")]
    TaskFailed(String),
    /// Start-up: the chain key, the signing key or the log could not be opened.
    #[error("{0}")]
    Open(String),
    /// Start-up: the token verifier could not start.
    #[error(transparent)]
    AuthClient(#[from] umcp_authz::runtime::AuthClientError),
    /// Start-up: the Redis settings (shared keys and revocations) are invalid.
    #[error("redis: {0}")]
    Redis(String),
    /// The gRPC server could not start or failed while serving.
    #[error("{0}")]
    Serve(String),
}

impl AuditError {
    /// A bad-request error for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Logs the detail a caller is never shown (reading or task failures), then returns the
    /// error unchanged. The domain calls it once, where an error leaves it for the adapter.
    #[must_use]
    pub(crate) fn logged(self) -> Self {
        if let Self::ReadFailed(detail) | Self::TaskFailed(detail) = &self {
            tracing::error!(detail, "audit internal error");
        }
        self
    }
}

impl From<umcp_rpc::ServeError> for AuditError {
    fn from(err: umcp_rpc::ServeError) -> Self {
        Self::Serve(err.to_string())
    }
}

/// What a caller is told about a failure inside the service.
const INTERNAL: &str = "internal error in the audit service";

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Self {
        let message = err.to_string();
        match err {
            AuditError::BadRequest { field, message } => invalid_argument(&field, &message),
            AuditError::Overloaded => {
                with_reason(Code::ResourceExhausted, "audit_overloaded", message)
            }
            AuditError::TailLagged { .. } => {
                with_reason(Code::ResourceExhausted, "tail_consumer_too_slow", message)
            }
            AuditError::Damaged { .. } => with_reason(Code::DataLoss, "audit_log_damaged", message),
            AuditError::NoSignedCheckpoint => Status::not_found(message),
            AuditError::StorageFailed | AuditError::ShuttingDown => {
                with_reason(Code::Unavailable, "audit_unavailable", message)
            }
            // The details may name files; they stay in the log.
            AuditError::ReadFailed(_) | AuditError::TaskFailed(_) => Status::internal(INTERNAL),
            // Start-up failures never reach a caller; mapped so the match stays exhaustive.
            AuditError::Open(_)
            | AuditError::AuthClient(_)
            | AuditError::Redis(_)
            | AuditError::Serve(_) => Status::internal(INTERNAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of `err`, checked not to carry the secret path some variants hold.
    fn status(err: AuditError) -> Status {
        let status = Status::from(err);
        assert!(!status.message().contains("/secret/path"), "{status:?}");
        status
    }

    #[test]
    fn bad_request_is_invalid_argument_naming_the_field() {
        let status = status(AuditError::invalid("events", "1 to 1000"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("events"), "{status:?}");
    }

    #[test]
    fn overloaded_is_resource_exhausted() {
        assert_eq!(
            status(AuditError::Overloaded).code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn tail_lagged_is_resource_exhausted_naming_the_resume_point() {
        let status = status(AuditError::TailLagged {
            buffer: 1,
            last_sent: 2,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("after_sequence=2"), "{status:?}");
    }

    #[test]
    fn damaged_is_data_loss() {
        let err = AuditError::Damaged {
            first_bad: 3,
            problem: "edited".into(),
        };
        assert_eq!(status(err).code(), Code::DataLoss);
    }

    #[test]
    fn storage_failed_is_unavailable() {
        assert_eq!(status(AuditError::StorageFailed).code(), Code::Unavailable);
    }

    #[test]
    fn no_signed_checkpoint_is_not_found() {
        assert_eq!(
            status(AuditError::NoSignedCheckpoint).code(),
            Code::NotFound
        );
    }

    #[test]
    fn shutting_down_is_unavailable() {
        assert_eq!(status(AuditError::ShuttingDown).code(), Code::Unavailable);
    }

    #[test]
    fn read_failed_is_internal_without_its_detail() {
        let err = AuditError::ReadFailed("/secret/path: bad".into());
        assert_eq!(status(err).code(), Code::Internal);
    }

    #[test]
    fn task_failed_is_internal_without_its_detail() {
        let err = AuditError::TaskFailed("/secret/path: panicked".into());
        assert_eq!(status(err).code(), Code::Internal);
    }

    #[test]
    fn open_is_internal_without_its_detail() {
        let err = AuditError::Open("cannot read /secret/path".into());
        assert_eq!(status(err).code(), Code::Internal);
    }

    #[test]
    fn auth_client_is_internal_without_its_detail() {
        let err = AuditError::from(umcp_authz::runtime::AuthClientError::Url(
            "/secret/path".into(),
        ));
        assert_eq!(status(err).code(), Code::Internal);
    }

    #[test]
    fn serve_is_internal_without_its_detail() {
        let err = AuditError::Serve("grpc server failed: /secret/path".into());
        assert_eq!(status(err).code(), Code::Internal);
    }
}
