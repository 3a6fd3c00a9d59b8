//! Recomputing the chain from the bytes on disk and naming the first inconsistency.
//!
//! Walks the records in file order, expecting sequence numbers 1, 2, 3, … Each problem class
//! shows up differently:
//! - edited: the checksum or the keyed chain hash of a record does not match;
//! - missing: a sequence number never appears;
//! - reordered: a sequence number appears later than a higher one;
//! - inserted: a record that is not part of the chain (a duplicate sequence number, or a
//!   forged record directly followed by the genuine one);
//! - truncated: the log ends before the head of the MAC'd or of the Ed25519-signed checkpoint,
//!   or mid-record;
//! - checkpoint: a checkpoint is missing, forged, or signs another hash than the log holds.

use std::fmt;
use std::io::{self, Read};

use crate::chain::{ChainKey, CheckpointState, GENESIS};
use crate::frame::{RawRecord, Scanned, Scanner};
use crate::signed::SignedState;

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
    /// A checkpoint (MAC'd or Ed25519-signed) is missing, forged or inconsistent.
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
    /// Recovery at start-up: records after the MAC'd checkpoint are acceptable (a crash
    /// between the log sync and the checkpoint write; the caller re-signs them), and so is a
    /// missing Ed25519-signed checkpoint (none yet, or a data directory from before they
    /// existed; the caller signs the head).
    pub(crate) recovering: bool,
}

fn problem(sequence: u64, kind: ProblemKind, detail: impl Into<String>) -> Option<Problem> {
    Some(Problem {
        sequence,
        kind,
        detail: detail.into(),
    })
}

/// The checkpoints a whole log is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchors {
    /// The MAC'd checkpoint, rewritten on every commit.
    pub(crate) mac: CheckpointState,
    /// The latest Ed25519-signed checkpoint.
    pub(crate) signed: SignedState,
}

/// Verifies the log read by `scanner` against its checkpoints.
///
/// The walk stops at the first problem: after it the chain has no trusted anchor, so anything
/// later would be noise. Each step below names one way the file can differ from the chain.
///
/// # Errors
/// I/O errors while reading.
pub(crate) fn verify<R: Read>(
    mut scanner: Scanner<R>,
    key: &ChainKey,
    anchors: Anchors,
    range: Range,
) -> io::Result<Report> {
    let mut walk = Walk::new(anchors);
    while let Some(item) = scanner.next_item()? {
        if range.to.is_some_and(|to| walk.expected > to) {
            return Ok(walk.report(None));
        }
        let record = match item {
            Scanned::Record(r) => r,
            unreadable => return Ok(walk.report(unreadable_problem(&unreadable, walk.expected))),
        };
        let found = match record.sequence {
            seq if seq == walk.expected => walk.link(&record, &mut scanner, key, range.from)?,
            seq if seq < walk.expected => repeated_problem(seq, walk.expected),
            seq => Some(out_of_place_problem(&mut scanner, seq, walk.expected)?),
        };
        if found.is_some() {
            return Ok(walk.report(found));
        }
    }
    let problem = end_problem(&walk, anchors, range);
    Ok(walk.report(problem))
}

/// Where a walk over the records stands: every record before `expected` was in order and,
/// within the range, matched its chain hash.
#[derive(Debug)]
struct Walk {
    /// The sequence the next record must carry.
    expected: u64,
    /// Chain hash of `expected - 1` (genesis before the first record).
    previous: [u8; 32],
    /// Records whose hash was recomputed.
    checked: u64,
    /// The sequence the MAC'd checkpoint names, and the hash the log holds there once seen.
    mac_seq: Option<u64>,
    mac_hash: Option<[u8; 32]>,
    /// The same for the Ed25519-signed checkpoint.
    signed_seq: Option<u64>,
    signed_hash: Option<[u8; 32]>,
}

impl Walk {
    fn new(anchors: Anchors) -> Self {
        Self {
            expected: 1,
            previous: GENESIS,
            checked: 0,
            mac_seq: match anchors.mac {
                CheckpointState::Valid(cp) => Some(cp.sequence),
                _ => None,
            },
            mac_hash: None,
            signed_seq: match anchors.signed {
                SignedState::Valid(cp) => Some(cp.sequence),
                _ => None,
            },
            signed_hash: None,
        }
    }

    /// The report as of now: the head is the last record accepted.
    fn report(&self, problem: Option<Problem>) -> Report {
        Report {
            checked: self.checked,
            problem,
            head_sequence: self.expected - 1,
            head_hash: self.previous,
        }
    }

    /// Accepts `record`, the expected next one, if (within the range) it extends the chain.
    /// If not, tells an inserted forgery (the genuine record follows it) from an edit.
    fn link<R: Read>(
        &mut self,
        record: &RawRecord,
        scanner: &mut Scanner<R>,
        key: &ChainKey,
        from: u64,
    ) -> io::Result<Option<Problem>> {
        let seq = record.sequence;
        let in_range = seq >= from;
        if in_range && key.link(&self.previous, seq, &record.event) != record.chain_hash {
            let next = scanner.next_item()?;
            if let Some(Scanned::Record(n)) = &next
                && n.sequence == seq
                && key.link(&self.previous, seq, &n.event) == n.chain_hash
            {
                return Ok(problem(
                    seq,
                    ProblemKind::Inserted,
                    format!("a record not in the chain was inserted before sequence {seq}"),
                ));
            }
            return Ok(problem(
                seq,
                ProblemKind::Edited,
                format!("sequence {seq} does not match its chain hash (changed or forged)"),
            ));
        }
        if in_range {
            self.checked += 1;
        }
        // Before the range the stored hash is trusted as the anchor.
        self.previous = record.chain_hash;
        if self.mac_seq == Some(seq) {
            self.mac_hash = Some(record.chain_hash);
        }
        if self.signed_seq == Some(seq) {
            self.signed_hash = Some(record.chain_hash);
        }
        self.expected += 1;
        Ok(None)
    }
}

/// What the scanner could not read as a record, where `expected` was due.
fn unreadable_problem(item: &Scanned, expected: u64) -> Option<Problem> {
    match *item {
        Scanned::Record(_) => None,
        Scanned::Corrupt { offset, .. } => problem(
            expected,
            ProblemKind::Edited,
            format!(
                "the record at byte {offset} (expected sequence {expected}) fails its checksum"
            ),
        ),
        Scanned::Garbled { offset } => problem(
            expected,
            ProblemKind::Edited,
            format!(
                "the bytes at {offset} (expected sequence {expected}) are not a record: its length was destroyed"
            ),
        ),
        Scanned::Torn { offset } => problem(
            expected,
            ProblemKind::Truncated,
            format!("the log ends inside a record at byte {offset} (expected sequence {expected})"),
        ),
    }
}

/// A record whose sequence `seq` is below `expected`. Records 1..expected were all seen in
/// order, so this one is a second copy (or carries the impossible sequence 0).
fn repeated_problem(seq: u64, expected: u64) -> Option<Problem> {
    if seq == 0 {
        problem(expected, ProblemKind::Edited, "a record carries sequence 0")
    } else {
        problem(
            expected,
            ProblemKind::Inserted,
            format!("sequence {seq} appears again where {expected} was expected"),
        )
    }
}

/// A record whose sequence `seq` is above `expected`: `expected` was moved later (reordered)
/// or is gone (missing). Only the rest of the log can tell, so this reads it.
fn out_of_place_problem<R: Read>(
    scanner: &mut Scanner<R>,
    seq: u64,
    expected: u64,
) -> io::Result<Problem> {
    let later = rest(scanner)?;
    let (kind, detail) = if later.contains(&expected) {
        (
            ProblemKind::Reordered,
            format!("sequence {expected} appears after sequence {seq}"),
        )
    } else {
        (
            ProblemKind::Missing,
            format!("sequence {expected} is missing (the next record is {seq})"),
        )
    };
    Ok(Problem {
        sequence: expected,
        kind,
        detail,
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

/// Once every record was read in order: does the log end where it should? A bounded range
/// only needs to reach its end; a whole log is held against both checkpoints, which are what
/// make a cut-off tail detectable at all.
fn end_problem(walk: &Walk, anchors: Anchors, range: Range) -> Option<Problem> {
    let head = walk.expected - 1;
    if let Some(to) = range.to {
        if head >= to {
            return None;
        }
        return problem(
            head + 1,
            ProblemKind::Truncated,
            format!("the log ends at sequence {head}, before the requested end {to}"),
        );
    }
    mac_problem(anchors.mac, head, walk.mac_hash, range.recovering)
        .or_else(|| signed_problem(anchors.signed, head, walk.signed_hash, range.recovering))
}

/// The MAC'd checkpoint against a whole chain ending at `head`, whose record at the
/// checkpoint's sequence carries `hash_there`.
fn mac_problem(
    checkpoint: CheckpointState,
    head: u64,
    hash_there: Option<[u8; 32]>,
    recovering: bool,
) -> Option<Problem> {
    match checkpoint {
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
        CheckpointState::Valid(cp) if cp.sequence > 0 && hash_there != Some(cp.hash) => problem(
            cp.sequence,
            ProblemKind::Checkpoint,
            format!(
                "sequence {} does not carry the hash the checkpoint signed",
                cp.sequence
            ),
        ),
        // Records after the checkpoint are a crash between the log sync and the checkpoint
        // write only at start-up (recovery re-signs them); later they were added behind it.
        CheckpointState::Valid(cp) if cp.sequence < head && !recovering => problem(
            cp.sequence + 1,
            ProblemKind::Inserted,
            format!(
                "records {}..={head} are beyond the signed checkpoint",
                cp.sequence + 1
            ),
        ),
        CheckpointState::Valid(_) => None,
    }
}

/// The Ed25519-signed checkpoint against a whole chain ending at `head`, whose record at the
/// signed sequence carries `hash_there`.
fn signed_problem(
    signed: SignedState,
    head: u64,
    hash_there: Option<[u8; 32]>,
    recovering: bool,
) -> Option<Problem> {
    match signed {
        SignedState::Missing if recovering => None,
        SignedState::Missing => problem(
            head + 1,
            ProblemKind::Checkpoint,
            "the Ed25519-signed checkpoint file is missing",
        ),
        SignedState::BadSignature => problem(
            head + 1,
            ProblemKind::Checkpoint,
            "the Ed25519-signed checkpoint does not verify with this service's key (edited or \
             forged)",
        ),
        SignedState::Valid(cp) if cp.sequence > head => problem(
            head + 1,
            ProblemKind::Truncated,
            format!(
                "the log ends at sequence {head} but the Ed25519-signed checkpoint of unix time \
                 {} vouches for {}",
                cp.seconds, cp.sequence
            ),
        ),
        SignedState::Valid(cp) if hash_there.unwrap_or(GENESIS) != cp.hash => problem(
            cp.sequence.max(1),
            ProblemKind::Checkpoint,
            format!(
                "sequence {} does not carry the hash the Ed25519-signed checkpoint signed",
                cp.sequence
            ),
        ),
        SignedState::Valid(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Checkpoint;
    use crate::frame::{self, HEADER_LEN};
    use crate::signed::CheckpointKey;

    /// A log of `n` records and the chain hash of each.
    fn log(key: &ChainKey, n: u64) -> (Vec<u8>, Vec<[u8; 32]>) {
        let mut bytes = frame::header().to_vec();
        let mut hashes = vec![GENESIS];
        for seq in 1..=n {
            let event = format!("event {seq}");
            let hash = key.link(&hashes[seq as usize - 1], seq, event.as_bytes());
            frame::encode(&mut bytes, seq, &hash, event.as_bytes());
            hashes.push(hash);
        }
        (bytes, hashes)
    }

    fn run(bytes: &[u8], key: &ChainKey, anchors: Anchors, recovering: bool) -> Option<Problem> {
        let scanner = Scanner::new(&bytes[HEADER_LEN as usize..], bytes.len() as u64);
        let range = Range {
            from: 1,
            to: None,
            recovering,
        };
        verify(scanner, key, anchors, range).unwrap().problem
    }

    #[test]
    fn a_log_cut_behind_its_ed25519_checkpoint_is_truncated() {
        let key = ChainKey::from_bytes([1; 32]);
        let signer = CheckpointKey::from_seed([2; 32]);
        let (full, hashes) = log(&key, 5);
        let signed = |seq: u64| {
            SignedState::Valid(signer.sign(seq, hashes[seq as usize], std::time::SystemTime::now()))
        };
        let mac = |seq: u64| {
            CheckpointState::Valid(Checkpoint {
                sequence: seq,
                hash: hashes[seq as usize],
            })
        };
        let whole = Anchors {
            mac: mac(5),
            signed: signed(5),
        };
        assert_eq!(run(&full, &key, whole, false), None);
        // Records after the signed head are normal: it lags by design.
        let lagging = Anchors {
            mac: mac(5),
            signed: signed(3),
        };
        assert_eq!(run(&full, &key, lagging, false), None);
        // Cut to 3 records, with the MAC'd checkpoint of that time put back: only the signed
        // checkpoint still knows better.
        let (cut, _) = log(&key, 3);
        let rolled_back = Anchors {
            mac: mac(3),
            signed: signed(5),
        };
        let p = run(&cut, &key, rolled_back, true).unwrap();
        assert_eq!((p.kind, p.sequence), (ProblemKind::Truncated, 4), "{p}");
    }

    #[test]
    fn a_forged_or_foreign_ed25519_checkpoint_is_a_checkpoint_problem() {
        let key = ChainKey::from_bytes([1; 32]);
        let signer = CheckpointKey::from_seed([2; 32]);
        let (bytes, hashes) = log(&key, 4);
        let mac = CheckpointState::Valid(Checkpoint {
            sequence: 4,
            hash: hashes[4],
        });
        // Signing a hash the log does not hold at that sequence (a rewritten history).
        let other = signer.sign(2, [9; 32], std::time::SystemTime::now());
        let anchors = Anchors {
            mac,
            signed: SignedState::Valid(other),
        };
        let p = run(&bytes, &key, anchors, false).unwrap();
        assert_eq!((p.kind, p.sequence), (ProblemKind::Checkpoint, 2), "{p}");
        for (signed, recovering) in [
            (SignedState::BadSignature, false),
            (SignedState::BadSignature, true),
            (SignedState::Missing, false),
        ] {
            let p = run(&bytes, &key, Anchors { mac, signed }, recovering).unwrap();
            assert_eq!((p.kind, p.sequence), (ProblemKind::Checkpoint, 5), "{p}");
        }
        // Before the first signature (or from an older version): recovery signs the head.
        let anchors = Anchors {
            mac,
            signed: SignedState::Missing,
        };
        assert_eq!(run(&bytes, &key, anchors, true), None);
    }
}
