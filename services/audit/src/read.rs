//! The blocking read paths over [`Shared`]: a query page, a replay chunk, a verification. Each
//! runs on a blocking thread (the callers use `spawn_blocking`): they read files.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};

use prost::Message;
use umcp_proto::audit::v1::AuditEvent;

use crate::chain::read_checkpoint;
use crate::error::AuditError;
use crate::frame::{self, HEADER_LEN, Scanner};
use crate::index::{Filter, page_token};
use crate::log::Page;
use crate::shared::Shared;
use crate::signed::read_signed;
use crate::verify::{self, Anchors, Range, Report};

/// The committed record at `offset`, with its sequence and chain hash filled in.
fn read_event(shared: &Shared, offset: u64, len: u32) -> Result<AuditEvent, AuditError> {
    let raw = frame::read_at(&shared.reader, offset, len)
        .map_err(|e| AuditError::ReadFailed(format!("reading the audit log at {offset}: {e}")))?;
    let mut event = AuditEvent::decode(raw.event.as_slice())
        .map_err(|e| AuditError::ReadFailed(format!("decoding the record at {offset}: {e}")))?;
    event.sequence = raw.sequence;
    event.chain_hash = hex::encode(raw.chain_hash);
    Ok(event)
}

/// Reads the records at `locations` and keeps those `filter` really matches: the index holds
/// correlation hashes, so its candidates are confirmed against the real values.
fn read_matching(
    shared: &Shared,
    filter: &Filter,
    locations: impl ExactSizeIterator<Item = (u64, u32)>,
) -> Result<Vec<AuditEvent>, AuditError> {
    let mut events = Vec::with_capacity(locations.len());
    for (offset, len) in locations {
        let event = read_event(shared, offset, len)?;
        if filter.matches(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// One page of events matching `filter`, newest first, below the sequence `before`; `None`
/// when `before` is no cursor of this log.
pub(crate) fn query_page(
    shared: &Shared,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
    fingerprint: u32,
) -> Result<Option<Page>, AuditError> {
    // Collect locations under the lock, read the file after releasing it: commits wait for
    // the index write lock, and reading must not hold them up.
    let (locations, next) = {
        let index = shared.index.read();
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
    let events = read_matching(
        shared,
        filter,
        locations.into_iter().map(|(offset, len, _)| (offset, len)),
    )?;
    Ok(Some(Page {
        events,
        next_token: next.map(|seq| page_token(seq, fingerprint)),
    }))
}

/// At most `max` committed events matching `filter` with a sequence above `after`, in order,
/// the last sequence examined (resume after it) and whether the scan reached the head.
pub(crate) fn read_after(
    shared: &Shared,
    filter: &Filter,
    after: u64,
    max: usize,
) -> Result<(Vec<AuditEvent>, u64, bool), AuditError> {
    let (locations, examined, at_head) = {
        let index = shared.index.read();
        let start = index.position_after(after);
        let (positions, end) = index.scan_forward(filter, start, max);
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
    let events = read_matching(shared, filter, locations.into_iter())?;
    Ok((events, examined, at_head))
}

/// Recomputes the chain over `from..=to` (0 = from the start / to the end) from the bytes on
/// disk, against a consistent snapshot of both checkpoints.
pub(crate) fn verify(shared: &Shared, from: u64, to: u64) -> Result<Report, AuditError> {
    let io = |e: std::io::Error| AuditError::ReadFailed(format!("verifying the audit log: {e}"));
    // Read before the log end: it only ever signs records already on disk.
    let signed =
        read_signed(&shared.signed_path, &shared.signer.key().verifying_key()).map_err(io)?;
    // The writer holds this lock from its append to its checkpoint write, so the end and the
    // checkpoint read here belong to the same commit.
    let (checkpoint, end) = {
        let _commit = shared.commit_lock.lock();
        let checkpoint = read_checkpoint(&shared.checkpoint_path, &shared.key).map_err(io)?;
        let end = std::fs::metadata(&shared.log_path).map_err(io)?.len();
        (checkpoint, end)
    };
    let mut file = BufReader::with_capacity(1 << 20, File::open(&shared.log_path).map_err(io)?);
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
        &shared.key,
        anchors,
        range,
    )
    .map_err(io)
}
