//! Audit service configuration (see `umcp-config` for sources and precedence).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use umcp_authz::AuthClientConfig;
use umcp_config::{Validate, env_name};
use umcp_telemetry::LogConfig;

use crate::chain::ChainKey;

/// Everything the audit service reads at start-up.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// gRPC listen address (`UMCP_LISTEN`, default `127.0.0.1:50055`).
    pub listen: String,
    /// Directory of the log, checkpoint and key file (`UMCP_DATA_DIR`, default `./data/audit`).
    pub data_dir: PathBuf,
    /// Chain key file (`UMCP_KEY_FILE`, default `<data_dir>/chain.key`), created with a random
    /// key and mode 0600 on first start. Keep a copy out of band: without it the log cannot be
    /// verified, and anyone holding it can forge records.
    pub key_file: PathBuf,
    /// The chain key as 64 hex characters (`UMCP_KEY`), instead of the file (e.g. from a
    /// secret store). Secret: never logged.
    pub key: String,
    /// Also fsync the checkpoint on every commit (`UMCP_SYNC_CHECKPOINT`, default false).
    /// The log itself is always fsynced before an acknowledgement; the checkpoint is always
    /// written before it too, so after a process crash it is exact. Only after a power loss
    /// may an unsynced checkpoint lag the last commits (they are then re-signed on start,
    /// and truncation detection covers the log up to the older checkpoint).
    pub sync_checkpoint: bool,
    /// Events a `Tail` stream may fall behind before it is ended with RESOURCE_EXHAUSTED
    /// (`UMCP_TAIL_BUFFER`, default 4096, 16–1000000).
    pub tail_buffer: usize,
    /// `Record` calls that may wait for the writer before more get RESOURCE_EXHAUSTED
    /// (`UMCP_WRITE_QUEUE`, default 4096, 1–1000000).
    pub write_queue: usize,
    /// Token verification (`UMCP_AUTH__URL`, `UMCP_AUTH__API_KEY`, …).
    pub auth: AuthClientConfig,
    /// Logging (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
    pub log: LogConfig,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("key_file", &self.key_file)
            .field(
                "key",
                &if self.key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("sync_checkpoint", &self.sync_checkpoint)
            .field("tail_buffer", &self.tail_buffer)
            .field("write_queue", &self.write_queue)
            .field("auth", &self.auth)
            .field("log", &self.log)
            .finish()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50055".into(),
            data_dir: PathBuf::from("./data/audit"),
            key_file: PathBuf::new(),
            key: String::new(),
            sync_checkpoint: false,
            tail_buffer: 4096,
            write_queue: 4096,
            auth: AuthClientConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl AuditConfig {
    /// The key file path (explicit or `<data_dir>/chain.key`).
    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        if self.key_file.as_os_str().is_empty() {
            self.data_dir.join("chain.key")
        } else {
            self.key_file.clone()
        }
    }

    /// Loads the chain key from `key` or the key file (creating the file on first start).
    ///
    /// # Errors
    /// A bad key, or a key file that cannot be used.
    pub fn chain_key(&self) -> Result<ChainKey, String> {
        if !self.key.is_empty() {
            return ChainKey::from_hex(&self.key)
                .map_err(|e| format!("key ({}): {e}", env_name("key")));
        }
        let path = self.key_path();
        // A fresh key next to an existing log would make every record look forged.
        let log = self.data_dir.join(crate::recovery::LOG_FILE);
        let has_records = std::fs::metadata(&log).is_ok_and(|m| m.len() > crate::frame::HEADER_LEN);
        if has_records && !path.exists() {
            return Err(format!(
                "the chain key {} is missing but {} holds records; restore the key (or set {})",
                path.display(),
                log.display(),
                env_name("key")
            ));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        ChainKey::load_or_create(&path)
    }
}

impl Validate for AuditConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.auth.problems());
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "listen ({}) `{}` is not a socket address like 127.0.0.1:50055",
                env_name("listen"),
                self.listen
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push(format!(
                "data_dir ({}) must not be empty",
                env_name("data_dir")
            ));
        }
        if !self.key.is_empty() && !self.key_file.as_os_str().is_empty() {
            problems.push(format!(
                "set only one of key ({}) and key_file ({})",
                env_name("key"),
                env_name("key_file")
            ));
        }
        if !self.key.is_empty()
            && let Err(e) = ChainKey::from_hex(&self.key)
        {
            problems.push(format!("key ({}): {e}", env_name("key")));
        }
        for (name, value) in [
            ("tail_buffer", self.tail_buffer),
            ("write_queue", self.write_queue),
        ] {
            if !(1..=1_000_000).contains(&value) || (name == "tail_buffer" && value < 16) {
                let min = if name == "tail_buffer" { 16 } else { 1 };
                problems.push(format!(
                    "{name} ({}) must be {min}..=1000000, got {value}",
                    env_name(name)
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_config::{Sources, load};

    #[test]
    fn defaults_are_valid_and_env_overrides() {
        let cfg: AuditConfig = load(&Sources::env([
            ("UMCP_DATA_DIR", "/tmp/audit-x"),
            ("UMCP_TAIL_BUFFER", "64"),
        ]))
        .unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/audit-x"));
        assert_eq!(cfg.tail_buffer, 64);
        assert_eq!(cfg.listen, "127.0.0.1:50055");
        assert_eq!(cfg.key_path(), PathBuf::from("/tmp/audit-x/chain.key"));
    }

    #[test]
    fn bad_values_name_their_variables_and_the_key_is_never_shown() {
        let err = load::<AuditConfig>(&Sources::env([
            ("UMCP_LISTEN", "nope"),
            ("UMCP_KEY", "abcd"),
            ("UMCP_TAIL_BUFFER", "1"),
        ]))
        .unwrap_err()
        .to_string();
        for needle in ["UMCP_LISTEN", "UMCP_KEY", "UMCP_TAIL_BUFFER"] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
        let cfg = AuditConfig {
            key: "ab".repeat(32),
            ..AuditConfig::default()
        };
        assert!(!format!("{cfg:?}").contains(&"ab".repeat(32)));
    }
}
