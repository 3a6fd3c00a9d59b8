//! The one error type of the auth domain and its exhaustive mapping to `tonic::Status`.

use std::time::Duration;

use tonic::{Code, Status};
use umcp_store::StoreError;

/// The message of every failed login, whatever the reason (unknown user, wrong password,
/// disabled account), so the answer never tells which usernames exist.
pub const INVALID_CREDENTIALS: &str = "invalid username or password";

/// The message of [`AuthError::RefreshTokenReused`].
const REFRESH_REUSED: &str = "refresh token was already used; the session has been revoked";

/// Why an auth operation failed, named by cause. `From<AuthError> for Status` maps each
/// variant to exactly one gRPC code; it neither logs nor adds audit metadata (the adapter
/// logs unexpected failures, the audit layer records events from the method catalogue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A request field broke a rule; `message` says what is allowed.
    #[error("{field}: {message}")]
    InvalidInput {
        /// Protobuf field path, e.g. `roles[1]`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The presented credentials (token, password, refresh token or API key) were not
    /// accepted.
    #[error("{0}")]
    CredentialsRejected(String),
    /// A presented refresh token had already been rotated: a stolen or replayed token. The
    /// session is revoked.
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    NotPermitted(String),
    /// The thing named by the request does not exist (or is not visible to the caller).
    #[error("{0}")]
    DoesNotExist(String),
    /// A unique name is taken.
    #[error("{0}")]
    NameTaken(String),
    /// Too many failed attempts; try again after `retry_after`.
    #[error("too many failed attempts; retry after {} s", retry_after_secs(*.retry_after))]
    Throttled {
        /// How long the caller has to wait.
        retry_after: Duration,
    },
    /// Storage or another dependency cannot serve right now; retrying later may work.
    #[error("{0}")]
    DependencyUnavailable(String),
    /// A bug or an unexpected failure. The text goes to logs, never to callers.
    #[error("internal error: {0}")]
    Unexpected(String),
}

fn retry_after_secs(d: Duration) -> u64 {
    // Round up: telling a client to come back a little early only earns another refusal.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl AuthError {
    /// Shorthand for [`AuthError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`AuthError::CredentialsRejected`].
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::CredentialsRejected(message.into())
    }

    /// The failed-login answer.
    #[must_use]
    pub fn invalid_credentials() -> Self {
        Self::CredentialsRejected(INVALID_CREDENTIALS.into())
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) | StoreError::DeadlineExceeded(m) => {
                tracing::warn!(error = %m, "auth store unavailable");
                Self::DependencyUnavailable("the auth store is unavailable; retry later".into())
            }
            // Everything else means the service built a bad store request: a bug.
            other => Self::Unexpected(format!("store: {other}")),
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidInput { field, message } => {
                umcp_rpc::status::invalid_argument(&field, &message)
            }
            AuthError::CredentialsRejected(m) => Status::unauthenticated(m),
            AuthError::RefreshTokenReused => Status::unauthenticated(REFRESH_REUSED),
            AuthError::NotPermitted(m) => Status::permission_denied(m),
            AuthError::DoesNotExist(m) => Status::not_found(m),
            AuthError::NameTaken(m) => Status::already_exists(m),
            AuthError::Throttled { retry_after } => throttled(retry_after),
            AuthError::DependencyUnavailable(m) => Status::unavailable(m),
            // The detail may name files or store internals: it stays out of the answer.
            AuthError::Unexpected(_) => Status::internal("internal error"),
        }
    }
}

/// RESOURCE_EXHAUSTED with a `retry-after` (whole seconds, rounded up) for the client.
fn throttled(retry_after: Duration) -> Status {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(err: AuthError) -> Status {
        Status::from(err)
    }

    #[test]
    fn invalid_input_is_invalid_argument_naming_the_field() {
        let status = status(AuthError::invalid("username", "too long"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "username: too long");
    }

    #[test]
    fn rejected_credentials_are_unauthenticated() {
        let status = status(AuthError::invalid_credentials());
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), INVALID_CREDENTIALS);
    }

    #[test]
    fn reused_refresh_token_is_unauthenticated_without_audit_metadata() {
        let status = status(AuthError::RefreshTokenReused);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), AuthError::RefreshTokenReused.to_string());
        assert!(
            status
                .metadata()
                .get(umcp_audit_client::VIOLATION_HEADER)
                .is_none()
        );
    }

    #[test]
    fn not_permitted_is_permission_denied() {
        let status = status(AuthError::NotPermitted("no".into()));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "no");
    }

    #[test]
    fn does_not_exist_is_not_found() {
        assert_eq!(
            status(AuthError::DoesNotExist("no".into())).code(),
            Code::NotFound
        );
    }

    #[test]
    fn name_taken_is_already_exists() {
        assert_eq!(
            status(AuthError::NameTaken("taken".into())).code(),
            Code::AlreadyExists
        );
    }

    #[test]
    fn throttled_is_resource_exhausted_with_retry_after_rounded_up() {
        let status = status(AuthError::Throttled {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        assert!(status.message().contains("retry after 2 s"));
    }

    #[test]
    fn dependency_unavailable_is_unavailable() {
        assert_eq!(
            status(AuthError::DependencyUnavailable("later".into())).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn unexpected_is_internal_and_hides_the_detail() {
        let status = status(AuthError::Unexpected("secret path /x".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/x"), "{}", status.message());
    }

    #[test]
    fn store_errors_map_to_unavailable_or_unexpected() {
        assert!(matches!(
            AuthError::from(StoreError::Unavailable("disk".into())),
            AuthError::DependencyUnavailable(_)
        ));
        assert!(matches!(
            AuthError::from(StoreError::invalid("k", "bad")),
            AuthError::Unexpected(_)
        ));
    }
}
