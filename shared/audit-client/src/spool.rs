//! The local spool: an append-only file of events the audit service has not acknowledged yet,
//! plus a cursor file saying how far replay got.
//!
//! ```text
//! spool.log    = record*          record = len:u32le crc32(event):u32le event (protobuf)
//! spool.cursor = offset:u64le crc32(offset):u32le
//! ```
//!
//! Appends are fsynced before the events count as spooled. The cursor is rewritten after
//! every acknowledged replay batch without an fsync: after a crash the cursor may lag, and
//! the audit service drops the re-sent events as duplicates (same `event_id`). Once replay
//! reaches the end the file is truncated to zero. A torn record at the end (a crash in the
//! middle of an append, which was therefore never reported as spooled) is cut off on open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use umcp_proto::audit::v1::AuditEvent;

const PREFIX_LEN: u64 = 8;
/// Far above any valid event; a larger length prefix is corruption.
const MAX_RECORD: usize = 1 << 20;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    /// The spool would exceed its configured size.
    #[error("the audit spool is full ({pending} of {max} bytes used)")]
    Full {
        /// Bytes waiting for replay.
        pending: u64,
        /// The limit.
        max: u64,
    },
    /// Writing or syncing failed.
    #[error("cannot write the audit spool: {0}")]
    Io(#[from] io::Error),
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    cursor: File,
    path: PathBuf,
    /// Offset of the first record not yet acknowledged.
    head: u64,
    /// End of the last complete record.
    end: u64,
    max_bytes: u64,
}

fn read_cursor(path: &Path) -> io::Result<u64> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if bytes.len() != 12 {
        return Ok(0);
    }
    let offset = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
    // A torn cursor means "start over": re-sent events are duplicates, never losses.
    Ok(if crc32fast::hash(&bytes[..8]) == crc {
        offset
    } else {
        0
    })
}

/// Reads the record at the reader's position; `None` at the end or at a torn record.
fn read_record<R: Read>(reader: &mut R) -> io::Result<Option<(AuditEvent, u64)>> {
    let mut prefix = [0u8; PREFIX_LEN as usize];
    match reader.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    match reader.read_exact(&mut body) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    match AuditEvent::decode(body.as_slice()) {
        Ok(event) => Ok(Some((event, PREFIX_LEN + len as u64))),
        Err(_) => Ok(None),
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir`, cutting off a torn tail.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).create(dir)?;
        let path = dir.join("spool.log");
        let cursor_path = dir.join("spool.cursor");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut head = read_cursor(&cursor_path)?;
        if head > len {
            head = 0;
        }
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(head))?;
        let mut end = head;
        while let Some((_, size)) = read_record(&mut reader)? {
            end += size;
        }
        if end < len {
            tracing::warn!(
                bytes = len - end,
                "cutting a torn write off the audit spool"
            );
            file.set_len(end)?;
            file.sync_all()?;
        }
        let cursor = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&cursor_path)?;
        Ok(Self {
            file,
            cursor,
            path,
            head,
            end,
            max_bytes,
        })
    }

    /// Bytes waiting for replay.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.end - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.end == self.head
    }

    /// Appends `events` durably, all or nothing.
    pub(crate) fn append(&mut self, events: &[AuditEvent]) -> Result<(), AppendError> {
        let mut buf = Vec::new();
        for event in events {
            let body = event.encode_to_vec();
            buf.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
        }
        let pending = self.pending_bytes();
        if pending + buf.len() as u64 > self.max_bytes {
            return Err(AppendError::Full {
                pending,
                max: self.max_bytes,
            });
        }
        let written = self
            .file
            .write_all_at(&buf, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no half-written record behind a failed sync.
            let _ = self.file.set_len(self.end);
            return Err(e.into());
        }
        self.end += buf.len() as u64;
        Ok(())
    }

    /// Up to `max` events (and about `max_bytes`) from the head, and the offset just after
    /// them.
    pub(crate) fn peek(&self, max: usize, max_bytes: usize) -> io::Result<(Vec<AuditEvent>, u64)> {
        let mut reader = BufReader::new(&self.file);
        reader.seek(SeekFrom::Start(self.head))?;
        let mut events = Vec::new();
        let mut at = self.head;
        while events.len() < max && at < self.end && at - self.head < max_bytes as u64 {
            match read_record(&mut reader)? {
                Some((event, size)) => {
                    events.push(event);
                    at += size;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} changed while in use", self.path.display()),
                    ));
                }
            }
        }
        Ok((events, at))
    }

    /// Marks everything before `to` as acknowledged; empties the file once all is.
    pub(crate) fn advance(&mut self, to: u64) -> io::Result<()> {
        self.head = to.min(self.end);
        if self.head == self.end {
            self.file.set_len(0)?;
            self.file.sync_data()?;
            self.head = 0;
            self.end = 0;
        }
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&self.head.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..8]);
        bytes[8..].copy_from_slice(&crc.to_le_bytes());
        self.cursor.write_all_at(&bytes, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            event_id: id.into(),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn append_peek_advance_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&[event("a"), event("b"), event("c")]).unwrap();
        let (events, next) = spool.peek(2, 1 << 20).unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        spool.advance(next).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (events, next) = spool.peek(10, 1 << 20).unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
        spool.advance(next).unwrap();
        assert!(spool.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join("spool.log"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_limit_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 200).unwrap();
        spool.append(&[event("a")]).unwrap();
        let good = spool.pending_bytes();
        drop(spool);
        let path = dir.path().join("spool.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[50, 0, 0, 0, 1, 2]);
        std::fs::write(&path, bytes).unwrap();
        let mut spool = Spool::open(dir.path(), 200).unwrap();
        assert_eq!(spool.pending_bytes(), good);
        let big = AuditEvent {
            event_id: "x".repeat(300),
            ..AuditEvent::default()
        };
        assert!(matches!(
            spool.append(&[big]),
            Err(AppendError::Full { .. })
        ));
        assert_eq!(spool.pending_bytes(), good);
    }
}
