//! The credential store: `<config dir>/umcp/credentials.json`, one login per endpoint.
//!
//! The config dir is `--config-dir` / `UMCP_CONFIG_DIR` when set, else the platform's user config
//! directory (`$XDG_CONFIG_HOME`, default `~/.config`, on Linux). The directory is kept at mode
//! 0700 and the file at 0600: it holds refresh tokens, which are as good as a password for their
//! lifetime. Writes go to a temporary file in the same directory that is renamed over the old one,
//! so a crash never leaves half a file; read-modify-write cycles (login, refresh, logout) hold an
//! exclusive lock on `credentials.lock`, so two `umcp` processes never both present the same
//! refresh token (the auth service would see that as reuse and revoke the whole login).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

const FILE_NAME: &str = "credentials.json";
const LOCK_NAME: &str = "credentials.lock";

/// One stored login.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Login {
    /// Who logged in.
    pub username: String,
    /// The current access token (JWT).
    pub access_token: String,
    /// Unix seconds after which the access token is no longer accepted.
    pub access_expires_at: u64,
    /// Lifetime the auth service gave the access token, in seconds.
    pub access_ttl_secs: u64,
    /// The current (rotating) refresh token.
    pub refresh_token: String,
    /// Unix seconds after which the refresh token is dead.
    pub refresh_expires_at: u64,
}

impl std::fmt::Debug for Login {
    // Tokens never reach logs or panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Builds a login from tokens the auth service just issued.
    #[must_use]
    pub fn from_tokens(username: &str, tokens: &umcp_proto::auth::v1::Tokens) -> Self {
        let now = now_secs();
        Self {
            username: username.to_owned(),
            access_token: tokens.access_token.clone(),
            access_expires_at: now + u64::from(tokens.expires_in_seconds),
            access_ttl_secs: u64::from(tokens.expires_in_seconds),
            refresh_token: tokens.refresh_token.clone(),
            refresh_expires_at: now + u64::from(tokens.refresh_expires_in_seconds),
        }
    }

    /// True while the access token has more than a safety margin left: a quarter of its
    /// lifetime, at most 30 s, so a token is never sent in its last seconds (clock skew, the
    /// call's own duration).
    #[must_use]
    pub fn access_is_fresh(&self) -> bool {
        let margin = (self.access_ttl_secs / 4).min(30);
        now_secs() + margin < self.access_expires_at
    }

    /// True while the refresh token can still be presented.
    #[must_use]
    pub fn can_refresh(&self) -> bool {
        !self.refresh_token.is_empty() && now_secs() < self.refresh_expires_at
    }
}

/// The whole file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The endpoint of the most recent login: used when no `--endpoint` is given.
    #[serde(default)]
    pub default_endpoint: Option<String>,
    /// Logins by endpoint URL.
    #[serde(default)]
    pub logins: BTreeMap<String, Login>,
}

/// Where the credentials live.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An exclusive lock on the store; released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// The store under `config_dir` (already the `umcp` directory), or the user's default.
    ///
    /// # Errors
    /// When no config directory can be found (no `$HOME`, no `$XDG_CONFIG_HOME`).
    pub fn locate(config_dir: Option<&Path>) -> Result<Self, CliError> {
        let dir = match config_dir {
            Some(dir) => dir.to_path_buf(),
            None => dirs::config_dir()
                .ok_or_else(|| CliError::Store {
                    path: PathBuf::from("~/.config"),
                    detail:
                        "no user config directory (set HOME, XDG_CONFIG_HOME or UMCP_CONFIG_DIR)"
                            .into(),
                })?
                .join("umcp"),
        };
        Ok(Self { dir })
    }

    /// The credentials file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the file; a missing file is an empty store.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn read(&self) -> Result<Credentials, CliError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CliError::Store {
                path,
                detail: format!("not valid credentials JSON ({e}); delete it and run `umcp login`"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(store_error(&path, &e)),
        }
    }

    /// Replaces the file (atomically, mode 0600, directory 0700).
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn write(&self, credentials: &Credentials) -> Result<(), CliError> {
        self.ensure_dir()?;
        let path = self.path();
        let tmp = self
            .dir
            .join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(credentials).map_err(|e| CliError::Store {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // `mode` applies only when the file is created; a stale temp file keeps its own.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(&body)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            store_error(&path, &e)
        })
    }

    /// Takes the store's exclusive lock, waiting for another `umcp` that holds it.
    ///
    /// # Errors
    /// When the lock file cannot be created or locked.
    pub fn lock(&self) -> Result<StoreLock, CliError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| store_error(&path, &e))?;
        file.lock().map_err(|e| store_error(&path, &e))?;
        Ok(StoreLock { _file: file })
    }

    fn ensure_dir(&self) -> Result<(), CliError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| store_error(&self.dir, &e))?;
        // An existing directory keeps its mode through `create`: tighten it, it is ours alone.
        let mode = fs::metadata(&self.dir)
            .map_err(|e| store_error(&self.dir, &e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| store_error(&self.dir, &e))?;
        }
        Ok(())
    }
}

fn store_error(path: &Path, error: &std::io::Error) -> CliError {
    CliError::Store {
        path: path.to_path_buf(),
        detail: error.to_string(),
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(expires_in: u64) -> Login {
        Login {
            username: "u".into(),
            access_token: "a".into(),
            access_expires_at: now_secs() + expires_in,
            access_ttl_secs: 900,
            refresh_token: "r".into(),
            refresh_expires_at: now_secs() + 3600,
        }
    }

    #[test]
    fn written_file_is_0600_in_a_0700_dir_and_reads_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("umcp");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::locate(Some(&dir)).unwrap();
        let mut creds = Credentials::default();
        let stored = login(600);
        creds.logins.insert("http://x".into(), stored.clone());
        store.write(&creds).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(store.read().unwrap().logins["http://x"], stored);
    }

    #[test]
    fn a_token_in_its_last_seconds_is_not_fresh() {
        assert!(login(600).access_is_fresh());
        assert!(!login(10).access_is_fresh());
    }

    #[test]
    fn debug_never_shows_tokens() {
        let text = format!("{:?}", login(60));
        assert!(!text.contains("access_token"), "{text}");
    }
}
