//! The one error type of every `GraphStore` backend.

/// Why a store operation failed. Each variant maps to exactly one gRPC code in the graph service,
/// so backends must pick the precise variant rather than falling back to `Internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// The request broke a rule (identifier, property value, limit). `field` is a path into the
    /// request such as `nodes[3].key`; `message` says what is wrong and what is allowed.
    #[error("{field}: {message}")]
    InvalidInput {
        /// Path of the offending field in the request.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A relationship endpoint exists neither in the store nor in the same request.
    #[error("{field}: node `{key}` does not exist (create it in the same request or before)")]
    MissingEndpoint {
        /// Path of the endpoint field, e.g. `relationships[0].end_key`.
        field: String,
        /// The missing node key.
        key: String,
    },
    /// A node to delete still has relationships and `detach` was not set.
    #[error(
        "node `{key}` still has {count} relationship(s); delete them in the same request or set detach"
    )]
    NodeHasRelationships {
        /// The node key.
        key: String,
        /// How many relationships it still has.
        count: u64,
    },
    /// A query tried to write (or read local files) through the read-only query path.
    #[error("{clause} is not allowed in a read-only query{}", position_suffix(*.line, *.column))]
    WriteInReadOnlyQuery {
        /// The refused clause, e.g. `CREATE`, `LOAD CSV`, `CALL db.foo`.
        clause: String,
        /// 1-based line of the clause when the parser knows it.
        line: Option<u32>,
        /// 1-based column of the clause when the parser knows it.
        column: Option<u32>,
    },
    /// The query text is not valid openCypher (or uses something the engine does not support).
    #[error("invalid query{}: {message}", position_suffix(*.line, *.column))]
    Syntax {
        /// The engine's message.
        message: String,
        /// 1-based line, when known.
        line: Option<u32>,
        /// 1-based column, when known.
        column: Option<u32>,
    },
    /// The write broke a constraint of the database (e.g. one an operator added to a Neo4j
    /// database); the message is the database's.
    #[error("constraint violated: {0}")]
    ConstraintViolated(String),
    /// The query is valid but failed while running for a reason the caller can fix (a type
    /// error, a missing parameter). The message is the engine's.
    #[error("query failed: {0}")]
    QueryFailed(String),
    /// The caller's deadline (or the backend's query time cap) passed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The query needed more memory than its budget (the isolated run was stopped).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The backend cannot serve requests right now (closed, overloaded, storage unreachable).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected engine failure. The text is for logs, never for callers.
    #[error("internal store error: {0}")]
    Internal(String),
}

fn position_suffix(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

impl StoreError {
    /// Shorthand for [`StoreError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn messages_name_the_field_and_position() {
        let e = StoreError::invalid("nodes[3].key", "must be 1 to 64 characters");
        assert_eq!(e.to_string(), "nodes[3].key: must be 1 to 64 characters");
        let e = StoreError::WriteInReadOnlyQuery {
            clause: "CREATE".into(),
            line: Some(2),
            column: Some(5),
        };
        assert_eq!(
            e.to_string(),
            "CREATE is not allowed in a read-only query at line 2, column 5"
        );
        let e = StoreError::Syntax {
            message: "Expected RParen".into(),
            line: Some(1),
            column: Some(10),
        };
        assert_eq!(
            e.to_string(),
            "invalid query at line 1, column 10: Expected RParen"
        );
    }
}
