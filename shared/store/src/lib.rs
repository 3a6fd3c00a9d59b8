//! The `GraphStore` trait, its domain types and error, input validation, the parser-level
//! read-only check for Cypher, the embedded Grafeo backend and the Neo4j backend.
//!
//! Callers hold an `Arc<dyn GraphStore>`; every backend validates input with [`validate`] before
//! writing anything and refuses writes in queries with [`readonly::check`].

#![warn(missing_docs)]

pub mod admission;
mod error;
pub mod grafeo;
pub mod limits;
mod model;
pub mod neo4j;
pub mod readonly;
mod store;
pub mod validate;

pub use error::StoreError;
pub use model::{
    DeleteBatch, DeleteCounts, Metrics, Node, NodeInput, Path, Properties, QueryResult, ReadQuery,
    RelInput, RelRef, Relationship, Timestamp, UpsertBatch, UpsertCounts, Value,
};
pub use store::GraphStore;
