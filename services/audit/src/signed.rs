//! Ed25519-signed checkpoints: what an auditor keeps out of band.
//!
//! The MAC'd checkpoint (`chain.rs`) is rewritten on every commit, but only the holder of the
//! chain key can check it, and that key can also forge records. So, every few events or
//! seconds (see `signer.rs`), the service also signs (head sequence, head chain hash, time)
//! with an Ed25519 key of its own. Anyone with the public key checks such a checkpoint without
//! a secret, and an exported one pins the history up to its head: a log that later does not
//! carry that hash at that sequence was rewritten or cut.
//!
//! The signed message (`ExportCheckpointResponse` documents it for auditors):
//!
//! ```text
//! "umcp-audit-checkpoint-ed25519-v1" · sequence u64be · hash [32] · seconds i64be · nanos u32be
//! ```
//!
//! The file holds only the latest checkpoint, `magic · sequence · hash · seconds · nanos ·
//! signature` (little-endian numbers), replaced atomically (temporary file, fsync, rename,
//! fsync of the directory). It is written rarely, so it needs no slots.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::chain::load_or_create_secret;

/// The latest signed checkpoint, in the data directory.
pub(crate) const SIGNED_FILE: &str = "signed_checkpoint";
/// The Ed25519 key (32-byte seed, hex, mode 0600), in the data directory.
pub(crate) const SIGNING_KEY_FILE: &str = "signing.key";

/// Domain separation: the first 32 bytes of every signed message, so the signature can never
/// be mistaken for one over anything else.
pub const CONTEXT: &[u8; 32] = b"umcp-audit-checkpoint-ed25519-v1";
/// Length of a signed message.
pub const MESSAGE_LEN: usize = 32 + 8 + 32 + 8 + 4;

const FILE_MAGIC: &[u8; 8] = b"UMCPSIGN";
/// magic + sequence + hash + seconds + nanos + signature.
const FILE_LEN: usize = 8 + 8 + 32 + 8 + 4 + 64;

/// The Ed25519 checkpoint key (the secret half is never logged or printed).
#[derive(Clone)]
pub struct CheckpointKey {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// The key of a 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// Loads the key file, creating it with a random seed (mode 0600) when it does not exist.
    ///
    /// # Errors
    /// When the file cannot be read or created, holds no valid seed, or is readable by others.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        load_or_create_secret(path, "audit checkpoint signing key").map(Self::from_seed)
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The raw public key, base64url without padding (the `x` of its JWK).
    #[must_use]
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The RFC 7638 thumbprint of the public key.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs the head `sequence`/`hash` as of `time`.
    #[must_use]
    pub fn sign(&self, sequence: u64, hash: [u8; 32], time: SystemTime) -> SignedCheckpoint {
        // A clock before 1970 is broken; the checkpoint still pins the head.
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut cp = SignedCheckpoint {
            sequence,
            hash,
            seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            nanos: since_epoch.subsec_nanos(),
            signature: [0; 64],
        };
        cp.signature = self.key.sign(&cp.message()).to_bytes();
        cp
    }
}

/// The RFC 7638 JWK thumbprint of an Ed25519 public key: base64url(SHA-256 of
/// `{"crv":"Ed25519","kty":"OKP","x":"…"}`), computable by any JOSE library.
#[must_use]
pub fn key_id(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A signed head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Head sequence (0 = the empty log).
    pub sequence: u64,
    /// Its chain hash (genesis for the empty log).
    pub hash: [u8; 32],
    /// Signing time, seconds since the epoch.
    pub seconds: i64,
    /// Signing time, nanoseconds within the second.
    pub nanos: u32,
    /// Ed25519 signature of [`Self::message`].
    pub signature: [u8; 64],
}

impl SignedCheckpoint {
    /// The bytes signed.
    #[must_use]
    pub fn message(&self) -> [u8; MESSAGE_LEN] {
        let mut out = [0u8; MESSAGE_LEN];
        out[..32].copy_from_slice(CONTEXT);
        out[32..40].copy_from_slice(&self.sequence.to_be_bytes());
        out[40..72].copy_from_slice(&self.hash);
        out[72..80].copy_from_slice(&self.seconds.to_be_bytes());
        out[80..84].copy_from_slice(&self.nanos.to_be_bytes());
        out
    }

    /// Whether `key` signed exactly these fields (strict verification: no malleable or
    /// weak-key signatures).
    #[must_use]
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(&self.message(), &Signature::from_bytes(&self.signature))
            .is_ok()
    }

    fn to_file_bytes(self) -> [u8; FILE_LEN] {
        let mut out = [0u8; FILE_LEN];
        out[..8].copy_from_slice(FILE_MAGIC);
        out[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        out[16..48].copy_from_slice(&self.hash);
        out[48..56].copy_from_slice(&self.seconds.to_le_bytes());
        out[56..60].copy_from_slice(&self.nanos.to_le_bytes());
        out[60..124].copy_from_slice(&self.signature);
        out
    }

    fn from_file_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != FILE_LEN || &bytes[..8] != FILE_MAGIC {
            return None;
        }
        Some(Self {
            sequence: u64::from_le_bytes(bytes[8..16].try_into().ok()?),
            hash: bytes[16..48].try_into().ok()?,
            seconds: i64::from_le_bytes(bytes[48..56].try_into().ok()?),
            nanos: u32::from_le_bytes(bytes[56..60].try_into().ok()?),
            signature: bytes[60..124].try_into().ok()?,
        })
    }
}

/// What reading the signed checkpoint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignedState {
    Valid(SignedCheckpoint),
    Missing,
    /// Present, but malformed or not signed by this service's key.
    BadSignature,
}

/// Reads the signed checkpoint at `path` and checks it against `key` (this service's own
/// public key, never one stored next to the checkpoint: a forger would swap both).
///
/// # Errors
/// I/O errors other than "not found".
pub(crate) fn read_signed(path: &Path, key: &VerifyingKey) -> io::Result<SignedState> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SignedState::Missing),
        Err(e) => return Err(e),
    };
    Ok(match SignedCheckpoint::from_file_bytes(&bytes) {
        Some(cp) if cp.verify(key) => SignedState::Valid(cp),
        _ => SignedState::BadSignature,
    })
}

/// Replaces the signed checkpoint in `dir` with `cp`, durably.
///
/// # Errors
/// I/O errors; the previous checkpoint then stays in place.
pub(crate) fn write_signed(dir: &Path, cp: &SignedCheckpoint) -> io::Result<()> {
    let tmp = dir.join(format!("{SIGNED_FILE}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&cp.to_file_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SIGNED_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier as _;

    fn key(n: u8) -> CheckpointKey {
        CheckpointKey::from_seed([n; 32])
    }

    #[test]
    fn an_auditor_verifies_offline_from_the_exported_fields_alone() {
        let k = key(1);
        let cp = k.sign(
            42,
            [7; 32],
            UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5),
        );
        // What an auditor holds: the exported strings, nothing of this crate.
        let public = URL_SAFE_NO_PAD.decode(k.public_key()).unwrap();
        let public = VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        let mut message = b"umcp-audit-checkpoint-ed25519-v1".to_vec();
        message.extend_from_slice(&42u64.to_be_bytes());
        message.extend_from_slice(&[7; 32]);
        message.extend_from_slice(&1_700_000_000i64.to_be_bytes());
        message.extend_from_slice(&5u32.to_be_bytes());
        let signature = URL_SAFE_NO_PAD.encode(cp.signature);
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let signature = Signature::from_slice(&signature).unwrap();
        assert!(public.verify(&message, &signature).is_ok());
        assert!(cp.verify(&k.verifying_key()));
        // The key id is the RFC 7638 thumbprint of that public key.
        assert_eq!(k.key_id(), key_id(&public));
        assert_eq!(k.key_id().len(), 43);
        assert_ne!(k.key_id(), key(2).key_id());
    }

    #[test]
    fn forged_or_edited_checkpoints_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SIGNED_FILE);
        let k = key(3);
        let vk = k.verifying_key();
        assert_eq!(read_signed(&path, &vk).unwrap(), SignedState::Missing);
        let cp = k.sign(10, [1; 32], SystemTime::now());
        write_signed(dir.path(), &cp).unwrap();
        assert_eq!(read_signed(&path, &vk).unwrap(), SignedState::Valid(cp));
        let genuine = std::fs::read(&path).unwrap();
        // Every field covered: sequence, hash, time, signature; also a short file.
        for at in [8, 20, 50, 57, 100] {
            let mut edited = genuine.clone();
            edited[at] ^= 0x01;
            std::fs::write(&path, &edited).unwrap();
            assert_eq!(
                read_signed(&path, &vk).unwrap(),
                SignedState::BadSignature,
                "byte {at}"
            );
        }
        std::fs::write(&path, &genuine[..FILE_LEN - 1]).unwrap();
        assert_eq!(read_signed(&path, &vk).unwrap(), SignedState::BadSignature);
        // A checkpoint of a longer log, well-formed but signed with another key.
        let forged = key(4).sign(99, [9; 32], SystemTime::now());
        write_signed(dir.path(), &forged).unwrap();
        assert_eq!(read_signed(&path, &vk).unwrap(), SignedState::BadSignature);
        // A signature moved onto other fields.
        let moved = SignedCheckpoint { sequence: 11, ..cp };
        assert!(!moved.verify(&vk));
        assert!(cp.verify(&vk));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SIGNING_KEY_FILE);
        let first = CheckpointKey::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = CheckpointKey::load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert!(!format!("{first:?}").contains(&hex::encode(first.key.to_bytes())));
    }
}
