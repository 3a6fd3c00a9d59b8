//! The one error type of the auth domain and its exhaustive mapping to `tonic::Status`.

use std::time::Duration;

use tonic::{Code, Status};
use umcp_store::StoreError;

/// The message of every failed login, whatever the reason (unknown user, wrong password,
/// disabled account), so the answer never tells which usernames exist.
pub const INVALID_CREDENTIALS: &str = "invalid username or password";

/// Why an auth operation failed. Each variant maps to exactly one gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A request field broke a rule; `message` says what is allowed.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Protobuf field path, e.g. `roles[1]`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No valid credentials (token, password, refresh token or API key).
    #[error("{0}")]
    Unauthenticated(String),
    /// A presented refresh token had already been rotated: a stolen or replayed token. The
    /// session is revoked; the answer is UNAUTHENTICATED, flagged for the audit log.
    #[error("refresh token was already used; the session has been revoked")]
    RefreshReused,
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The thing named by the request does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// A unique name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Too many failed attempts; try again after `retry_after`.
    #[error("too many failed attempts; retry after {} s", retry_after_secs(*.retry_after))]
    Throttled {
        /// How long the caller has to wait.
        retry_after: Duration,
    },
    /// Storage or another dependency cannot serve right now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure. The text goes to logs, never to callers.
    #[error("internal error: {0}")]
    Internal(String),
}

fn retry_after_secs(d: Duration) -> u64 {
    // Round up: telling a client to come back a little early only earns another refusal.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl AuthError {
    /// Shorthand for [`AuthError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`AuthError::Unauthenticated`].
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated(message.into())
    }

    /// The failed-login answer.
    #[must_use]
    pub fn invalid_credentials() -> Self {
        Self::Unauthenticated(INVALID_CREDENTIALS.into())
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::DeadlineExceeded(m) => {
                tracing::warn!(error = %m, "auth store unavailable");
                Self::Unavailable("the auth store is unavailable; retry later".into())
            }
            // Everything else means the service built a bad store request: a bug.
            other => Self::Internal(format!("store: {other}")),
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidArgument { field, message } => {
                umcp_rpc::status::invalid_argument(&field, &message)
            }
            AuthError::Unauthenticated(m) => Status::unauthenticated(m),
            AuthError::RefreshReused => {
                let mut status = Status::unauthenticated(
                    "refresh token was already used; the session has been revoked",
                );
                status.metadata_mut().insert(
                    umcp_audit_client::VIOLATION_HEADER,
                    tonic::metadata::MetadataValue::from_static("refresh_token_reuse"),
                );
                status
            }
            AuthError::PermissionDenied(m) => Status::permission_denied(m),
            AuthError::NotFound(m) => Status::not_found(m),
            AuthError::AlreadyExists(m) => Status::already_exists(m),
            AuthError::Throttled { retry_after } => {
                let secs = retry_after_secs(retry_after);
                let mut status = Status::new(
                    Code::ResourceExhausted,
                    format!("too many failed attempts; retry after {secs} s"),
                );
                // A decimal number is always a valid ASCII metadata value.
                if let Ok(v) = secs.to_string().parse() {
                    status.metadata_mut().insert("retry-after", v);
                }
                status
            }
            AuthError::Unavailable(m) => Status::unavailable(m),
            AuthError::Internal(m) => {
                tracing::error!(error = %m, "auth internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code_and_internals_stay_hidden() {
        let cases = [
            (AuthError::invalid("roles[0]", "x"), Code::InvalidArgument),
            (AuthError::invalid_credentials(), Code::Unauthenticated),
            (
                AuthError::PermissionDenied("no".into()),
                Code::PermissionDenied,
            ),
            (AuthError::NotFound("no".into()), Code::NotFound),
            (AuthError::AlreadyExists("no".into()), Code::AlreadyExists),
            (
                AuthError::Throttled {
                    retry_after: Duration::from_millis(1500),
                },
                Code::ResourceExhausted,
            ),
            (AuthError::Unavailable("later".into()), Code::Unavailable),
            (AuthError::Internal("secret path /x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("/x"));
        }
        let status = Status::from(AuthError::Throttled {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        let status = Status::from(AuthError::invalid("username", "too long"));
        assert_eq!(status.message(), "username: too long");
    }

    #[test]
    fn store_errors_map_to_unavailable_or_internal() {
        assert!(matches!(
            AuthError::from(StoreError::Unavailable("disk".into())),
            AuthError::Unavailable(_)
        ));
        assert!(matches!(
            AuthError::from(StoreError::invalid("k", "bad")),
            AuthError::Internal(_)
        ));
    }
}
