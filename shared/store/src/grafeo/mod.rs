//! The embedded backend: Grafeo (pure Rust, openCypher, write-ahead log).
//!
//! * Layout: `<data dir>/graph.grafeo` (the last checkpoint) and `graph.grafeo.wal/` (the log
//!   since then).
//! * Durability: the database is opened with `DurabilityMode::Sync`. Grafeo buffers a
//!   transaction's WAL records in the session and, at commit, writes them as one group closed by a
//!   commit marker; in Sync mode that group is flushed and `fsync`ed before `commit` returns.
//!   Recovery on open replays committed groups only. Grafeo logs (rather than returns) a failure
//!   to write the commit group, so writes are serialised here and the WAL record count is checked
//!   around each commit; a commit that did not reach the log is reported as unavailable.
//! * Checkpoints (snapshot into the file, then delete the log files it covers) run every
//!   [`GrafeoConfig::checkpoint_interval`] when something was written, on a thread of the store
//!   and under the write lock, instead of Grafeo's own timer: Grafeo takes the snapshot's epoch
//!   before it rotates the log, and with no commit in flight between the two steps the
//!   snapshot and the deleted files always agree. Writers wait for the checkpoint; readers do
//!   not. Closing the store also checkpoints.
//! * Identity: nodes carry their key in the reserved `key` property, with a property index on it
//!   (rebuilt on every open, since Grafeo keeps property indexes in memory).
//! * Blocking: Grafeo sessions block, so every call runs on tokio's blocking pool.
//! * Bounds of reads: Grafeo cannot cancel a running query and its own timeout is checked only
//!   between result chunks, so every read (queries and metrics) runs in a forked child
//!   ([`umcp_sandbox::run_with`]) under an address-space budget of the memory ceiling divided by
//!   the query slots, killed at the caller's deadline or [`GrafeoConfig::max_query_time`],
//!   whichever comes first. A query that needs more memory answers `ResourceExhausted`, one past
//!   its time `DeadlineExceeded`, and neither grows the service or outlives its deadline.
//!   Slots are handed out by [`Admission`] (fixed slots, a per-caller cap, arrival order); a
//!   slot is held until the child is gone, even after the caller gave up.
//! * Timestamps are stored with microsecond precision (nanoseconds are truncated).
//! * Engine defects that would return wrong data are refused instead (see `quirks`).

mod convert;
mod quirks;
mod read;
mod write;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use grafeo::{Config, DurabilityMode, GrafeoDB};
use grafeo_common::utils::error::{Error as GError, TransactionError};

use crate::admission::Admission;
use crate::error::StoreError;
use crate::limits::KEY_PROPERTY;
use crate::model::{
    DeleteBatch, DeleteCounts, Metrics, QueryResult, ReadQuery, UpsertBatch, UpsertCounts,
};
use crate::store::GraphStore;
use crate::validate;

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct GrafeoConfig {
    /// Data directory (holds `graph.grafeo` and its log); `None` keeps everything in memory.
    pub path: Option<PathBuf>,
    /// Longest any query may run, whatever the caller's deadline (the engine cancels it).
    pub max_query_time: Duration,
    /// Queries running at once (abandoned ones included); further callers wait for a slot
    /// until their deadline, in arrival order.
    pub max_concurrent_queries: usize,
    /// Queries one caller may have running or waiting at once; more are refused at once
    /// (see [`crate::admission`]).
    pub max_queries_per_caller: usize,
    /// Memory one read query may use on top of the service (it runs in a forked child under
    /// this rlimit): the service's memory ceiling divided by the query slots.
    pub query_memory_budget: u64,
    /// How often the log is folded into the database file; `None` only at close.
    pub checkpoint_interval: Option<Duration>,
}

impl GrafeoConfig {
    /// Default data directory.
    pub const DEFAULT_PATH: &'static str = "./data/graph";

    /// A persistent store in `path` with default limits.
    pub fn persistent(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::in_memory()
        }
    }

    /// An in-memory store (nothing survives a restart).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            max_query_time: Duration::from_secs(30),
            max_concurrent_queries: 8,
            max_queries_per_caller: 2,
            query_memory_budget: 1024 * 1024 * 1024 / 8,
            checkpoint_interval: Some(Duration::from_secs(60)),
        }
    }
}

impl Default for GrafeoConfig {
    fn default() -> Self {
        Self::persistent(Self::DEFAULT_PATH)
    }
}

struct Inner {
    db: GrafeoDB,
    /// Serialises writers: upserts check-then-write keys, and the WAL check in
    /// `write::in_transaction` needs to be the only committer.
    write_lock: Mutex<()>,
    /// Writes since the last checkpoint; the checkpointer skips idle intervals.
    writes_since_checkpoint: AtomicU64,
    admission: Admission,
    max_query_time: Duration,
    query_memory_budget: u64,
}

/// The Grafeo-backed [`GraphStore`]. Cheap to clone.
#[derive(Clone)]
pub struct GrafeoStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrafeoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrafeoStore")
            .field("path", &self.inner.db.config().path)
            .field("max_query_time", &self.inner.max_query_time)
            .finish_non_exhaustive()
    }
}

impl GrafeoStore {
    /// Opens (or creates) the store, replaying the WAL, and indexes the key property.
    /// Blocking: replay can take a while, so async callers should use [`GrafeoStore::open`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory cannot be created or the database opened
    /// (for example because another process holds its lock).
    pub fn open_blocking(config: &GrafeoConfig) -> Result<Self, StoreError> {
        let engine_config = match &config.path {
            Some(path) => {
                std::fs::create_dir_all(path).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
                })?;
                // Single-file format: checkpoints write a snapshot into `graph.grafeo` and
                // delete the WAL files it covers, so the log (and replay time) stays bounded.
                // The engine's own checkpoint timer is not used (see `checkpointer`).
                Config::persistent(path.join(DB_FILE)).with_wal_durability(DurabilityMode::Sync)
            }
            None => Config::in_memory(),
        }
        .with_query_timeout(config.max_query_time);
        let db = GrafeoDB::with_config(engine_config)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the graph database: {e}")))?;
        db.session().create_property_index(KEY_PROPERTY);
        tracing::info!(path = ?config.path, "graph store opened");
        let inner = Arc::new(Inner {
            db,
            write_lock: Mutex::new(()),
            writes_since_checkpoint: AtomicU64::new(0),
            admission: Admission::new(config.max_concurrent_queries, config.max_queries_per_caller),
            max_query_time: config.max_query_time,
            query_memory_budget: config.query_memory_budget,
        });
        if let (Some(_), Some(interval)) = (&config.path, config.checkpoint_interval) {
            checkpointer(Arc::downgrade(&inner), interval)?;
        }
        Ok(Self { inner })
    }

    /// [`GrafeoStore::open_blocking`] on the blocking pool.
    ///
    /// # Errors
    /// As for [`GrafeoStore::open_blocking`].
    pub async fn open(config: GrafeoConfig) -> Result<Self, StoreError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(&config))
            .await
            .map_err(join_error)?
    }

    /// Runs a write on the blocking pool under the write lock.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&GrafeoDB) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock left no open transaction behind (the session's
            // drop rolls it back), so a poisoned lock is safe to reuse.
            let _guard = inner.write_lock.lock();
            let out = work(&inner.db);
            if out.is_ok() {
                inner
                    .writes_since_checkpoint
                    .fetch_add(1, Ordering::Relaxed);
            }
            out
        })
        .await
        .map_err(join_error)?
    }
}

/// The database file inside the data directory.
const DB_FILE: &str = "graph.grafeo";

/// Starts the thread that checkpoints every `interval` while the store is alive. It holds only a
/// weak reference between checkpoints, so dropping the store closes the database, and it exits
/// within a poll step after that.
fn checkpointer(store: Weak<Inner>, interval: Duration) -> Result<(), StoreError> {
    const POLL: Duration = Duration::from_millis(250);
    let step = POLL.min(interval);
    let spawned = std::thread::Builder::new()
        .name("graph-checkpoint".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(step);
                waited += step;
                let Some(inner) = store.upgrade() else { return };
                if waited >= interval {
                    waited = Duration::ZERO;
                    checkpoint(&inner);
                }
            }
        });
    spawned
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))
}

fn checkpoint(inner: &Inner) {
    // See the module docs: no commit may run while the checkpoint takes its snapshot.
    let _guard = inner.write_lock.lock();
    let writes = inner.writes_since_checkpoint.swap(0, Ordering::Relaxed);
    if writes == 0 {
        return;
    }
    let started = std::time::Instant::now();
    match inner.db.wal_checkpoint() {
        Ok(()) => tracing::debug!(
            writes,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "graph checkpoint written"
        ),
        Err(e) => {
            // Keep the count so the next interval tries again.
            inner
                .writes_since_checkpoint
                .fetch_add(writes, Ordering::Relaxed);
            tracing::error!(error = %e, "graph checkpoint failed; the log grows until one succeeds");
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    tracing::error!(error = %e, "graph store task failed");
    StoreError::Internal(format!("store task failed: {e}"))
}

/// Runs a read in a forked child bounded by the per-query memory budget and `limit`, so a
/// runaway query is killed instead of growing the service or holding a slot past its time.
/// The write lock is held across the fork only, so no commit is half done in the child's copy.
fn isolated<T>(
    inner: &Inner,
    limit: Duration,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    use umcp_sandbox::SandboxError;
    let guard = inner.write_lock.lock();
    let out = umcp_sandbox::run_with(inner.query_memory_budget, limit, move || drop(guard), read);
    match out {
        Ok(result) => result,
        Err(e @ SandboxError::ResourceExhausted { .. }) => {
            Err(StoreError::ResourceExhausted(e.to_string()))
        }
        Err(e @ SandboxError::DeadlineExceeded { .. }) => {
            Err(StoreError::DeadlineExceeded(e.to_string()))
        }
        Err(SandboxError::ShuttingDown) => {
            Err(StoreError::Unavailable("the store is shutting down".into()))
        }
        Err(SandboxError::Failed(detail)) => Err(StoreError::Internal(detail)),
    }
}

/// Maps an engine error outside caller-supplied Cypher (writes, metrics, health).
pub(crate) fn engine_error(err: GError, context: &str) -> StoreError {
    match err {
        GError::Transaction(
            TransactionError::Conflict
            | TransactionError::WriteConflict(_)
            | TransactionError::SerializationFailure(_)
            | TransactionError::Deadlock
            | TransactionError::Timeout
            | TransactionError::Aborted,
        ) => StoreError::Unavailable(format!("{context}: concurrent transaction conflict, retry")),
        GError::Io(e) => {
            tracing::error!(error = %e, context, "graph storage i/o failed");
            StoreError::Unavailable(format!("{context}: storage i/o failed"))
        }
        GError::Storage(e) => {
            tracing::error!(error = %e, context, "graph storage failed");
            StoreError::Unavailable(format!("{context}: storage failed"))
        }
        other => StoreError::Internal(format!("{context}: {other}")),
    }
}

#[async_trait]
impl GraphStore for GrafeoStore {
    fn backend(&self) -> &'static str {
        "grafeo"
    }

    async fn upsert(&self, batch: UpsertBatch) -> Result<UpsertCounts, StoreError> {
        validate::upsert(&batch)?;
        self.write(move |db| write::upsert(db, &batch)).await
    }

    async fn query(&self, query: ReadQuery) -> Result<QueryResult, StoreError> {
        validate::query(&query)?;
        let ticket = self
            .inner
            .admission
            .admit(query.caller.as_deref(), query.deadline)
            .await?;
        let deadline = query.deadline.map(tokio::time::Instant::from_std);
        let inner = Arc::clone(&self.inner);
        let max_secs = inner.max_query_time.as_secs();
        let task = tokio::task::spawn_blocking(move || {
            // The ticket is held until the child really stops, even after the caller gave up.
            let _ticket = ticket;
            let limit = query
                .deadline
                .map_or(inner.max_query_time, |d| {
                    d.saturating_duration_since(std::time::Instant::now())
                })
                .min(inner.max_query_time);
            isolated(&inner, limit, || read::query(&inner.db, &query, max_secs))
        });
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, task).await {
                Ok(joined) => joined.map_err(join_error)?,
                Err(_) => Err(StoreError::DeadlineExceeded(
                    "the query did not finish before the deadline".into(),
                )),
            },
            None => task.await.map_err(join_error)?,
        }
    }

    async fn delete(&self, batch: DeleteBatch) -> Result<DeleteCounts, StoreError> {
        validate::delete(&batch)?;
        self.write(move |db| write::delete(db, &batch)).await
    }

    async fn metrics(&self) -> Result<Metrics, StoreError> {
        // Metrics run as a child too, so they take a slot (and so a share of the ceiling).
        let ticket = self.inner.admission.admit(None, None).await?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _ticket = ticket;
            isolated(&inner, inner.max_query_time, || read::metrics(&inner.db))
        })
        .await
        .map_err(join_error)?
    }

    async fn health(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || read::health(&inner.db))
            .await
            .map_err(join_error)?
    }
}
