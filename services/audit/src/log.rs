//! [`AuditLog`]: the domain API of the audit log, what the gRPC adapter calls. Its one
//! implementation is [`crate::store::FileLog`]; the adapter only ever sees this trait.

use std::pin::Pin;

use tokio_stream::Stream;
use umcp_proto::audit::v1::AuditEvent;

use crate::error::AuditError;
use crate::index::Filter;
use crate::signed::{CheckpointKey, SignedCheckpoint};
use crate::verify::Report;

/// The result of one `Record` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordOutcome {
    /// Events newly committed.
    pub accepted: u32,
    /// Events whose id was already stored (or repeated within the call).
    pub duplicates: u32,
    /// Sequence of the last committed event in the log after this call.
    pub last_sequence: u64,
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events, newest first.
    pub events: Vec<AuditEvent>,
    /// Token of the next page; `None` at the end.
    pub next_token: Option<String>,
}

/// The events of a `Tail`, in sequence order. It ends with an error when the consumer fell too
/// far behind ([`AuditError::TailLagged`]), at shutdown ([`AuditError::ShuttingDown`]) or when
/// reading history failed.
pub type TailEvents = Pin<Box<dyn Stream<Item = Result<AuditEvent, AuditError>> + Send>>;

/// The append-only, hash-chained audit log.
///
/// `tonic::async_trait` is the `async_trait` macro (re-exported by tonic, which this crate
/// uses anyway): the adapter holds the log as a trait object.
#[tonic::async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Validates and durably appends a batch; returns once it is on disk. An `event_id`
    /// already stored counts as a duplicate.
    ///
    /// # Errors
    /// Invalid events, a damaged or failed log, a saturated writer, shutdown.
    async fn record(&self, events: Vec<AuditEvent>) -> Result<RecordOutcome, AuditError>;

    /// One page of events matching `filter`, newest first, below the cursor in `token` (empty
    /// = from the newest). A `page_size` of 0 means the default page.
    ///
    /// # Errors
    /// A page size above the maximum, a token not returned by a query with these filters, or
    /// reading failed.
    async fn query(
        &self,
        filter: Filter,
        page_size: usize,
        token: &str,
    ) -> Result<Page, AuditError>;

    /// Events matching `filter` committed after `after_sequence` (0 = only events committed
    /// after this call), then every matching live commit. Commits never wait for the stream.
    fn tail(&self, filter: Filter, after_sequence: u64) -> TailEvents;

    /// Recomputes the chain over `from..=to` (0 = from the start / to the end, including both
    /// checkpoints) from the bytes on disk.
    ///
    /// # Errors
    /// A bad range, or reading failed.
    async fn verify(&self, from: u64, to: u64) -> Result<Report, AuditError>;

    /// The latest Ed25519-signed checkpoint and the key that signed it.
    ///
    /// # Errors
    /// [`AuditError::NoSignedCheckpoint`] before the first one (a log found damaged at
    /// start-up that never had one).
    fn signed_checkpoint(&self) -> Result<(SignedCheckpoint, &CheckpointKey), AuditError>;
}
