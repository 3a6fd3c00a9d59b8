//! [`AuditLog`]: the domain API the gRPC adapter (and the benchmark) call: record, query,
//! tail, verify, export the signed checkpoint.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::{ChainKey, read_checkpoint};
use crate::error::AuditError;
use crate::frame::{self, HEADER_LEN, Scanner};
use crate::index::{Filter, Index, page_token, parse_page_token};
use crate::recovery;
use crate::signed::{CheckpointKey, SIGNED_FILE, SignedCheckpoint, SignedState, read_signed};
use crate::signer::Signer;
use crate::validate;
use crate::verify::{self, Anchors, Problem, Range, Report};
use crate::writer::{Job, RecordOutcome, Writer};

/// Default query page.
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
    /// The Ed25519 key of the signed checkpoints.
    pub signing_key: CheckpointKey,
    /// Sign the head once this many events are not covered by a signed checkpoint.
    pub sign_every_events: u64,
    /// Sign the head at most this long after a commit.
    pub sign_interval: Duration,
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
    pub(crate) signer: Arc<Signer>,
    reader: File,
    log_path: PathBuf,
    checkpoint_path: PathBuf,
    signed_path: PathBuf,
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
    signer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events, newest first.
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
        let recovered = recovery::open(
            &options.dir,
            &options.key,
            &options.signing_key.verifying_key(),
            options.sync_checkpoint,
        )
        .map_err(|e| {
            format!(
                "cannot open the audit log in {}: {e}",
                options.dir.display()
            )
        })?;
        let signed = match recovered.signed {
            SignedState::Valid(cp) => Some(cp),
            SignedState::Missing | SignedState::BadSignature => None,
        };
        let head = (recovered.head_sequence, recovered.head_hash);
        let signer = Arc::new(Signer::new(
            options.signing_key,
            options.dir.clone(),
            options.sign_every_events,
            options.sign_interval,
            signed,
            head,
        ));
        // Never sign over a damaged log. Otherwise sign an unsigned head now, so a signed
        // checkpoint exists from the start (and one missing later is noticed by Verify).
        let sound = recovered.damage.is_none();
        if sound && signed.is_none_or(|cp| cp.sequence < head.0) {
            signer.sign_now(head.0, head.1).map_err(|e| {
                format!(
                    "cannot write the signed checkpoint in {}: {e}",
                    options.dir.display()
                )
            })?;
        }
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
            signer: Arc::clone(&signer),
            reader,
            log_path: recovered.log_path,
            checkpoint_path: recovered.checkpoint_path,
            signed_path: options.dir.join(SIGNED_FILE),
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
        let signing = if sound {
            let handle = std::thread::Builder::new()
                .name("audit-signer".into())
                .spawn(move || signer.run())
                .map_err(|e| format!("cannot start the audit signer thread: {e}"))?;
            Some(handle)
        } else {
            None
        };
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            signer: Mutex::new(signing),
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

    /// One page of events matching `filter`, newest first, below the cursor in `token`.
    ///
    /// # Errors
    /// A page size above [`MAX_PAGE`], or a token not returned by a query with these filters.
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
        let bad_token = || {
            AuditError::invalid(
                "page.page_token",
                "not a token returned by a Query with these same filters",
            )
        };
        let before = if token.is_empty() {
            None
        } else {
            Some(parse_page_token(token, fingerprint).ok_or_else(bad_token)?)
        };
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            shared.query_blocking(&filter, before, limit, fingerprint)
        })
        .await
        .map_err(|e| AuditError::Internal(format!("query task failed: {e}")))?
        .and_then(|page| page.ok_or_else(bad_token))
    }

    /// Committed events matching `filter` with a sequence above `after`, at most `max`, in
    /// order. Also returns the last sequence examined (resume after it) and whether the scan
    /// reached the head.
    ///
    /// # Errors
    /// Reading the log failed.
    pub async fn read_after(
        &self,
        filter: Filter,
        after: u64,
        max: usize,
    ) -> Result<(Vec<AuditEvent>, u64, bool), AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let (locations, examined, at_head) = {
                let index = shared.index.read();
                let start = index.position_after(after);
                let (positions, end) = index.scan_forward(&filter, start, max);
                let examined = match end.checked_sub(1).and_then(|p| index.entry(p)) {
                    Some(e) if end > start => e.sequence,
                    _ => after,
                };
                let locations: Vec<(u64, u32)> = positions
                    .iter()
                    .filter_map(|&p| index.entry(p).map(|e| (e.offset, e.len)))
                    .collect();
                (locations, examined, end >= index.len())
            };
            let mut events = Vec::with_capacity(locations.len());
            for (offset, len) in locations {
                let event = shared.read_event(offset, len)?;
                if filter.matches(&event) {
                    events.push(event);
                }
            }
            Ok((events, examined, at_head))
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

    /// The latest Ed25519-signed checkpoint and the key that signed it; `None` before the
    /// first (a log found damaged at start-up that never had one).
    #[must_use]
    pub fn signed_checkpoint(&self) -> Option<(SignedCheckpoint, &CheckpointKey)> {
        let signer = &self.shared.signer;
        signer.latest().map(|cp| (cp, signer.key()))
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

    /// Stops accepting records, waits for the writer to finish what it has, then signs the
    /// final head.
    pub fn close(&self) {
        self.jobs.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.signer.lock().take() {
            self.shared.signer.stop();
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

    /// `None` when `before` is no cursor of this log.
    fn query_blocking(
        &self,
        filter: &Filter,
        before: Option<u64>,
        limit: usize,
        fingerprint: u32,
    ) -> Result<Option<Page>, AuditError> {
        let (locations, next) = {
            let index = self.index.read();
            let end = match before {
                None => index.len(),
                // A cursor names an event that exists (the last one of the previous page).
                Some(before) if before <= index.head() => index.position_of(before),
                Some(_) => return Ok(None),
            };
            let (positions, more) = index.scan_back(filter, end, limit);
            let locations: Vec<(u64, u32, u64)> = positions
                .iter()
                .filter_map(|&p| index.entry(p).map(|e| (e.offset, e.len, e.sequence)))
                .collect();
            let next = if more {
                locations.last().map(|&(_, _, seq)| seq)
            } else {
                None
            };
            (locations, next)
        };
        let mut events = Vec::with_capacity(locations.len());
        for (offset, len, _) in locations {
            let event = self.read_event(offset, len)?;
            // The index holds correlation hashes; confirm the real values.
            if filter.matches(&event) {
                events.push(event);
            }
        }
        Ok(Some(Page {
            events,
            next_token: next.map(|seq| page_token(seq, fingerprint)),
        }))
    }

    fn verify_blocking(&self, from: u64, to: u64) -> Result<Report, AuditError> {
        let io = |e: std::io::Error| AuditError::Internal(format!("verifying the audit log: {e}"));
        // Read before the log end: it only ever signs records already on disk.
        let signed =
            read_signed(&self.signed_path, &self.signer.key().verifying_key()).map_err(io)?;
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
            recovering: false,
        };
        let anchors = Anchors {
            mac: checkpoint,
            signed,
        };
        verify::verify(
            Scanner::new(file, end.max(HEADER_LEN)),
            &self.key,
            anchors,
            range,
        )
        .map_err(io)
    }
}
