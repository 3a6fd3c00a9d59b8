//! Typed configuration of the execution service, with defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use umcp_config::check_range;

use umcp_sandbox::process::RunLimits;
use umcp_sandbox::process::cgroup::CgroupMode;

/// Per-request limits: what a request gets when it names none, and the most it may ask for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitBounds {
    pub wall_time_ms: u64,
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
    pub max_processes: u32,
    pub output_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u32,
    pub tmp_bytes: u64,
}

impl LimitBounds {
    /// Documented defaults (see `Limits` in execution.proto).
    pub fn defaults() -> Self {
        Self {
            wall_time_ms: 10_000,
            cpu_time_ms: 5_000,
            memory_bytes: 256 << 20,
            max_processes: 32,
            output_bytes: 1 << 20,
            file_size_bytes: 16 << 20,
            open_files: 64,
            tmp_bytes: 64 << 20,
        }
    }

    /// Documented maxima.
    pub fn maxima() -> Self {
        Self {
            wall_time_ms: 60_000,
            cpu_time_ms: 30_000,
            memory_bytes: 1 << 30,
            max_processes: 256,
            output_bytes: 8 << 20,
            file_size_bytes: 64 << 20,
            open_files: 1024,
            tmp_bytes: 256 << 20,
        }
    }

    pub fn to_run_limits(&self) -> RunLimits {
        RunLimits {
            wall_time: Duration::from_millis(self.wall_time_ms),
            cpu_time: Duration::from_millis(self.cpu_time_ms),
            memory_bytes: self.memory_bytes,
            max_processes: self.max_processes,
            output_bytes: self.output_bytes,
            file_size_bytes: self.file_size_bytes,
            open_files: self.open_files,
            tmp_bytes: self.tmp_bytes,
        }
    }

    /// Field-wise `self <= other`, naming the first field that is larger.
    fn check_within(&self, other: &Self) -> Result<(), String> {
        let pairs: [(&str, u64, u64); 8] = [
            ("wall_time_ms", self.wall_time_ms, other.wall_time_ms),
            ("cpu_time_ms", self.cpu_time_ms, other.cpu_time_ms),
            ("memory_bytes", self.memory_bytes, other.memory_bytes),
            (
                "max_processes",
                self.max_processes.into(),
                other.max_processes.into(),
            ),
            ("output_bytes", self.output_bytes, other.output_bytes),
            (
                "file_size_bytes",
                self.file_size_bytes,
                other.file_size_bytes,
            ),
            (
                "open_files",
                self.open_files.into(),
                other.open_files.into(),
            ),
            ("tmp_bytes", self.tmp_bytes, other.tmp_bytes),
        ];
        for (name, mine, theirs) in pairs {
            if mine == 0 || mine > theirs {
                return Err(format!(
                    "limit {name} = {mine} must be between 1 and {theirs}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for LimitBounds {
    fn default() -> Self {
        Self::defaults()
    }
}

/// Configuration of the execution service (`UMCP_EXECUTION_*` / `[execution]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// gRPC listen address.
    pub listen: String,
    pub log: umcp_telemetry::LogConfig,
    /// Metrics and probes over HTTP (`UMCP_HTTP__LISTEN`, default `127.0.0.1:9104`; empty: off).
    pub http: umcp_rpc::ops::OpsConfig,
    /// Token verification (`UMCP_AUTH__URL`, `UMCP_AUTH__API_KEY`, `UMCP_AUTH__JWKS_FILE`, …).
    pub auth: umcp_authz::AuthClientConfig,
    /// Audit events (`UMCP_AUDIT__URL`, empty disables; `UMCP_AUDIT__SPOOL_DIR`, default
    /// `./data/audit-spool/execution`, …).
    pub audit: umcp_audit_client::AuditClientConfig,
    /// Where the auth service shares its keys and revocations (`UMCP_REDIS__URL` or
    /// `UMCP_REDIS__CLUSTER_NODES`; unset: asked of the auth service only).
    pub redis: umcp_redis::RedisConfig,
    /// Sandboxes running at once (also the number of sandbox slots).
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot (over all users, served per-user round robin);
    /// more are refused at once (`UMCP_MAX_QUEUE`, default 1024, 0..=65536).
    pub max_queue: usize,
    /// The longest a request waits for a slot: the wait of a call without a deadline, and the
    /// cap for calls with one (`UMCP_QUEUE_TIMEOUT_MS`, default 10000).
    pub queue_timeout_ms: u64,
    /// Sandboxes one user runs at once (`UMCP_MAX_PER_USER`, default 8); the user's further
    /// requests queue.
    pub max_per_user: usize,
    pub default_limits: LimitBounds,
    pub max_limits: LimitBounds,
    /// UID/GID of sandbox slot 0 (slot i runs as uid_base + i).
    pub uid_base: u32,
    /// Pre-started sandboxes kept waiting per language (`UMCP_WARM_POOL_SIZE`, default 2,
    /// 0..=64; 0 disables the pool), unless the language's own key below says otherwise. Each
    /// pooled language uses `size + 1` sandbox slots (and uids) of its own.
    pub warm_pool_size: usize,
    /// Python's pool size (`UMCP_WARM_POOL_PYTHON`, 0..=64; unset: `warm_pool_size`).
    pub warm_pool_python: Option<usize>,
    /// Node's pool size (`UMCP_WARM_POOL_NODE`, 0..=64; unset: `warm_pool_size`).
    pub warm_pool_node: Option<usize>,
    /// Bash's pool size (`UMCP_WARM_POOL_BASH`, 0..=64; unset: `warm_pool_size`).
    pub warm_pool_bash: Option<usize>,
    pub cgroup: CgroupMode,
    /// DEVELOPMENT ONLY: start even when the host cannot enforce memory and process limits.
    pub insecure_allow_weak_sandbox: bool,
    pub python: PathBuf,
    pub node: PathBuf,
    pub bash: PathBuf,
    /// Python virtual environment holding the tools (ruff, pytest). Found by path, never
    /// through PATH (pyenv shims there are bash scripts that would run on the host).
    pub tools_venv: PathBuf,
    pub shellcheck: PathBuf,
    /// Idempotency keys are remembered this long (per user).
    pub idempotency_ttl_secs: u64,
    pub idempotency_max_entries: usize,
    /// Total size of stored results (outputs included); the oldest keys are forgotten first.
    pub idempotency_max_bytes: u64,
    /// Graph service every result is persisted to (`UMCP_GRAPH_URL`); empty disables
    /// persistence. Writes use the service's own API key (`UMCP_AUTH__API_KEY`).
    pub graph_url: String,
    /// Results waiting to be persisted at most (`UMCP_GRAPH_QUEUE`); when full during a graph
    /// outage the oldest are dropped (and counted).
    pub graph_queue: usize,
    /// GenerateCode's renderer (`UMCP_RENDERER`): the umcp-execution binary, run with
    /// `--render-template` in the sandbox. Empty: this executable.
    pub renderer: PathBuf,
    /// Memory (cgroup) of one render.
    pub render_memory_bytes: u64,
    /// CPU time of one render (over it: RESOURCE_EXHAUSTED).
    pub render_cpu_time_ms: u64,
    /// Wall time of one render (over it: DEADLINE_EXCEEDED).
    pub render_wall_time_ms: u64,
    /// Largest rendered output (over it: RESOURCE_EXHAUSTED).
    pub render_output_bytes: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50054".into(),
            log: umcp_telemetry::LogConfig::default(),
            http: umcp_rpc::ops::OpsConfig::on("127.0.0.1:9104"),
            auth: umcp_authz::AuthClientConfig::default(),
            redis: umcp_redis::RedisConfig::default(),
            audit: umcp_audit_client::AuditClientConfig {
                spool_dir: "./data/audit-spool/execution".into(),
                ..umcp_audit_client::AuditClientConfig::default()
            },
            max_concurrent: 8,
            max_queue: 1024,
            queue_timeout_ms: 10_000,
            max_per_user: 8,
            default_limits: LimitBounds::defaults(),
            max_limits: LimitBounds::maxima(),
            uid_base: 60_000,
            warm_pool_size: 2,
            warm_pool_python: None,
            warm_pool_node: None,
            warm_pool_bash: None,
            cgroup: CgroupMode::Auto,
            insecure_allow_weak_sandbox: false,
            python: "/usr/bin/python3".into(),
            node: "/usr/bin/node".into(),
            bash: "/usr/bin/bash".into(),
            tools_venv: ".venv".into(),
            shellcheck: "/usr/bin/shellcheck".into(),
            idempotency_ttl_secs: 24 * 3600,
            idempotency_max_entries: 10_000,
            idempotency_max_bytes: 256 << 20,
            graph_url: "http://127.0.0.1:50053".into(),
            graph_queue: 1024,
            renderer: PathBuf::new(),
            render_memory_bytes: 128 << 20,
            render_cpu_time_ms: 2_000,
            render_wall_time_ms: 5_000,
            render_output_bytes: 1 << 20,
        }
    }
}

impl ExecutionConfig {
    /// Checks cross-field rules; the message names the field and what is allowed.
    pub fn check(&self) -> Result<(), String> {
        let first = |problem: Option<String>| problem.map_or(Ok(()), Err);
        first(check_range("max_concurrent", self.max_concurrent, 1..=1024))?;
        first(check_range("max_per_user", self.max_per_user, 1..))?;
        first(check_range("max_queue", self.max_queue, 0..=65_536))?;
        first(check_range("warm_pool_size", self.warm_pool_size, 0..=64))?;
        for (name, size) in [
            ("warm_pool_python", self.warm_pool_python),
            ("warm_pool_node", self.warm_pool_node),
            ("warm_pool_bash", self.warm_pool_bash),
        ] {
            if let Some(size) = size {
                first(check_range(name, size, 0..=64))?;
            }
        }
        first(check_range("queue_timeout_ms", self.queue_timeout_ms, 1..))?;
        if self.uid_base < 1000
            || u64::from(self.uid_base) + self.sandbox_slots() as u64 > 0xFFFF_FFFE
        {
            return Err(format!(
                "uid_base = {} must be at least 1000 and leave room for every slot",
                self.uid_base
            ));
        }
        self.max_limits.check_within(&LimitBounds {
            wall_time_ms: u64::MAX,
            cpu_time_ms: u64::MAX,
            memory_bytes: u64::MAX,
            max_processes: u32::MAX,
            output_bytes: u64::MAX,
            file_size_bytes: u64::MAX,
            open_files: u32::MAX,
            tmp_bytes: u64::MAX,
        })?;
        if self.max_limits.max_processes < 8 {
            return Err(
                "max_limits.max_processes must be at least 8 (interpreters start helper threads)"
                    .into(),
            );
        }
        self.default_limits
            .check_within(&self.max_limits)
            .map_err(|e| format!("default_limits: {e} (the configured maximum)"))?;
        for (name, value, allowed) in [
            // 16 MiB: below it the renderer cannot even load.
            (
                "render_memory_bytes",
                self.render_memory_bytes,
                16 << 20..=1u64 << 34,
            ),
            ("render_cpu_time_ms", self.render_cpu_time_ms, 1..=600_000),
            ("render_wall_time_ms", self.render_wall_time_ms, 1..=600_000),
            (
                "render_output_bytes",
                self.render_output_bytes,
                1..=64 << 20,
            ),
        ] {
            first(check_range(name, value, allowed))?;
        }
        for (name, path) in [
            ("python", &self.python),
            ("node", &self.node),
            ("bash", &self.bash),
        ] {
            if !path.is_absolute() {
                return Err(format!(
                    "{name} = {} must be an absolute path",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

impl ExecutionConfig {
    /// Sandbox slots: the running sandboxes plus the warm pool's own.
    pub fn sandbox_slots(&self) -> usize {
        let sizes = crate::model::Language::ALL.map(|l| self.warm_pool_size_of(l));
        self.max_concurrent + crate::pool::WarmPool::slots_needed(&sizes)
    }

    /// Pre-started sandboxes kept for `language`.
    pub fn warm_pool_size_of(&self, language: crate::model::Language) -> usize {
        use crate::model::Language;
        let own = match language {
            Language::Python => self.warm_pool_python,
            Language::JavaScript => self.warm_pool_node,
            Language::Bash => self.warm_pool_bash,
        };
        own.unwrap_or(self.warm_pool_size)
    }
}

impl umcp_config::Validate for ExecutionConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.http.problems());
        problems.extend(self.auth.problems());
        problems.extend(self.audit.problems());
        problems.extend(self.redis.problems());
        if let Err(e) = self.check() {
            problems.push(e);
        }
        if !self.graph_url.is_empty()
            && !self
                .graph_url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some())
        {
            problems.push(format!(
                "graph_url (UMCP_GRAPH_URL) `{}` must be an http://host:port URL, or empty to \
                 disable persistence",
                self.graph_url
            ));
        }
        problems.extend(check_range("graph_queue", self.graph_queue, 1..));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen (UMCP_LISTEN) `{}` must be an address like 127.0.0.1:50054",
                self.listen
            ));
        }
        problems
    }
}

impl umcp_rpc::process::ProcessConfig for ExecutionConfig {
    fn log(&self) -> &umcp_telemetry::LogConfig {
        &self.log
    }

    fn listen(&self) -> &str {
        &self.listen
    }

    fn ops(&self) -> Option<&umcp_rpc::ops::OpsConfig> {
        Some(&self.http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_within_maxima() {
        ExecutionConfig::default().check().expect("defaults valid");
    }

    #[test]
    fn defaults_above_maxima_are_rejected_with_the_field_name() {
        let mut c = ExecutionConfig::default();
        c.default_limits.memory_bytes = c.max_limits.memory_bytes + 1;
        let err = c.check().unwrap_err();
        assert!(err.contains("memory_bytes"), "{err}");
        let c = ExecutionConfig {
            python: "python3".into(),
            ..ExecutionConfig::default()
        };
        assert!(c.check().unwrap_err().contains("absolute"));
    }

    #[test]
    fn graph_url_is_an_http_url_or_empty() {
        use umcp_config::Validate;
        let with = |url: &str| ExecutionConfig {
            graph_url: url.into(),
            ..ExecutionConfig::default()
        };
        assert!(with("http://127.0.0.1:50053").validate().is_empty());
        assert!(with("").validate().is_empty(), "empty disables persistence");
        let problems = with("127.0.0.1:50053").validate();
        assert!(
            problems.iter().any(|p| p.contains("UMCP_GRAPH_URL")),
            "{problems:?}"
        );
    }
}
