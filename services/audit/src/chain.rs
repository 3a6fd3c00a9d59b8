//! The keyed hash chain and the signed checkpoint.
//!
//! `chain(n) = HMAC-SHA256(key, chain(n-1) || sequence(n) as u64 big-endian || event bytes(n))`
//! with `chain(0)` = 32 zero bytes. Without the key nobody can produce a record that verifies,
//! so edits, insertions and reorderings show up; deletions and reorderings also break the
//! sequence numbers. Cutting records off the end keeps a valid chain, which is why the head
//! is also written to a checkpoint signed with the same key: a log shorter than its checkpoint
//! was truncated.
//!
//! The checkpoint file holds two fixed-size slots written alternately in place, each with its
//! own MAC. A torn write can only damage the slot being written; the other still holds the
//! previous head. Reading takes the valid slot with the higher sequence.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Hash of the (empty) record before the first.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

const SLOT_MAGIC: &[u8; 8] = b"UMCPCKPT";
/// magic + sequence + hash + mac.
const SLOT_LEN: u64 = 8 + 8 + 32 + 32;
/// Domain separation: a checkpoint MAC can never be confused with a chain hash.
const CHECKPOINT_CONTEXT: &[u8] = b"umcp-audit-checkpoint-v1";

/// The chain key (never logged or printed).
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

impl ChainKey {
    /// A key from 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters.
    ///
    /// # Errors
    /// When the text is not 64 hex characters.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "the key must be hex".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the key must be 32 bytes (64 hex characters)".to_owned())?;
        Ok(Self(bytes))
    }

    /// Loads the key file, creating it with a random key (mode 0600) when it does not exist.
    ///
    /// # Errors
    /// When the file cannot be read or created, holds no valid key, or is readable by others.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        load_or_create_secret(path, "audit chain key").map(Self)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// `chain(n)` from `chain(n-1)`.
    #[must_use]
    pub fn link(&self, previous: &[u8; 32], sequence: u64, event: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(previous);
        mac.update(&sequence.to_be_bytes());
        mac.update(event);
        mac.finalize().into_bytes().into()
    }

    fn checkpoint_mac(&self, sequence: u64, hash: &[u8; 32]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(CHECKPOINT_CONTEXT);
        mac.update(&sequence.to_be_bytes());
        mac.update(hash);
        mac.finalize().into_bytes().into()
    }
}

/// Loads 32 secret bytes kept as hex in `path`, creating the file with random bytes (mode
/// 0600) when it does not exist. `what` names the key in the log line of a creation.
///
/// # Errors
/// When the file cannot be read or created, holds no 64 hex characters, or is readable by
/// others.
pub(crate) fn load_or_create_secret(path: &Path, what: &str) -> Result<[u8; 32], String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{} is accessible by group or others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                ));
            }
            ChainKey::from_hex(&text)
                .map(|k| k.0)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| format!("no os randomness: {e}"))?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(hex::encode(bytes).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), key = what, "created a new audit key");
            Ok(bytes)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A signed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) sequence: u64,
    pub(crate) hash: [u8; 32],
}

/// What reading the checkpoint file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointState {
    Valid(Checkpoint),
    Missing,
    /// Present, but no slot carries a valid MAC.
    BadSignature,
}

/// The checkpoint file, open for rewriting.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    file: File,
    /// Slot written next.
    next_slot: u64,
    sync: bool,
}

fn slot_bytes(key: &ChainKey, cp: Checkpoint) -> [u8; SLOT_LEN as usize] {
    let mut out = [0u8; SLOT_LEN as usize];
    out[..8].copy_from_slice(SLOT_MAGIC);
    out[8..16].copy_from_slice(&cp.sequence.to_le_bytes());
    out[16..48].copy_from_slice(&cp.hash);
    out[48..80].copy_from_slice(&key.checkpoint_mac(cp.sequence, &cp.hash));
    out
}

fn parse_slot(key: &ChainKey, bytes: &[u8]) -> Option<Checkpoint> {
    if bytes.len() != SLOT_LEN as usize || &bytes[..8] != SLOT_MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let hash: [u8; 32] = bytes[16..48].try_into().ok()?;
    let mac: [u8; 32] = bytes[48..80].try_into().ok()?;
    // Constant-time comparison through the hmac crate.
    let mut check = key.mac();
    check.update(CHECKPOINT_CONTEXT);
    check.update(&sequence.to_be_bytes());
    check.update(&hash);
    check.verify_slice(&mac).ok()?;
    Some(Checkpoint { sequence, hash })
}

/// Reads the checkpoint at `path`.
///
/// # Errors
/// I/O errors other than "not found".
pub(crate) fn read_checkpoint(path: &Path, key: &ChainKey) -> io::Result<CheckpointState> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CheckpointState::Missing),
        Err(e) => return Err(e),
    };
    let best = bytes
        .chunks(SLOT_LEN as usize)
        .take(2)
        .filter_map(|slot| parse_slot(key, slot))
        .max_by_key(|cp| cp.sequence);
    Ok(best.map_or(CheckpointState::BadSignature, CheckpointState::Valid))
}

impl CheckpointFile {
    /// Opens (or creates) the checkpoint file; `sync` makes every rewrite durable on its own.
    pub(crate) fn open(path: &Path, sync: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            file,
            next_slot: 0,
            sync,
        })
    }

    /// Writes `cp` into the slot not holding the newest head.
    pub(crate) fn write(&mut self, key: &ChainKey, cp: Checkpoint) -> io::Result<()> {
        self.file
            .write_all_at(&slot_bytes(key, cp), self.next_slot * SLOT_LEN)?;
        self.next_slot = 1 - self.next_slot;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Writes `cp` into both slots and syncs (at creation and after recovery).
    pub(crate) fn reset(&mut self, key: &ChainKey, cp: Checkpoint) -> io::Result<()> {
        let slot = slot_bytes(key, cp);
        self.file.write_all_at(&slot, 0)?;
        self.file.write_all_at(&slot, SLOT_LEN)?;
        self.file.set_len(2 * SLOT_LEN)?;
        self.file.sync_all()?;
        self.next_slot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_depend_on_key_previous_sequence_and_bytes() {
        let a = ChainKey::from_bytes([1; 32]);
        let b = ChainKey::from_bytes([2; 32]);
        let h = a.link(&GENESIS, 1, b"event");
        assert_ne!(h, b.link(&GENESIS, 1, b"event"));
        assert_ne!(h, a.link(&[1; 32], 1, b"event"));
        assert_ne!(h, a.link(&GENESIS, 2, b"event"));
        assert_ne!(h, a.link(&GENESIS, 1, b"evenT"));
        assert_eq!(h, a.link(&GENESIS, 1, b"event"));
    }

    #[test]
    fn checkpoint_slots_survive_a_torn_slot_and_reject_forgery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let key = ChainKey::from_bytes([9; 32]);
        let mut file = CheckpointFile::open(&path, false).unwrap();
        file.reset(
            &key,
            Checkpoint {
                sequence: 0,
                hash: GENESIS,
            },
        )
        .unwrap();
        file.write(
            &key,
            Checkpoint {
                sequence: 5,
                hash: [5; 32],
            },
        )
        .unwrap();
        file.write(
            &key,
            Checkpoint {
                sequence: 6,
                hash: [6; 32],
            },
        )
        .unwrap();
        let state = read_checkpoint(&path, &key).unwrap();
        assert_eq!(
            state,
            CheckpointState::Valid(Checkpoint {
                sequence: 6,
                hash: [6; 32]
            })
        );
        // Tear the newest slot: the previous head remains.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_LEN as usize + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let state = read_checkpoint(&path, &key).unwrap();
        assert_eq!(
            state,
            CheckpointState::Valid(Checkpoint {
                sequence: 5,
                hash: [5; 32]
            })
        );
        let other = ChainKey::from_bytes([8; 32]);
        assert_eq!(
            read_checkpoint(&path, &other).unwrap(),
            CheckpointState::BadSignature
        );
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.key");
        let first = ChainKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ChainKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            ChainKey::load_or_create(&path)
                .unwrap_err()
                .contains("chmod 600")
        );
    }
}
