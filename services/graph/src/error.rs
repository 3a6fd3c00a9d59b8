//! The graph service's one error type and its exhaustive mapping to gRPC status codes.

use tonic::{Code, Status};
use umcp_rpc::status::{invalid_argument, with_reason};
use umcp_store::StoreError;

/// Why a graph call failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The request could not be decoded into domain types (before reaching the store).
    #[error("{field}: {message}")]
    BadRequest {
        /// Path of the offending field.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GraphError {
    pub(crate) fn bad_request(field: &str, message: impl Into<String>) -> Self {
        GraphError::BadRequest {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<GraphError> for Status {
    fn from(err: GraphError) -> Self {
        match err {
            GraphError::BadRequest { field, message } => invalid_argument(&field, &message),
            GraphError::Store(store) => store_status(store),
        }
    }
}

fn store_status(err: StoreError) -> Status {
    let message = err.to_string();
    match err {
        StoreError::InvalidInput { field, message } => invalid_argument(&field, &message),
        StoreError::MissingEndpoint { .. } => {
            with_reason(Code::NotFound, "relationship_endpoint_not_found", message)
        }
        StoreError::NodeHasRelationships { .. } => {
            with_reason(Code::FailedPrecondition, "node_has_relationships", message)
        }
        StoreError::WriteInReadOnlyQuery { .. } => with_reason(
            Code::PermissionDenied,
            "write_in_read_only_query",
            format!("{message}; Query only reads (use Upsert and Delete to change the graph)"),
        ),
        StoreError::ConstraintViolated(_) => {
            with_reason(Code::FailedPrecondition, "constraint_violated", message)
        }
        StoreError::Syntax { .. } | StoreError::QueryFailed(_) => {
            invalid_argument("cypher", &message)
        }
        StoreError::DeadlineExceeded(reason) => {
            Status::deadline_exceeded(format!("deadline exceeded: {reason}"))
        }
        StoreError::ResourceExhausted(reason) => with_reason(
            Code::ResourceExhausted,
            "query_memory_budget_exceeded",
            reason,
        ),
        // The detail never reaches the caller (the adapter has logged it).
        StoreError::Unavailable(_) => {
            Status::unavailable("the graph store is unavailable; retry later")
        }
        StoreError::Internal(_) => Status::internal("internal error in the graph service"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: StoreError) -> Code {
        Status::from(GraphError::Store(e)).code()
    }

    #[test]
    fn every_store_error_has_its_code() {
        assert_eq!(
            code(StoreError::invalid("nodes[0].key", "bad")),
            Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::MissingEndpoint {
                field: "f".into(),
                key: "k".into()
            }),
            Code::NotFound
        );
        assert_eq!(
            code(StoreError::NodeHasRelationships {
                key: "k".into(),
                count: 1
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::ConstraintViolated(
                "Node(1) already exists".into()
            )),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::WriteInReadOnlyQuery {
                clause: "CREATE".into(),
                line: None,
                column: None
            }),
            Code::PermissionDenied
        );
        assert_eq!(
            code(StoreError::Syntax {
                message: "x".into(),
                line: None,
                column: None
            }),
            Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::QueryFailed("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::DeadlineExceeded("x".into())),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(StoreError::ResourceExhausted("x".into())),
            Code::ResourceExhausted
        );
        assert_eq!(code(StoreError::Unavailable("x".into())), Code::Unavailable);
        assert_eq!(code(StoreError::Internal("x".into())), Code::Internal);
    }

    #[test]
    fn internal_details_are_not_leaked() {
        let status = Status::from(GraphError::Store(StoreError::Internal(
            "/var/lib/secret/wal_0001.log corrupted".into(),
        )));
        assert!(!status.message().contains("secret"), "{}", status.message());
        let status = Status::from(GraphError::Store(StoreError::Unavailable(
            "lock held by pid 7".into(),
        )));
        assert!(!status.message().contains("pid"), "{}", status.message());
    }
}
