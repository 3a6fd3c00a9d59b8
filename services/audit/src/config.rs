//! Audit service configuration (see `umcp-config` for sources and precedence).

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use umcp_authz::AuthClientConfig;
use umcp_config::{Validate, check_range, env_name};
use umcp_telemetry::LogConfig;

use crate::chain::ChainKey;
use crate::signed::{CheckpointKey, SIGNED_FILE, SIGNING_KEY_FILE};

/// Everything the audit service reads at start-up.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// gRPC listen address (`UMCP_LISTEN`, default `127.0.0.1:50055`).
    pub listen: String,
    /// Directory of the log, the checkpoints and the key files (`UMCP_DATA_DIR`, default
    /// `./data/audit`). The Ed25519 checkpoint key is always `<data_dir>/signing.key`, created
    /// with mode 0600 on first start.
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
    /// Sign an Ed25519 checkpoint once this many events are not covered by one
    /// (`UMCP_SIGN_EVERY_EVENTS`, default 1000, 1–1000000).
    pub sign_every_events: u64,
    /// … or this long after the first commit not covered (`UMCP_SIGN_INTERVAL_MS`, default
    /// 10000, 10–3600000). An idle log is not re-signed.
    pub sign_interval_ms: u64,
    /// Token verification (`UMCP_AUTH__URL`, `UMCP_AUTH__API_KEY`, …).
    pub auth: AuthClientConfig,
    /// Where the auth service shares its keys and revocations (`UMCP_REDIS__URL` or
    /// `UMCP_REDIS__CLUSTER_NODES`; unset: asked of the auth service only).
    pub redis: umcp_redis::RedisConfig,
    /// Logging (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
    pub log: LogConfig,
    /// Metrics and probes over HTTP (`UMCP_HTTP__LISTEN`, default `127.0.0.1:9105`; empty: off).
    pub http: umcp_rpc::ops::OpsConfig,
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
            .field("sign_every_events", &self.sign_every_events)
            .field("sign_interval_ms", &self.sign_interval_ms)
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
            sign_every_events: 1000,
            sign_interval_ms: 10_000,
            auth: AuthClientConfig::default(),
            redis: umcp_redis::RedisConfig::default(),
            log: LogConfig::default(),
            http: umcp_rpc::ops::OpsConfig::on("127.0.0.1:9105"),
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

    /// Loads the Ed25519 checkpoint key from `<data_dir>/signing.key`, creating it on first
    /// start.
    ///
    /// # Errors
    /// A key file that cannot be used, or a missing key while a signed checkpoint exists.
    pub fn signing_key(&self) -> Result<CheckpointKey, String> {
        let path = self.data_dir.join(SIGNING_KEY_FILE);
        // A fresh key would make the existing signed checkpoint look forged.
        let signed = self.data_dir.join(SIGNED_FILE);
        if signed.exists() && !path.exists() {
            return Err(format!(
                "the checkpoint signing key {} is missing but {} exists; restore the key",
                path.display(),
                signed.display()
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.data_dir.display()))?;
        CheckpointKey::load_or_create(&path)
    }
}

impl Validate for AuditConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.http.problems());
        problems.extend(self.auth.problems());
        problems.extend(self.redis.problems());
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
        problems.extend(check_range("tail_buffer", self.tail_buffer, 16..=1_000_000));
        problems.extend(check_range("write_queue", self.write_queue, 1..=1_000_000));
        problems.extend(check_range(
            "sign_every_events",
            self.sign_every_events,
            1..=1_000_000,
        ));
        problems.extend(check_range(
            "sign_interval_ms",
            self.sign_interval_ms,
            10..=3_600_000,
        ));
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
        assert_eq!(
            (cfg.sign_every_events, cfg.sign_interval_ms),
            (1000, 10_000)
        );
    }

    #[test]
    fn bad_values_name_their_variables_and_the_key_is_never_shown() {
        let err = load::<AuditConfig>(&Sources::env([
            ("UMCP_LISTEN", "nope"),
            ("UMCP_KEY", "abcd"),
            ("UMCP_TAIL_BUFFER", "1"),
            ("UMCP_SIGN_EVERY_EVENTS", "0"),
            ("UMCP_SIGN_INTERVAL_MS", "1"),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "UMCP_LISTEN",
            "UMCP_KEY",
            "UMCP_TAIL_BUFFER",
            "UMCP_SIGN_EVERY_EVENTS",
            "UMCP_SIGN_INTERVAL_MS",
        ] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
        let cfg = AuditConfig {
            key: "ab".repeat(32),
            ..AuditConfig::default()
        };
        assert!(!format!("{cfg:?}").contains(&"ab".repeat(32)));
    }
}
