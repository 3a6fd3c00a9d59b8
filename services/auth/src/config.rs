//! Auth service configuration (see `umcp-config` for sources and precedence).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_audit_client::AuditClientConfig;
pub use umcp_config::Secret;
use umcp_config::{Validate, check_range, env_name};
use umcp_telemetry::LogConfig;

/// Everything the auth service reads at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// gRPC listen address (`UMCP_LISTEN`, default `127.0.0.1:50052`).
    pub listen: String,
    /// Data root (`UMCP_DATA_ROOT`, default `./data`): the store lives in `<root>/auth`, the
    /// signing keys in `<root>/auth-keys`, the generated bootstrap password in
    /// `<root>/bootstrap-admin.txt`.
    pub data_root: PathBuf,
    /// `iss` of issued tokens (`UMCP_ISSUER`, default `umcp-auth`).
    pub issuer: String,
    /// `aud` of issued tokens (`UMCP_AUDIENCE`, default `umcp`).
    pub audience: String,
    /// Access-token lifetime in seconds (`UMCP_ACCESS_TTL_SECS`, default 900).
    pub access_ttl_secs: u64,
    /// Refresh-token lifetime in seconds (`UMCP_REFRESH_TTL_SECS`, default 7 days).
    pub refresh_ttl_secs: u64,
    /// Clock skew verifiers tolerate, in seconds (`UMCP_CLOCK_LEEWAY_SECS`, default 60). Old
    /// signing keys stay published for `access_ttl_secs + clock_leeway_secs` after rotation.
    pub clock_leeway_secs: u64,
    /// Password of the `admin` user created on first start with an empty store
    /// (`UMCP_BOOTSTRAP_ADMIN_PASSWORD`); unset: a generated one is printed once and written to
    /// `<data_root>/bootstrap-admin.txt` (mode 0600).
    pub bootstrap_admin_password: Option<Secret>,
    /// When set (`UMCP_BOOTSTRAP_SERVICE_KEY_FILE`) and the file does not exist yet: create the
    /// service-role user `mesh-services` (no usable password) and an API key for it, and write
    /// the key to this file (mode 0600). The other processes of a single-machine mesh read it
    /// with `UMCP_AUTH__API_KEY_FILE` to follow revocations and to call each other.
    pub bootstrap_service_key_file: Option<PathBuf>,
    /// Password hashing (`UMCP_PASSWORD__MEMORY_KIB`, …).
    pub password: PasswordConfig,
    /// Failed-login throttling (`UMCP_LOGIN_THROTTLE__FREE_FAILURES_PER_USER`, …).
    pub login_throttle: ThrottleConfig,
    /// Take the client address for throttling from the first `x-forwarded-for` entry
    /// (`UMCP_TRUST_FORWARDED_FOR`, default true). The header only reaches this point when a
    /// `service`-role token vouched for it in `x-umcp-forwarder` (see `umcp_authz::forwarded`:
    /// the gateway does; a client calling this port directly cannot), so this only turns the
    /// vouched address off.
    pub trust_forwarded_for: bool,
    /// How often expired revocations and refresh tokens are purged, in seconds
    /// (`UMCP_JANITOR_INTERVAL_SECS`, default 300).
    pub janitor_interval_secs: u64,
    /// Audit events (`UMCP_AUDIT__URL`, empty disables; `UMCP_AUDIT__SPOOL_DIR`, default
    /// `./data/audit-spool/auth`, …).
    pub audit: AuditClientConfig,
    /// Logging (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
    pub log: LogConfig,
    /// Metrics and probes over HTTP (`UMCP_HTTP__LISTEN`, default `127.0.0.1:9102`; empty: off).
    pub http: umcp_rpc::ops::OpsConfig,
    /// Where the JWKS and the revocation list are shared for verifiers (`UMCP_REDIS__URL` or
    /// `UMCP_REDIS__CLUSTER_NODES`; unset: not shared).
    pub redis: umcp_redis::RedisConfig,
}

/// Argon2id parameters. The defaults are the OWASP minimum (m = 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Memory per hash in KiB (default 19456; at least that unless `weak_parameters_for_tests`).
    pub memory_kib: u32,
    /// Iterations (default 2; at least that unless `weak_parameters_for_tests`).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
    /// Hashes computed at once (default 2; each holds `memory_kib`).
    pub max_concurrent: usize,
    /// Allows parameters below the OWASP minimum. For tests only: makes hashing fast at the
    /// price of making stolen hashes cheap to crack.
    pub weak_parameters_for_tests: bool,
}

/// Failed-login throttling, counted separately per username and per client address.
/// After `free_failures_*` failures within `window_secs`, each further failure locks the key
/// for `base_delay_ms × 2^(failures − free − 1)`, capped at `max_delay_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Failures per username before delays start (default 5).
    pub free_failures_per_user: u32,
    /// Failures per client address before delays start (default 20).
    pub free_failures_per_peer: u32,
    /// First delay in milliseconds (default 1000).
    pub base_delay_ms: u64,
    /// Longest delay in seconds (default 900).
    pub max_delay_secs: u64,
    /// Failures older than this many seconds since the last one are forgotten (default 900).
    pub window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50052".into(),
            data_root: PathBuf::from("./data"),
            issuer: umcp_authz::claims::DEFAULT_ISSUER.into(),
            audience: umcp_authz::claims::DEFAULT_AUDIENCE.into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 7 * 24 * 3600,
            clock_leeway_secs: 60,
            bootstrap_admin_password: None,
            bootstrap_service_key_file: None,
            password: PasswordConfig::default(),
            login_throttle: ThrottleConfig::default(),
            trust_forwarded_for: true,
            janitor_interval_secs: 300,
            audit: AuditClientConfig {
                spool_dir: PathBuf::from("./data/audit-spool/auth"),
                ..AuditClientConfig::default()
            },
            log: LogConfig::default(),
            http: umcp_rpc::ops::OpsConfig::on("127.0.0.1:9102"),
            redis: umcp_redis::RedisConfig::default(),
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 2,
            weak_parameters_for_tests: false,
        }
    }
}

impl PasswordConfig {
    /// Tiny parameters (64 KiB, t = 1) so tests hash in microseconds. Never for production.
    #[must_use]
    pub fn fast_for_tests() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 4,
            weak_parameters_for_tests: true,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures_per_user: 5,
            free_failures_per_peer: 20,
            base_delay_ms: 1000,
            max_delay_secs: 900,
            window_secs: 900,
        }
    }
}

impl AuthConfig {
    /// The store directory.
    #[must_use]
    pub fn store_dir(&self) -> PathBuf {
        self.data_root.join("auth")
    }

    /// The signing-key directory.
    #[must_use]
    pub fn keys_dir(&self) -> PathBuf {
        self.data_root.join("auth-keys")
    }

    /// Where a generated bootstrap password is written.
    #[must_use]
    pub fn bootstrap_file(&self) -> PathBuf {
        self.data_root.join("bootstrap-admin.txt")
    }

    /// Access-token lifetime.
    #[must_use]
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs)
    }

    /// How long an access token can still be accepted after it was issued (lifetime plus
    /// verifier leeway): retired keys and revocations must outlive it.
    #[must_use]
    pub fn token_horizon(&self) -> Duration {
        Duration::from_secs(self.access_ttl_secs + self.clock_leeway_secs)
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.http.problems());
        problems.extend(self.audit.problems());
        problems.extend(self.redis.problems());
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "listen ({}) `{}` is not a socket address like 127.0.0.1:50052",
                env_name("listen"),
                self.listen
            ));
        }
        if self.data_root.as_os_str().is_empty() {
            problems.push(format!(
                "data_root ({}) must not be empty",
                env_name("data_root")
            ));
        }
        for (key, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if value.is_empty() || value.len() > 256 {
                problems.push(format!(
                    "{key} ({}) must be 1 to 256 characters",
                    env_name(key)
                ));
            }
        }
        problems.extend(check_range(
            "access_ttl_secs",
            self.access_ttl_secs,
            60..=86_400,
        ));
        problems.extend(check_range(
            "refresh_ttl_secs",
            self.refresh_ttl_secs,
            300..=90 * 86_400,
        ));
        problems.extend(check_range(
            "clock_leeway_secs",
            self.clock_leeway_secs,
            0..=600,
        ));
        problems.extend(check_range(
            "janitor_interval_secs",
            self.janitor_interval_secs,
            1..=86_400,
        ));
        if let Some(p) = &self.bootstrap_admin_password {
            let len = p.expose().len();
            if !(crate::validate::MIN_NEW_PASSWORD_BYTES..=crate::validate::MAX_PASSWORD_BYTES)
                .contains(&len)
            {
                problems.push(format!(
                    "bootstrap_admin_password ({}) must be 12 to 1024 bytes, got {len} bytes",
                    env_name("bootstrap_admin_password")
                ));
            }
        }
        let pw = &self.password;
        if !pw.weak_parameters_for_tests {
            // OWASP's minimum for argon2id; below it only the test suite may go.
            let owasp = " (OWASP minimum)";
            problems.extend(
                check_range("password.memory_kib", pw.memory_kib, 19 * 1024..).map(|m| m + owasp),
            );
            problems
                .extend(check_range("password.iterations", pw.iterations, 2..).map(|m| m + owasp));
        }
        problems.extend(check_range(
            "password.memory_kib",
            pw.memory_kib,
            8..=4 * 1024 * 1024,
        ));
        problems.extend(check_range("password.iterations", pw.iterations, 1..=64));
        problems.extend(check_range("password.parallelism", pw.parallelism, 1..=1));
        problems.extend(check_range(
            "password.max_concurrent",
            pw.max_concurrent,
            1..=64,
        ));
        let t = &self.login_throttle;
        problems.extend(check_range(
            "login_throttle.free_failures_per_user",
            t.free_failures_per_user,
            1..=1000,
        ));
        problems.extend(check_range(
            "login_throttle.free_failures_per_peer",
            t.free_failures_per_peer,
            1..=100_000,
        ));
        problems.extend(check_range(
            "login_throttle.base_delay_ms",
            t.base_delay_ms,
            1..=3_600_000,
        ));
        problems.extend(check_range(
            "login_throttle.max_delay_secs",
            t.max_delay_secs,
            1..=86_400,
        ));
        problems.extend(check_range(
            "login_throttle.window_secs",
            t.window_secs,
            1..=86_400,
        ));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_config::{Sources, load};

    #[test]
    fn defaults_are_valid_and_owasp() {
        let cfg: AuthConfig = load(&Sources::env([("UMCP_OTHER", "x")])).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:50052");
        assert_eq!(cfg.store_dir(), PathBuf::from("./data/auth"));
        assert_eq!(
            cfg.bootstrap_file(),
            PathBuf::from("./data/bootstrap-admin.txt")
        );
        assert_eq!(
            (cfg.password.memory_kib, cfg.password.iterations),
            (19456, 2)
        );
        assert_eq!(cfg.token_horizon(), Duration::from_secs(960));
    }

    #[test]
    fn bootstrap_password_comes_from_env_and_is_never_printed() {
        let cfg: AuthConfig = load(&Sources::env([(
            "UMCP_BOOTSTRAP_ADMIN_PASSWORD",
            "123456789012345",
        )]))
        .unwrap();
        let secret = cfg.bootstrap_admin_password.clone().unwrap();
        assert_eq!(secret.expose(), "123456789012345");
        // Debug is what logs and errors print (Serialize only feeds figment its defaults).
        assert!(!format!("{cfg:?}").contains("123456789012345"));
    }

    #[test]
    fn bad_values_name_their_variables() {
        let err = load::<AuthConfig>(&Sources::env([
            ("UMCP_LISTEN", "nope"),
            ("UMCP_BOOTSTRAP_ADMIN_PASSWORD", "short"),
            ("UMCP_PASSWORD__MEMORY_KIB", "1024"),
            ("UMCP_ACCESS_TTL_SECS", "5"),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "UMCP_LISTEN",
            "UMCP_BOOTSTRAP_ADMIN_PASSWORD",
            "UMCP_PASSWORD__MEMORY_KIB",
            "UMCP_ACCESS_TTL_SECS",
        ] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
        assert!(!err.contains("short\""), "{err}");
    }

    #[test]
    fn weak_parameters_need_the_test_flag() {
        let mut cfg = AuthConfig {
            password: PasswordConfig::fast_for_tests(),
            ..AuthConfig::default()
        };
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        cfg.password.weak_parameters_for_tests = false;
        assert_eq!(cfg.validate().len(), 2);
    }
}
