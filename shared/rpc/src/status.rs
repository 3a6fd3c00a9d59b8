//! `tonic::Status` constructors that also carry the standard google.rpc error details, so
//! clients in any language can read which field was wrong and why without parsing messages.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Error domain in `google.rpc.ErrorInfo`.
pub const DOMAIN: &str = "umcp";

/// `INVALID_ARGUMENT` naming the offending `field` (a path like `nodes[3].key`), with
/// `description` saying what is allowed. The message is `"{field}: {description}"`.
#[must_use]
pub fn invalid_argument(field: &str, description: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// A status with a stable machine-readable `reason` (`google.rpc.ErrorInfo`).
#[must_use]
pub fn with_reason(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_a_bad_request_violation() {
        let status = invalid_argument("nodes[0].key", "letters, digits and '_' only");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "nodes[0].key: letters, digits and '_' only"
        );
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("bad request detail")
            .field_violations;
        assert_eq!(violations[0].field, "nodes[0].key");
    }

    #[test]
    fn reason_is_readable_from_error_info() {
        let status = with_reason(Code::PermissionDenied, "write_in_read_only_query", "no");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "write_in_read_only_query"
        );
    }
}
