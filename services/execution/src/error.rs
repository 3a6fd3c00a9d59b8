//! The one error type of the service, and its exhaustive mapping to gRPC status codes.

use tonic::{Code, Status};

/// Everything a request can fail with. Messages of client errors say what was wrong and what
/// is allowed; internal errors are logged in full and answered with a generic message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Every sandbox is busy and this call cannot wait (a full queue, or an expected wait
    /// longer than its deadline allows): RESOURCE_EXHAUSTED with `retry-after` (whole seconds,
    /// at least 1).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("the request was cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ExecError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

impl From<ExecError> for Status {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::InvalidArgument(m) => Status::new(Code::InvalidArgument, m),
            ExecError::ResourceExhausted(m) => Status::new(Code::ResourceExhausted, m),
            ExecError::Busy {
                message,
                retry_after,
            } => {
                let mut status = Status::new(Code::ResourceExhausted, message);
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                status
                    .metadata_mut()
                    .insert("retry-after", tonic::metadata::MetadataValue::from(secs));
                status
            }
            ExecError::FailedPrecondition(m) => Status::new(Code::FailedPrecondition, m),
            ExecError::DeadlineExceeded(m) => Status::new(Code::DeadlineExceeded, m),
            ExecError::Unavailable(m) => Status::new(Code::Unavailable, m),
            ExecError::Unauthenticated(m) => Status::new(Code::Unauthenticated, m),
            ExecError::Cancelled => Status::new(Code::Cancelled, "the request was cancelled"),
            ExecError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::new(Code::Internal, "internal error in the execution service")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_are_not_sent_to_clients() {
        let status = Status::from(ExecError::Internal("open /secret/path: EACCES".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/secret"));
        assert_eq!(
            Status::from(ExecError::invalid("bad")).code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn busy_is_resource_exhausted_with_retry_after_in_whole_seconds() {
        let status = Status::from(ExecError::Busy {
            message: "all busy".into(),
            retry_after: std::time::Duration::from_millis(1200),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().ok()),
            Some(Some("2"))
        );
        let short = Status::from(ExecError::Busy {
            message: "x".into(),
            retry_after: std::time::Duration::from_millis(3),
        });
        assert_eq!(
            short.metadata().get("retry-after").map(|v| v.to_str().ok()),
            Some(Some("1"))
        );
    }
}
