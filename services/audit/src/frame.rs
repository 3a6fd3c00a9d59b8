//! The on-disk framing of the log file.
//!
//! ```text
//! file   = header record*
//! header = "UMCPAUDL" version:u32le reserved:u32le              (16 bytes)
//! record = body_len:u32le crc32(body):u32le body
//! body   = sequence:u64le chain_hash:[u8; 32] event
//! event  = protobuf `AuditEvent` with `sequence` set and `chain_hash` empty
//! ```
//!
//! The event bytes are hashed exactly as stored, so the chain never depends on re-encoding
//! (protobuf maps have no canonical order). The CRC catches torn writes and bit rot cheaply;
//! the keyed chain catches deliberate edits (anyone can recompute a CRC).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// File magic.
pub(crate) const MAGIC: &[u8; 8] = b"UMCPAUDL";
/// Format version.
pub(crate) const VERSION: u32 = 1;
/// Header length.
pub(crate) const HEADER_LEN: u64 = 16;
/// Record prefix: length and CRC.
pub(crate) const PREFIX_LEN: usize = 8;
/// Sequence and chain hash before the event bytes.
pub(crate) const BODY_FIXED_LEN: usize = 8 + 32;
/// Largest body accepted when reading: far above any valid event (details are capped at
/// 16 KiB), small enough that a corrupted length cannot make us allocate gigabytes.
pub(crate) const MAX_BODY_LEN: usize = 1 << 20;

/// The file header bytes.
pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Whether `bytes` is a header this code understands.
pub(crate) fn header_ok(bytes: &[u8]) -> bool {
    bytes.len() == HEADER_LEN as usize
        && &bytes[..8] == MAGIC
        && bytes[8..12] == VERSION.to_le_bytes()
}

/// Appends one framed record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, sequence: u64, chain_hash: &[u8; 32], event: &[u8]) {
    let body_len = BODY_FIXED_LEN + event.len();
    let start = out.len();
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(chain_hash);
    out.extend_from_slice(event);
    let crc = crc32fast::hash(&out[start + PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A structurally valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    /// Offset of the record's length prefix in the file.
    pub(crate) offset: u64,
    /// Total framed length (prefix + body).
    pub(crate) len: u32,
    pub(crate) sequence: u64,
    pub(crate) chain_hash: [u8; 32],
    /// The protobuf event bytes, as hashed.
    pub(crate) event: Vec<u8>,
}

/// What the scanner found at an offset.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A record whose checksum matches.
    Record(RawRecord),
    /// A complete record whose checksum does not match (edited or rotten). Scanning continues
    /// after it, since its length prefix was plausible.
    Corrupt { offset: u64 },
    /// A record cut short by the end of the file. Scanning stops here.
    Torn { offset: u64 },
    /// A length prefix that makes no sense (e.g. zeroed): the following records cannot be
    /// found any more. Scanning stops here.
    Garbled { offset: u64 },
}

/// Parses a body whose checksum matched.
fn parse_body(offset: u64, len: u32, body: Vec<u8>) -> Option<RawRecord> {
    if body.len() < BODY_FIXED_LEN {
        return None;
    }
    let sequence = u64::from_le_bytes(body[..8].try_into().ok()?);
    let chain_hash: [u8; 32] = body[8..40].try_into().ok()?;
    let mut event = body;
    event.drain(..BODY_FIXED_LEN);
    Some(RawRecord {
        offset,
        len,
        sequence,
        chain_hash,
        event,
    })
}

/// Reads records sequentially from a reader positioned just after the header.
#[derive(Debug)]
pub(crate) struct Scanner<R> {
    reader: R,
    offset: u64,
    /// Stop before this offset (bytes past it may be a commit in flight).
    end: u64,
    done: bool,
}

impl<R: Read> Scanner<R> {
    pub(crate) fn new(reader: R, end: u64) -> Self {
        Self {
            reader,
            offset: HEADER_LEN,
            end,
            done: false,
        }
    }

    fn read_exact_or_torn(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.reader.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next item, `None` at the clean end.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<Scanned>> {
        if self.done || self.offset >= self.end {
            return Ok(None);
        }
        let offset = self.offset;
        let torn = |s: &mut Self| {
            s.done = true;
            Ok(Some(Scanned::Torn { offset }))
        };
        if self.end - offset < PREFIX_LEN as u64 {
            return torn(self);
        }
        let mut prefix = [0u8; PREFIX_LEN];
        if !self.read_exact_or_torn(&mut prefix)? {
            return torn(self);
        }
        let body_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let total = (PREFIX_LEN + body_len) as u64;
        if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
            self.done = true;
            return Ok(Some(Scanned::Garbled { offset }));
        }
        if offset + total > self.end {
            return torn(self);
        }
        let mut body = vec![0u8; body_len];
        if !self.read_exact_or_torn(&mut body)? {
            return torn(self);
        }
        self.offset += total;
        let len = u32::try_from(total).unwrap_or(u32::MAX);
        if crc32fast::hash(&body) != crc {
            return Ok(Some(Scanned::Corrupt { offset }));
        }
        Ok(Some(match parse_body(offset, len, body) {
            Some(record) => Scanned::Record(record),
            None => Scanned::Corrupt { offset },
        }))
    }
}

/// Reads one record at a known offset (from the index).
///
/// # Errors
/// I/O errors, or `InvalidData` when the bytes there are no longer a valid record (the file
/// was changed under the running service).
pub(crate) fn read_at(file: &File, offset: u64, len: u32) -> io::Result<RawRecord> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "record changed on disk");
    if buf.len() < PREFIX_LEN {
        return Err(invalid());
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if body_len + PREFIX_LEN != buf.len() || crc32fast::hash(&buf[PREFIX_LEN..]) != crc {
        return Err(invalid());
    }
    buf.drain(..PREFIX_LEN);
    parse_body(offset, len, buf).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = header().to_vec();
        for (seq, event) in records {
            encode(&mut out, *seq, &[7; 32], event);
        }
        out
    }

    fn scan_all(bytes: &[u8]) -> Vec<Scanned> {
        let mut scanner = Scanner::new(&bytes[HEADER_LEN as usize..], bytes.len() as u64);
        let mut items = Vec::new();
        while let Some(item) = scanner.next_item().unwrap() {
            items.push(item);
        }
        items
    }

    #[test]
    fn records_round_trip() {
        let bytes = file_with(&[(1, b"one"), (2, b"two")]);
        assert!(header_ok(&bytes[..16]));
        let items = scan_all(&bytes);
        assert_eq!(items.len(), 2);
        let Scanned::Record(r) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((r.sequence, r.event.as_slice()), (2, b"two".as_slice()));
    }

    #[test]
    fn a_cut_record_is_torn_and_a_flipped_byte_is_corrupt() {
        let bytes = file_with(&[(1, b"one"), (2, b"two")]);
        let items = scan_all(&bytes[..bytes.len() - 2]);
        assert!(matches!(items[1], Scanned::Torn { .. }), "{items:?}");
        let mut edited = bytes.clone();
        edited[16 + PREFIX_LEN + 41] ^= 1;
        let items = scan_all(&edited);
        assert!(matches!(items[0], Scanned::Corrupt { .. }), "{items:?}");
        assert!(matches!(items[1], Scanned::Record(_)), "{items:?}");
        let mut wiped = bytes.clone();
        wiped[16..24].fill(0);
        let items = scan_all(&wiped);
        assert!(
            matches!(items[..], [Scanned::Garbled { offset: 16 }]),
            "{items:?}"
        );
    }
}
