//! [`FileLog`]: the audit log in a data directory, the one implementation of [`AuditLog`].
//! It opens (recovering and verifying) the files, owns the writer and signer threads, and
//! answers the domain calls; the blocking reads are in [`crate::read`], `Tail` streams in
//! [`crate::tail`], group commit in [`crate::writer`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::ChainKey;
use crate::error::AuditError;
use crate::index::{Filter, parse_page_token};
use crate::log::{AuditLog, Page, RecordOutcome, TailEvents};
use crate::read;
use crate::recovery;
use crate::shared::{Shared, Stats};
use crate::signed::{CheckpointKey, SIGNED_FILE, SignedCheckpoint, SignedState};
use crate::signer::Signer;
use crate::tail;
use crate::validate;
use crate::verify::{Problem, Report};
use crate::writer::{Job, Writer};

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

/// The audit log in a data directory: see the module docs.
#[derive(Debug)]
pub struct FileLog {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    signer: Mutex<Option<JoinHandle<()>>>,
}

impl FileLog {
    /// Opens (recovering and verifying) the log and starts its writer and signer threads.
    /// Blocking: call from `spawn_blocking` in async code.
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
        let head = (recovered.head_sequence, recovered.head_hash);
        let signer = Arc::new(Signer::new(
            options.signing_key,
            options.dir.clone(),
            options.sign_every_events,
            options.sign_interval,
            valid(recovered.signed),
            head,
        ));
        // Never sign over a damaged log (its signer thread is not even started).
        let sound = recovered.damage.is_none();
        if sound {
            sign_unsigned_head(&signer, head, &options.dir)?;
        }
        let reader = File::open(&recovered.log_path)
            .map_err(|e| format!("cannot open {}: {e}", recovered.log_path.display()))?;
        let tail_buffer = options.tail_buffer.max(1);
        let (tail, _) = broadcast::channel(tail_buffer);
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
            tail_buffer,
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
        let (writing, signing) = spawn_threads(writer, rx, signer, sound)?;
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writing)),
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

    /// Ends every tail stream (with UNAVAILABLE) and refuses new ones.
    pub fn stop_streams(&self) {
        self.shared.stopping.send_replace(true);
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

    /// Hands a validated batch to the writer and waits for its answer.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<RecordOutcome, AuditError> {
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

    /// Checks the page request, then reads the page on a blocking thread.
    async fn page(
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
        // The token carries the filters' fingerprint: a cursor of other filters would skip or
        // repeat events silently.
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
            read::query_page(&shared, &filter, before, limit, fingerprint)
        })
        .await
        .map_err(|e| AuditError::TaskFailed(format!("query task failed: {e}")))?
        .and_then(|page| page.ok_or_else(bad_token))
    }

    /// Checks the range, then verifies on a blocking thread.
    async fn check(&self, from: u64, to: u64) -> Result<Report, AuditError> {
        if to != 0 && from > to {
            return Err(AuditError::invalid(
                "from_sequence",
                "must not be above to_sequence",
            ));
        }
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || read::verify(&shared, from, to))
            .await
            .map_err(|e| AuditError::TaskFailed(format!("verify task failed: {e}")))?
    }
}

/// The signed checkpoint recovery found, if it verified.
fn valid(signed: SignedState) -> Option<SignedCheckpoint> {
    match signed {
        SignedState::Valid(cp) => Some(cp),
        SignedState::Missing | SignedState::BadSignature => None,
    }
}

/// Signs `head` now unless the signer's latest checkpoint covers it, so a signed checkpoint
/// exists from the start (and one missing later is noticed by Verify).
fn sign_unsigned_head(signer: &Signer, head: (u64, [u8; 32]), dir: &Path) -> Result<(), String> {
    if signer.latest().is_none_or(|cp| cp.sequence < head.0) {
        signer.sign_now(head.0, head.1).map_err(|e| {
            format!(
                "cannot write the signed checkpoint in {}: {e}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

type Threads = (JoinHandle<()>, Option<JoinHandle<()>>);

/// Starts the writer thread, and the signer thread when the log is `sound`.
fn spawn_threads(
    writer: Writer,
    jobs: mpsc::Receiver<Job>,
    signer: Arc<Signer>,
    sound: bool,
) -> Result<Threads, String> {
    let writing = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(jobs))
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
    Ok((writing, signing))
}

/// Every domain call logs the details of an internal failure once, here, on its way out.
#[tonic::async_trait]
impl AuditLog for FileLog {
    async fn record(&self, events: Vec<AuditEvent>) -> Result<RecordOutcome, AuditError> {
        self.append(events).await.map_err(AuditError::logged)
    }

    async fn query(
        &self,
        filter: Filter,
        page_size: usize,
        token: &str,
    ) -> Result<Page, AuditError> {
        self.page(filter, page_size, token)
            .await
            .map_err(AuditError::logged)
    }

    fn tail(&self, filter: Filter, after_sequence: u64) -> TailEvents {
        tail::start(&self.shared, filter, after_sequence)
    }

    async fn verify(&self, from: u64, to: u64) -> Result<Report, AuditError> {
        self.check(from, to).await.map_err(AuditError::logged)
    }

    fn signed_checkpoint(&self) -> Result<(SignedCheckpoint, &CheckpointKey), AuditError> {
        let signer = &self.shared.signer;
        let latest = signer.latest().ok_or(AuditError::NoSignedCheckpoint)?;
        Ok((latest, signer.key()))
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}
