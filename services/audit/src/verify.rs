//! Recomputing the chain from the bytes on disk and naming the first inconsistency.
//!
//! Walks the records in file order, expecting sequence numbers 1, 2, 3, … Each problem class
//! shows up differently:
//! - edited: the checksum or the keyed chain hash of a record does not match;
//! - missing: a sequence number never appears;
//! - reordered: a sequence number appears later than a higher one;
//! - inserted: a record that is not part of the chain (a duplicate sequence number, or a
//!   forged record directly followed by the genuine one);
//! - truncated: the log ends before the head of the signed checkpoint, or mid-record;
//! - checkpoint: the checkpoint is missing, forged, or disagrees with the log.

use std::fmt;
use std::io::{self, Read};

use crate::chain::{ChainKey, CheckpointState, GENESIS};
use crate::frame::{Scanned, Scanner};

/// The class of a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's bytes changed.
    Edited,
    /// A record is gone.
    Missing,
    /// Records are out of order.
    Reordered,
    /// A record was added.
    Inserted,
    /// The end of the log was cut off.
    Truncated,
    /// The signed checkpoint is missing, forged or inconsistent.
    Checkpoint,
}

impl ProblemKind {
    /// The word used in `VerifyResponse.problem`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Missing => "missing",
            Self::Reordered => "reordered",
            Self::Inserted => "inserted",
            Self::Truncated => "truncated",
            Self::Checkpoint => "checkpoint",
        }
    }
}

/// The first inconsistency found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// First bad sequence number.
    pub sequence: u64,
    /// Its class.
    pub kind: ProblemKind,
    /// A sentence for operators.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records whose chain hash was recomputed.
    pub checked: u64,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// Last verified sequence and its hash.
    pub head_sequence: u64,
    /// Hash of `head_sequence` (genesis when nothing was verified).
    pub head_hash: [u8; 32],
}

/// What to verify.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    /// First sequence whose hash is recomputed (1 = from the start).
    pub(crate) from: u64,
    /// Last sequence to check; `None` = up to the end, including the checkpoint comparison.
    pub(crate) to: Option<u64>,
    /// Records after the checkpoint are acceptable (recovery after a crash between the log
    /// sync and the checkpoint write; the caller re-signs them).
    pub(crate) allow_ahead: bool,
}

fn problem(sequence: u64, kind: ProblemKind, detail: impl Into<String>) -> Option<Problem> {
    Some(Problem {
        sequence,
        kind,
        detail: detail.into(),
    })
}

/// Remaining sequence numbers, for telling a missing record from a moved one.
fn rest<R: Read>(scanner: &mut Scanner<R>) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    while let Some(item) = scanner.next_item()? {
        if let Scanned::Record(r) = item {
            seqs.push(r.sequence);
        }
    }
    Ok(seqs)
}

/// Verifies the log read by `scanner` against `checkpoint`.
///
/// # Errors
/// I/O errors while reading.
pub(crate) fn verify<R: Read>(
    mut scanner: Scanner<R>,
    key: &ChainKey,
    checkpoint: CheckpointState,
    range: Range,
) -> io::Result<Report> {
    let mut expected = 1u64;
    let mut previous = GENESIS;
    let mut checked = 0u64;
    let mut checkpoint_hash: Option<[u8; 32]> = None;
    let checkpoint_seq = match checkpoint {
        CheckpointState::Valid(cp) => Some(cp.sequence),
        _ => None,
    };
    let report = |checked, problem, head_sequence, head_hash| Report {
        checked,
        problem,
        head_sequence,
        head_hash,
    };
    while let Some(item) = scanner.next_item()? {
        if range.to.is_some_and(|to| expected > to) {
            return Ok(report(checked, None, expected - 1, previous));
        }
        let record = match item {
            Scanned::Record(r) => r,
            Scanned::Corrupt { offset, .. } => {
                let p = problem(
                    expected,
                    ProblemKind::Edited,
                    format!(
                        "the record at byte {offset} (expected sequence {expected}) fails its checksum"
                    ),
                );
                return Ok(report(checked, p, expected - 1, previous));
            }
            Scanned::Garbled { offset } => {
                let p = problem(
                    expected,
                    ProblemKind::Edited,
                    format!(
                        "the bytes at {offset} (expected sequence {expected}) are not a record: its length was destroyed"
                    ),
                );
                return Ok(report(checked, p, expected - 1, previous));
            }
            Scanned::Torn { offset } => {
                let p = problem(
                    expected,
                    ProblemKind::Truncated,
                    format!(
                        "the log ends inside a record at byte {offset} (expected sequence {expected})"
                    ),
                );
                return Ok(report(checked, p, expected - 1, previous));
            }
        };
        let seq = record.sequence;
        if seq == expected {
            let in_range = seq >= range.from;
            if in_range && key.link(&previous, seq, &record.event) != record.chain_hash {
                let next = scanner.next_item()?;
                if let Some(Scanned::Record(n)) = &next
                    && n.sequence == seq
                    && key.link(&previous, seq, &n.event) == n.chain_hash
                {
                    let p = problem(
                        seq,
                        ProblemKind::Inserted,
                        format!("a record not in the chain was inserted before sequence {seq}"),
                    );
                    return Ok(report(checked, p, seq - 1, previous));
                }
                let p = problem(
                    seq,
                    ProblemKind::Edited,
                    format!("sequence {seq} does not match its chain hash (changed or forged)"),
                );
                return Ok(report(checked, p, seq - 1, previous));
            }
            if in_range {
                checked += 1;
            }
            // Before the range the stored hash is trusted as the anchor.
            previous = record.chain_hash;
            if checkpoint_seq == Some(seq) {
                checkpoint_hash = Some(record.chain_hash);
            }
            expected += 1;
            continue;
        }
        if seq < expected {
            // Records 1..expected were all seen in order, so this one is a second copy (or
            // carries the impossible sequence 0).
            let p = if seq == 0 {
                problem(expected, ProblemKind::Edited, "a record carries sequence 0")
            } else {
                problem(
                    expected,
                    ProblemKind::Inserted,
                    format!("sequence {seq} appears again where {expected} was expected"),
                )
            };
            return Ok(report(checked, p, expected - 1, previous));
        }
        let later = rest(&mut scanner)?;
        let p = if later.contains(&expected) {
            problem(
                expected,
                ProblemKind::Reordered,
                format!("sequence {expected} appears after sequence {seq}"),
            )
        } else {
            problem(
                expected,
                ProblemKind::Missing,
                format!("sequence {expected} is missing (the next record is {seq})"),
            )
        };
        return Ok(report(checked, p, expected - 1, previous));
    }
    let head = expected - 1;
    if let Some(to) = range.to {
        if head < to {
            let p = problem(
                head + 1,
                ProblemKind::Truncated,
                format!("the log ends at sequence {head}, before the requested end {to}"),
            );
            return Ok(report(checked, p, head, previous));
        }
        return Ok(report(checked, None, head, previous));
    }
    let p = match checkpoint {
        CheckpointState::Missing => problem(
            head + 1,
            ProblemKind::Checkpoint,
            "the signed checkpoint file is missing; the end of the log cannot be vouched for",
        ),
        CheckpointState::BadSignature => problem(
            head + 1,
            ProblemKind::Checkpoint,
            "the checkpoint's signature does not verify (edited or forged)",
        ),
        CheckpointState::Valid(cp) if cp.sequence > head => problem(
            head + 1,
            ProblemKind::Truncated,
            format!(
                "the log ends at sequence {head} but the signed checkpoint vouches for {}",
                cp.sequence
            ),
        ),
        CheckpointState::Valid(cp) if cp.sequence > 0 && checkpoint_hash != Some(cp.hash) => {
            problem(
                cp.sequence,
                ProblemKind::Checkpoint,
                format!(
                    "sequence {} does not carry the hash the checkpoint signed",
                    cp.sequence
                ),
            )
        }
        CheckpointState::Valid(cp) if cp.sequence < head && !range.allow_ahead => problem(
            cp.sequence + 1,
            ProblemKind::Inserted,
            format!(
                "records {}..={head} are beyond the signed checkpoint",
                cp.sequence + 1
            ),
        ),
        CheckpointState::Valid(_) => None,
    };
    Ok(report(checked, p, head, previous))
}
