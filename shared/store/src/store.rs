//! The storage trait every backend implements.

use async_trait::async_trait;

use crate::error::StoreError;
use crate::model::{
    DeleteBatch, DeleteCounts, Metrics, QueryResult, ReadQuery, UpsertBatch, UpsertCounts,
};

/// A property graph whose nodes are identified by a unique `key`.
///
/// Object safe, so services hold an `Arc<dyn GraphStore>` and pick the backend from config.
/// Every method validates its input (see [`crate::validate`]) before touching data, so callers
/// may but need not validate first.
#[async_trait]
pub trait GraphStore: Send + Sync + std::fmt::Debug {
    /// Short backend name for logs and health output, e.g. `grafeo`.
    fn backend(&self) -> &'static str;

    /// Creates or merges nodes (by key: labels are added, properties merged, `Null` removes one)
    /// and relationships (at most one per type and ordered pair of nodes), all in one
    /// transaction. A relationship endpoint missing from both the store and the batch fails the
    /// whole batch with [`StoreError::MissingEndpoint`].
    async fn upsert(&self, batch: UpsertBatch) -> Result<UpsertCounts, StoreError>;

    /// Runs a read-only Cypher query. Writes are refused with
    /// [`StoreError::WriteInReadOnlyQuery`] before anything runs; at most `row_limit` rows are
    /// returned and `truncated` tells whether more existed; the deadline is honoured.
    async fn query(&self, query: ReadQuery) -> Result<QueryResult, StoreError>;

    /// Deletes relationships by (start, type, end), then nodes by key, in one transaction.
    /// A node that still has relationships (other than those deleted by the same batch) fails the
    /// batch with [`StoreError::NodeHasRelationships`] unless `detach` is set.
    async fn delete(&self, batch: DeleteBatch) -> Result<DeleteCounts, StoreError>;

    /// Node and relationship counts, per label and type, and the average degree.
    async fn metrics(&self) -> Result<Metrics, StoreError>;

    /// Cheap liveness check of the backend (for health reporting).
    async fn health(&self) -> Result<(), StoreError>;
}
