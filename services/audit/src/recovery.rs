//! Opening the data directory: create a fresh log, or rebuild the index from an existing one,
//! cut off a torn tail that was never acknowledged, and verify the whole chain.
//!
//! Only bytes after the last complete record, and only when that record is at or beyond both
//! checkpoints, are ever removed: every acknowledged record is covered by the MAC'd checkpoint
//! (it is rewritten before the acknowledgement), and the Ed25519-signed one only ever signs
//! records already on disk, so such bytes belong to a commit that was cut short by a crash
//! and never acknowledged. Anything else that looks wrong is left exactly
//! as found and reported as damage.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::{
    ChainKey, Checkpoint, CheckpointFile, CheckpointState, GENESIS, read_checkpoint,
};
use crate::frame::{self, HEADER_LEN, Scanned, Scanner};
use crate::index::Index;
use crate::signed::{SIGNED_FILE, SignedState, read_signed};
use crate::verify::{self, Anchors, Problem, ProblemKind, Range, Report};

/// File names inside the data directory.
pub(crate) const LOG_FILE: &str = "audit.log";
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";

/// The state of an opened log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) file: File,
    pub(crate) log_path: PathBuf,
    pub(crate) checkpoint_path: PathBuf,
    pub(crate) checkpoint: CheckpointFile,
    pub(crate) index: Index,
    /// End of the last record.
    pub(crate) end: u64,
    pub(crate) head_sequence: u64,
    pub(crate) head_hash: [u8; 32],
    pub(crate) damage: Option<Problem>,
    /// The Ed25519-signed checkpoint found.
    pub(crate) signed: SignedState,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_log(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&frame::header())?;
    file.sync_all()?;
    Ok(file)
}

/// Opens or creates the log in `dir`; `signing` is the public key of the Ed25519-signed
/// checkpoints.
///
/// # Errors
/// I/O errors, or `InvalidData` when `audit.log` is not an audit log.
pub(crate) fn open(
    dir: &Path,
    key: &ChainKey,
    signing: &ed25519_dalek::VerifyingKey,
    sync_checkpoint: bool,
) -> io::Result<Recovered> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let log_path = dir.join(LOG_FILE);
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    let checkpoint_state = read_checkpoint(&checkpoint_path, key)?;
    let mut missing_log = None;
    let file = match OpenOptions::new().read(true).write(true).open(&log_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let file = create_log(&log_path)?;
            match checkpoint_state {
                CheckpointState::Missing => {
                    let mut cp = CheckpointFile::open(&checkpoint_path, sync_checkpoint)?;
                    cp.reset(
                        key,
                        Checkpoint {
                            sequence: 0,
                            hash: GENESIS,
                        },
                    )?;
                    sync_dir(dir)?;
                    tracing::info!(dir = %dir.display(), "created a new audit log");
                }
                // A checkpoint without a log: the log was deleted. Keep the checkpoint as
                // evidence and refuse writes.
                _ => missing_log = Some(()),
            }
            file
        }
        Err(e) => return Err(e),
    };
    let signed = read_signed(&dir.join(SIGNED_FILE), signing)?;
    let mut recovered = rebuild(
        file,
        log_path,
        checkpoint_path,
        key,
        signed,
        sync_checkpoint,
    )?;
    if missing_log.is_some() && recovered.damage.is_none() {
        recovered.damage = Some(Problem {
            sequence: 1,
            kind: ProblemKind::Truncated,
            detail: "the log file was missing while a checkpoint exists".into(),
        });
    }
    Ok(recovered)
}

/// Rebuilds the state of an existing log: index it, cut a torn tail, verify the chain.
fn rebuild(
    mut file: File,
    log_path: PathBuf,
    checkpoint_path: PathBuf,
    key: &ChainKey,
    signed: SignedState,
    sync_checkpoint: bool,
) -> io::Result<Recovered> {
    let len = file.metadata()?.len();
    check_header(&mut file, len, &log_path)?;
    let checkpoint_state = read_checkpoint(&checkpoint_path, key)?;
    let (index, last_good, garbage_from) = index_records(&file, len)?;
    let (good_end, good_seq) = last_good.unwrap_or((HEADER_LEN, 0));
    let end = match garbage_from {
        Some(cut) if torn_write(good_seq, checkpoint_state, signed) => {
            tracing::warn!(
                bytes = len - cut,
                after_sequence = good_seq,
                "removing a torn, never acknowledged write at the end of the audit log"
            );
            file.set_len(cut)?;
            file.sync_all()?;
            cut
        }
        _ => len,
    };
    debug_assert!(good_end <= end);
    let anchors = Anchors {
        mac: checkpoint_state,
        signed,
    };
    let (report, checkpoint) = verify_whole(
        &log_path,
        &checkpoint_path,
        end,
        key,
        anchors,
        sync_checkpoint,
    )?;
    Ok(Recovered {
        file,
        log_path,
        checkpoint_path,
        checkpoint,
        index,
        end,
        head_sequence: report.head_sequence,
        head_hash: report.head_hash,
        damage: report.problem,
        signed,
    })
}

/// Refuses a file that is not an audit log of a known version (rather than "repair" it).
fn check_header(file: &mut File, len: u64, log_path: &Path) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN as usize];
    file.seek(SeekFrom::Start(0))?;
    if len < HEADER_LEN || file.read_exact(&mut header).is_err() || !frame::header_ok(&header) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not an audit log of a known version",
                log_path.display()
            ),
        ));
    }
    Ok(())
}

/// `(end offset, sequence)` of a record.
type Position = (u64, u64);

/// Pass 1: indexes every readable record. Returns the index, the last complete record and
/// where the garbage after it starts, if any.
fn index_records(file: &File, len: u64) -> io::Result<(Index, Option<Position>, Option<u64>)> {
    let mut index = Index::default();
    let mut scanner = Scanner::new(BufReader::with_capacity(1 << 20, file), len);
    let mut last_good: Option<Position> = None;
    let mut garbage_from: Option<u64> = None;
    while let Some(item) = scanner.next_item()? {
        match item {
            Scanned::Record(r) => {
                if let Ok(mut event) = AuditEvent::decode(r.event.as_slice()) {
                    event.sequence = r.sequence;
                    index.push(r.offset, r.len, r.sequence, &event);
                }
                last_good = Some((r.offset + u64::from(r.len), r.sequence));
                garbage_from = None;
            }
            Scanned::Corrupt { offset }
            | Scanned::Torn { offset }
            | Scanned::Garbled { offset } => {
                garbage_from.get_or_insert(offset);
            }
        }
    }
    Ok((index, last_good, garbage_from))
}

/// Whether garbage after the last complete record (sequence `good_seq`) is a torn write that
/// was never acknowledged: only when that record is at or beyond both checkpoints (see the
/// module docs). Anything else is kept as evidence.
fn torn_write(good_seq: u64, checkpoint: CheckpointState, signed: SignedState) -> bool {
    matches!(checkpoint, CheckpointState::Valid(cp) if good_seq >= cp.sequence)
        && !matches!(signed, SignedState::Valid(cp) if good_seq < cp.sequence)
}

/// Pass 2: recomputes the chain over the first `end` bytes and compares it with both
/// checkpoints. On a sound log the MAC'd checkpoint is re-signed at the head.
fn verify_whole(
    log_path: &Path,
    checkpoint_path: &Path,
    end: u64,
    key: &ChainKey,
    anchors: Anchors,
    sync_checkpoint: bool,
) -> io::Result<(Report, CheckpointFile)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(log_path)?);
    reader.seek(SeekFrom::Start(HEADER_LEN))?;
    let range = Range {
        from: 1,
        to: None,
        recovering: true,
    };
    let report = verify::verify(Scanner::new(reader, end), key, anchors, range)?;
    let mut checkpoint = CheckpointFile::open(checkpoint_path, sync_checkpoint)?;
    match &report.problem {
        None => {
            // Re-sign the head: adopts complete records written just before a crash and puts
            // both slots into a known state.
            checkpoint.reset(
                key,
                Checkpoint {
                    sequence: report.head_sequence,
                    hash: report.head_hash,
                },
            )?;
            tracing::info!(
                events = report.head_sequence,
                bytes = end,
                "audit log opened and verified"
            );
        }
        Some(problem) => tracing::error!(
            first_bad_sequence = problem.sequence,
            problem = %problem,
            "audit log failed verification; writes are refused until it is restored"
        ),
    }
    Ok((report, checkpoint))
}
