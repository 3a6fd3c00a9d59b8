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
}
