//! [`Shared`]: the state the writer thread and the readers (query, tail, verify) both use.
//!
//! It lives in its own module so the dependencies run one way: [`crate::store`] opens the log
//! and hands this state to [`crate::writer`], [`crate::read`] and [`crate::tail`]; none of them
//! knows the store.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, watch};
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::ChainKey;
use crate::index::Index;
use crate::signer::Signer;
use crate::verify::Problem;

/// Commit counters (group-commit efficiency).
#[derive(Debug, Default)]
pub struct Stats {
    commits: AtomicU64,
    events: AtomicU64,
}

impl Stats {
    pub(crate) fn record_commit(&self, events: usize) {
        if events > 0 {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.events.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    /// `(fsynced commits, events committed)` since start.
    #[must_use]
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
        )
    }
}

/// State shared by the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) key: ChainKey,
    pub(crate) index: RwLock<Index>,
    pub(crate) failed: AtomicBool,
    /// Held by the writer while a commit is on its way to disk, so `Verify` can take a
    /// consistent (log end, checkpoint) snapshot.
    pub(crate) commit_lock: Mutex<()>,
    pub(crate) tail: broadcast::Sender<Arc<AuditEvent>>,
    pub(crate) stats: Stats,
    pub(crate) signer: Arc<Signer>,
    /// Positional reads of committed records (`pread`: no seek state shared between readers).
    pub(crate) reader: File,
    pub(crate) log_path: PathBuf,
    pub(crate) checkpoint_path: PathBuf,
    pub(crate) signed_path: PathBuf,
    pub(crate) damage: Option<Problem>,
    /// Events a tail consumer may fall behind (at least 1).
    pub(crate) tail_buffer: usize,
    /// Set at shutdown: tail streams end so graceful shutdown does not wait for them forever.
    pub(crate) stopping: watch::Sender<bool>,
}

impl Shared {
    /// Completes once shutdown began (`stopping` was set).
    pub(crate) fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }
}
