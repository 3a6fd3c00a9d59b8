//! [`AuditLog`]: the domain API the gRPC adapter (and the benchmark) call: record, query,
//! tail, verify.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::{ChainKey, read_checkpoint};
use crate::error::AuditError;
use crate::frame::{self, HEADER_LEN, Scanner};
use crate::index::{Filter, Index, page_token, parse_page_token, string_hash};
use crate::recovery;
use crate::validate;
use crate::verify::{self, Problem, Range, Report};
use crate::writer::{Job, RecordOutcome, Writer};

/// Default and largest query page.
pub const DEFAULT_PAGE: usize = 100;
/// Largest query page.
pub const MAX_PAGE: usize = 1000;

/// How to open the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Data directory.
    pub dir: PathBuf,
    /// Chain key.
    pub key: ChainKey,
    /// fsync the checkpoint on every commit too (see `AuditConfig::sync_checkpoint`).
    pub sync_checkpoint: bool,
    /// Events a `Tail` consumer may fall behind before its stream is ended.
    pub tail_buffer: usize,
    /// `Record` calls that may wait for the writer before new ones get RESOURCE_EXHAUSTED.
    pub queue: usize,
}

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
    reader: File,
    log_path: PathBuf,
    checkpoint_path: PathBuf,
    damage: Option<Problem>,
    tail_buffer: usize,
    /// Set at shutdown: tail streams end so graceful shutdown does not wait for them forever.
    stopping: watch::Sender<bool>,
}

/// The audit log.
#[derive(Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events in sequence order.
    pub events: Vec<AuditEvent>,
    /// Token of the next page; `None` at the end.
    pub next_token: Option<String>,
}

impl AuditLog {
    /// Opens (recovering and verifying) the log and starts its writer thread. Blocking: call
    /// from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// When the directory or files cannot be used.
    pub fn open(options: LogOptions) -> Result<Self, String> {
        let recovered = recovery::open(&options.dir, &options.key, options.sync_checkpoint)
            .map_err(|e| {
                format!(
                    "cannot open the audit log in {}: {e}",
                    options.dir.display()
                )
            })?;
        let reader = File::open(&recovered.log_path)
            .map_err(|e| format!("cannot open {}: {e}", recovered.log_path.display()))?;
        let (tail, _) = broadcast::channel(options.tail_buffer.max(1));
        let shared = Arc::new(Shared {
            key: options.key,
            index: RwLock::new(recovered.index),
            failed: AtomicBool::new(false),
            commit_lock: Mutex::new(()),
            tail,
            stats: Stats::default(),
            reader,
            log_path: recovered.log_path,
            checkpoint_path: recovered.checkpoint_path,
            damage: recovered.damage,
            tail_buffer: options.tail_buffer.max(1),
            stopping: watch::Sender::new(false),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            file: recovered.file,
            checkpoint: recovered.checkpoint,
            end: recovered.end,
            head_sequence: recovered.head_sequence,
            head_hash: recovered.head_hash,
        };
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the audit writer thread: {e}"))?;
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The problem found at start-up, if the log is damaged.
    #[must_use]
    pub fn damage(&self) -> Option<&Problem> {
        self.shared.damage.as_ref()
    }

    /// Commit counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Last committed sequence.
    #[must_use]
    pub fn head(&self) -> u64 {
        self.shared.index.read().head()
    }

    /// Where the log lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.log_path
    }

    /// Validates and durably appends a batch; returns once it is on disk.
    ///
    /// # Errors
    /// Invalid events, a damaged or failed log, a saturated writer, shutdown.
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<RecordOutcome, AuditError> {
        let ids = validate::batch(&events)?;
        if let Some(problem) = &self.shared.damage {
            return Err(AuditError::Damaged {
                first_bad: problem.sequence,
                problem: problem.to_string(),
            });
        }
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(AuditError::StorageFailed);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            events: events.into_iter().zip(ids).collect(),
            reply,
        };
        let sender = self.jobs.lock().clone().ok_or(AuditError::ShuttingDown)?;
        sender.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AuditError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => AuditError::ShuttingDown,
        })?;
        answer.await.map_err(|_| AuditError::ShuttingDown)?
    }

    /// One page of events matching `filter`.
    ///
    /// # Errors
    /// A page size above [`MAX_PAGE`] or a token from another query.
    pub async fn query(
        &self,
        filter: Filter,
        page_size: usize,
        token: &str,
    ) -> Result<Page, AuditError> {
        if page_size > MAX_PAGE {
            return Err(AuditError::invalid(
                "page.page_size",
                format!("at most {MAX_PAGE} (0 = {DEFAULT_PAGE})"),
            ));
        }
        let limit = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size
        };
        let fingerprint = filter.fingerprint();
        let from = if token.is_empty() {
            0
        } else {
            parse_page_token(token, fingerprint).ok_or_else(|| {
                AuditError::invalid(
                    "page.page_token",
                    "not a token returned by a Query with these same filters",
                )
            })?
        };
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            shared.query_blocking(&filter, from, limit, fingerprint)
        })
        .await
        .map_err(|e| AuditError::Internal(format!("query task failed: {e}")))?
    }

    /// Committed events with sequence above `after`, at most `max`, in order.
    ///
    /// # Errors
    /// Reading the log failed.
    pub async fn read_after(&self, after: u64, max: usize) -> Result<Vec<AuditEvent>, AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let locations: Vec<(u64, u32)> = {
                let index = shared.index.read();
                let start = index.position_after(after);
                (start..index.len().min(start + max))
                    .filter_map(|p| index.entry(p).map(|e| (e.offset, e.len)))
                    .collect()
            };
            locations
                .into_iter()
                .map(|(o, l)| shared.read_event(o, l))
                .collect()
        })
        .await
        .map_err(|e| AuditError::Internal(format!("read task failed: {e}")))?
    }

    /// A receiver of every event committed from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditEvent>> {
        self.shared.tail.subscribe()
    }

    /// How far a tail consumer may fall behind.
    #[must_use]
    pub fn tail_buffer(&self) -> usize {
        self.shared.tail_buffer
    }

    /// Recomputes the chain over `from..=to` (0 = from the start / to the end, including the
    /// signed checkpoint) from the bytes on disk.
    ///
    /// # Errors
    /// A bad range, or reading failed.
    pub async fn verify(&self, from: u64, to: u64) -> Result<Report, AuditError> {
        if to != 0 && from > to {
            return Err(AuditError::invalid(
                "from_sequence",
                "must not be above to_sequence",
            ));
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.verify_blocking(from, to))
            .await
            .map_err(|e| AuditError::Internal(format!("verify task failed: {e}")))?
    }

    /// Ends every tail stream (with UNAVAILABLE) and refuses new ones.
    pub fn stop_streams(&self) {
        self.shared.stopping.send_replace(true);
    }

    /// Completes once [`Self::stop_streams`] was called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.shared.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    /// Stops accepting records and waits for the writer to finish what it has.
    pub fn close(&self) {
        self.jobs.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn read_event(&self, offset: u64, len: u32) -> Result<AuditEvent, AuditError> {
        let raw = frame::read_at(&self.reader, offset, len)
            .map_err(|e| AuditError::Internal(format!("reading the audit log at {offset}: {e}")))?;
        let mut event = AuditEvent::decode(raw.event.as_slice())
            .map_err(|e| AuditError::Internal(format!("decoding the record at {offset}: {e}")))?;
        event.sequence = raw.sequence;
        event.chain_hash = hex::encode(raw.chain_hash);
        Ok(event)
    }

    fn query_blocking(
        &self,
        filter: &Filter,
        from: usize,
        limit: usize,
        fingerprint: u32,
    ) -> Result<Page, AuditError> {
        let (locations, next) = {
            let index = self.index.read();
            let (positions, next) = index.scan(filter, from, limit);
            let locations: Vec<(u64, u32)> = positions
                .iter()
                .filter_map(|&p| index.entry(p).map(|e| (e.offset, e.len)))
                .collect();
            (locations, next)
        };
        let wanted = filter.correlation_id.as_deref().map(string_hash);
        let mut events = Vec::with_capacity(locations.len());
        for (offset, len) in locations {
            let event = self.read_event(offset, len)?;
            // The index holds correlation hashes; confirm the real value.
            if wanted.is_some()
                && filter.correlation_id.as_deref() != Some(event.correlation_id.as_str())
            {
                continue;
            }
            events.push(event);
        }
        Ok(Page {
            events,
            next_token: next.map(|p| page_token(p, fingerprint)),
        })
    }

    fn verify_blocking(&self, from: u64, to: u64) -> Result<Report, AuditError> {
        let io = |e: std::io::Error| AuditError::Internal(format!("verifying the audit log: {e}"));
        let (checkpoint, end) = {
            let _commit = self.commit_lock.lock();
            let checkpoint = read_checkpoint(&self.checkpoint_path, &self.key).map_err(io)?;
            let end = std::fs::metadata(&self.log_path).map_err(io)?.len();
            (checkpoint, end)
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(&self.log_path).map_err(io)?);
        file.seek(SeekFrom::Start(HEADER_LEN)).map_err(io)?;
        let range = Range {
            from: from.max(1),
            to: (to != 0).then_some(to),
            allow_ahead: false,
        };
        verify::verify(
            Scanner::new(file, end.max(HEADER_LEN)),
            &self.key,
            checkpoint,
            range,
        )
        .map_err(io)
    }
}
