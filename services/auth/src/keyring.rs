//! Signing keys: one active Ed25519 key signs, retired keys stay published for verification
//! until every token they signed has expired.
//!
//! Storage: one JSON file per key in the keys directory (mode 0700), each file mode 0600 and
//! written atomically (temp file, fsync, rename). A file holds the kid, the private seed and
//! the creation and retirement times. Only this service reads the directory; everyone else
//! gets public keys through `GetJwks`.
//!
//! Rotation is serialised by a process-wide mutex. A crash between writing the new key and
//! retiring the old one leaves two unretired keys; loading resolves that by making the newest
//! active and retiring the others as of its creation.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{SigningKey, VerifyingKey};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use umcp_authz::claims::Claims;
use umcp_authz::jws;
use umcp_authz::keys::{KeySource, KeySourceError};
use umcp_proto::auth::v1 as pb;

use crate::clock::now_micros;
use crate::error::AuthError;

const SUFFIX: &str = ".key.json";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    kid: String,
    /// Unix microseconds.
    created_at: i64,
    /// Unix microseconds; `None` while the key signs.
    retired_at: Option<i64>,
    /// The 32-byte Ed25519 seed, base64url.
    seed: String,
}

struct Entry {
    kid: String,
    created_at: i64,
    retired_at: Option<i64>,
    signing: SigningKey,
}

struct State {
    /// Newest first; the first entry is the active one.
    entries: Vec<Arc<Entry>>,
}

/// The published public keys (active first).
#[derive(Debug, Clone, PartialEq)]
pub struct Jwks {
    /// As JWKs.
    pub keys: Vec<pb::Jwk>,
    /// As a JWKS JSON document (RFC 7517).
    pub json: String,
}

/// The key ring.
pub struct KeyRing {
    dir: PathBuf,
    /// How long a retired key stays published (access-token lifetime plus leeway).
    retention: Duration,
    state: RwLock<State>,
    rotate_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("active_kid", &self.active_kid())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the keys in `dir` (creating the directory and a first key when needed), prunes
    /// keys retired longer than `retention` ago. Blocking (file I/O).
    ///
    /// # Errors
    /// [`AuthError::DependencyUnavailable`] when the directory or a key file cannot be read or written.
    pub fn open_blocking(dir: &Path, retention: Duration) -> Result<Self, AuthError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("create the keys directory", &e))?;
        // An existing directory keeps its mode from DirBuilder; tighten it explicitly.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("restrict the keys directory", &e))?;
        let mut files = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| io_error("read the keys directory", &e))? {
            let path = item
                .map_err(|e| io_error("read the keys directory", &e))?
                .path();
            if path.to_string_lossy().ends_with(SUFFIX) {
                files.push(read_key_file(&path)?);
            }
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.created_at));
        let now = now_micros();
        let retention_micros = micros(retention);
        let active_created = files
            .iter()
            .find(|f| f.retired_at.is_none())
            .map(|f| f.created_at);
        let mut entries = Vec::new();
        let mut first_unretired = true;
        for mut file in files {
            if file.retired_at.is_none() {
                if first_unretired {
                    first_unretired = false;
                } else {
                    // Left over from an interrupted rotation: retired when the newer key began.
                    file.retired_at = active_created;
                    write_key_file(dir, &file)?;
                }
            }
            if file.retired_at.is_some_and(|r| r + retention_micros < now) {
                remove_key_file(dir, &file.kid);
                continue;
            }
            entries.push(Arc::new(entry_of(file)?));
        }
        // The active (unretired) key leads; the sort is stable, so the rest stay newest first.
        entries.sort_by_key(|e| e.retired_at.is_some());
        let ring = Self {
            dir: dir.to_path_buf(),
            retention,
            state: RwLock::new(State { entries }),
            rotate_lock: tokio::sync::Mutex::new(()),
        };
        if active_created.is_none() {
            ring.add_new_key_blocking()?;
            tracing::info!(kid = %ring.active_kid(), "first signing key created");
        }
        Ok(ring)
    }

    /// [`KeyRing::open_blocking`] on the blocking pool.
    ///
    /// # Errors
    /// As for [`KeyRing::open_blocking`].
    pub async fn open(dir: PathBuf, retention: Duration) -> Result<Arc<Self>, AuthError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, retention).map(Arc::new))
            .await
            .map_err(|e| AuthError::Unexpected(format!("keyring task: {e}")))?
    }

    /// The kid of the signing key.
    #[must_use]
    pub fn active_kid(&self) -> String {
        self.state.read().entries[0].kid.clone()
    }

    /// Signs access-token claims with the active key.
    #[must_use]
    pub fn sign(&self, claims: &Claims) -> String {
        let active = Arc::clone(&self.state.read().entries[0]);
        jws::sign(claims, &active.kid, &active.signing)
    }

    /// The public key named `kid`, if it is still published.
    #[must_use]
    pub fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        let now = now_micros();
        self.state
            .read()
            .entries
            .iter()
            .find(|e| e.kid == kid && self.published(e, now))
            .map(|e| e.signing.verifying_key())
    }

    /// The published public keys (active first), as JWKs.
    #[must_use]
    pub fn current_jwks(&self) -> Vec<pb::Jwk> {
        let now = now_micros();
        self.state
            .read()
            .entries
            .iter()
            .filter(|e| self.published(e, now))
            .map(|e| umcp_authz::keys::jwk(&e.kid, &e.signing.verifying_key()))
            .collect()
    }

    /// The published public keys as `GetJwks` answers them: JWKs and a JWKS JSON document.
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        let keys = self.current_jwks();
        let json = umcp_authz::keys::jwks_json(&keys);
        Jwks { keys, json }
    }

    /// Starts signing with a new key; the previous one is retired (still published for the
    /// retention period). Returns the new kid.
    ///
    /// # Errors
    /// [`AuthError::DependencyUnavailable`] when the key files cannot be written.
    pub async fn rotate(self: &Arc<Self>) -> Result<String, AuthError> {
        let _guard = self.rotate_lock.lock().await;
        let ring = Arc::clone(self);
        tokio::task::spawn_blocking(move || ring.rotate_blocking())
            .await
            .map_err(|e| AuthError::Unexpected(format!("keyring task: {e}")))?
    }

    fn rotate_blocking(&self) -> Result<String, AuthError> {
        let previous = Arc::clone(&self.state.read().entries[0]);
        // New key first: if retiring the old one fails, loading repairs the state.
        let kid = self.add_new_key_blocking()?;
        let now = now_micros();
        write_key_file(
            &self.dir,
            &KeyFile {
                kid: previous.kid.clone(),
                created_at: previous.created_at,
                retired_at: Some(now),
                seed: URL_SAFE_NO_PAD.encode(previous.signing.to_bytes()),
            },
        )?;
        let retention = micros(self.retention);
        let mut state = self.state.write();
        let mut pruned = Vec::new();
        state.entries = state
            .entries
            .iter()
            .map(|e| {
                if e.kid == previous.kid {
                    Arc::new(Entry {
                        kid: e.kid.clone(),
                        created_at: e.created_at,
                        retired_at: Some(now),
                        signing: e.signing.clone(),
                    })
                } else {
                    Arc::clone(e)
                }
            })
            .filter(|e| {
                let expired = e.retired_at.is_some_and(|r| r + retention < now);
                if expired {
                    pruned.push(e.kid.clone());
                }
                !expired
            })
            .collect();
        drop(state);
        for old in pruned {
            remove_key_file(&self.dir, &old);
        }
        tracing::info!(%kid, previous = %previous.kid, "signing key rotated");
        Ok(kid)
    }

    fn published(&self, e: &Entry, now: i64) -> bool {
        e.retired_at
            .is_none_or(|r| r + micros(self.retention) >= now)
    }

    fn add_new_key_blocking(&self) -> Result<String, AuthError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| AuthError::Unexpected(format!("getrandom: {e}")))?;
        let mut kid = [0u8; 12];
        getrandom::fill(&mut kid).map_err(|e| AuthError::Unexpected(format!("getrandom: {e}")))?;
        let file = KeyFile {
            kid: hex::encode(kid),
            created_at: now_micros(),
            retired_at: None,
            seed: URL_SAFE_NO_PAD.encode(seed),
        };
        write_key_file(&self.dir, &file)?;
        let kid = file.kid.clone();
        self.state
            .write()
            .entries
            .insert(0, Arc::new(entry_of(file)?));
        Ok(kid)
    }
}

/// The auth service's own verifier reads the ring in-process instead of over `GetJwks`.
#[async_trait::async_trait]
impl KeySource for KeyRing {
    async fn fetch(&self) -> Result<Vec<pb::Jwk>, KeySourceError> {
        Ok(self.current_jwks())
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn entry_of(file: KeyFile) -> Result<Entry, AuthError> {
    let seed: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&file.seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AuthError::DependencyUnavailable(format!("signing key {} is corrupt", file.kid))
        })?;
    Ok(Entry {
        kid: file.kid,
        created_at: file.created_at,
        retired_at: file.retired_at,
        signing: SigningKey::from_bytes(&seed),
    })
}

fn io_error(what: &str, e: &std::io::Error) -> AuthError {
    tracing::error!(error = %e, what, "signing key storage failed");
    AuthError::DependencyUnavailable(format!("cannot {what}"))
}

fn read_key_file(path: &Path) -> Result<KeyFile, AuthError> {
    let bytes = fs::read(path).map_err(|e| io_error("read a signing key", &e))?;
    serde_json::from_slice(&bytes).map_err(|_| {
        tracing::error!(path = %path.display(), "signing key file is not valid");
        AuthError::DependencyUnavailable("a signing key file is corrupt".into())
    })
}

fn write_key_file(dir: &Path, file: &KeyFile) -> Result<(), AuthError> {
    let path = dir.join(format!("{}{SUFFIX}", file.kid));
    let tmp = dir.join(format!("{}{SUFFIX}.tmp", file.kid));
    let json =
        serde_json::to_vec(file).map_err(|e| AuthError::Unexpected(format!("key json: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_error("write a signing key", &e))
}

fn remove_key_file(dir: &Path, kid: &str) {
    let path = dir.join(format!("{kid}{SUFFIX}"));
    match fs::remove_file(&path) {
        Ok(()) => tracing::info!(%kid, "expired signing key removed"),
        Err(e) => tracing::warn!(%kid, error = %e, "cannot remove expired signing key"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use umcp_authz::claims::AuthMethod;

    fn claims() -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u".into(),
            name: "n".into(),
            roles: vec![],
            jti: "j".into(),
            sid: "s".into(),
            amr: AuthMethod::Password,
            iat: 1,
            nbf: 1,
            exp: 2,
        }
    }

    /// Signature and algorithm only: these claims are deliberately long expired.
    pub(crate) fn signature_only() -> jsonwebtoken::Validation {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v
    }

    #[test]
    fn jwks_lists_the_published_keys_as_jwks_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open_blocking(dir.path(), Duration::from_secs(60)).unwrap();
        let jwks = ring.jwks();
        assert_eq!(jwks.keys, ring.current_jwks());
        assert_eq!(jwks.json, umcp_authz::keys::jwks_json(&jwks.keys));
        assert!(jwks.json.contains(&ring.active_kid()), "{}", jwks.json);
    }

    #[test]
    fn keys_persist_with_mode_0600_and_rotation_keeps_the_old_kid() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(KeyRing::open_blocking(dir.path(), Duration::from_secs(60)).unwrap());
        let first = ring.active_kid();
        let token = ring.sign(&claims());
        let parsed = jws::parse(&token).unwrap();
        assert_eq!(parsed.header.kid, first);
        let key = jws::decoding_key(&ring.verifying_key(&first).unwrap());
        parsed.verify::<Claims>(&key, &signature_only()).unwrap();
        for item in fs::read_dir(dir.path()).unwrap() {
            let mode = item.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let second = ring.rotate_blocking().unwrap();
        assert_ne!(first, second);
        let kids: Vec<String> = ring.current_jwks().into_iter().map(|j| j.kid).collect();
        assert_eq!(kids, vec![second.clone(), first.clone()]);
        drop(ring);

        let reopened = KeyRing::open_blocking(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(reopened.active_kid(), second);
        assert!(reopened.verifying_key(&first).is_some());
        let jwk = &reopened.current_jwks()[0];
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.alg.as_str()),
            ("OKP", "Ed25519", "EdDSA")
        );
        assert_eq!(
            jwk.x,
            jws::encode_public_key(&reopened.verifying_key(&second).unwrap())
        );
    }

    #[test]
    fn retired_keys_disappear_after_retention_and_interrupted_rotation_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open_blocking(dir.path(), Duration::ZERO).unwrap();
        let first = ring.active_kid();
        let second = ring.rotate_blocking().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(ring.verifying_key(&first).is_none());
        drop(ring);
        let reopened = KeyRing::open_blocking(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(reopened.current_jwks().len(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        // Simulate a crash after the new key was written but before the old one was retired.
        let third = reopened.add_new_key_blocking().unwrap();
        drop(reopened);
        let repaired = KeyRing::open_blocking(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(repaired.active_kid(), third);
        assert!(repaired.verifying_key(&second).is_some());
    }
}
