//! The process sandbox of the execution service: runs one untrusted program and reports how it
//! ended.
//!
//! [`Sandbox`] is the seam the service's runners (execute, lint, pytest, template rendering)
//! use: they describe a run as a [`RunSpec`] and get a [`RunOutput`] or a [`RunError`]. Today's
//! backend is [`NamespaceSandbox`] (Linux namespaces, a pivot_root'ed read-only root, per-slot
//! UID/GID and cgroups, rlimits, no_new_privs, seccomp); a microVM backend can implement the
//! same trait later.

mod boxdir;
pub mod cgroup;
mod child;
mod launcher;
mod limits;
mod mounts;
mod netns;
mod pooled;
mod run;
mod seccomp;
mod spawner;
mod supervisor;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

pub use cgroup::CgroupMode;
pub use launcher::{NamespaceSandbox, SandboxOptions};
pub use limits::RunLimits;
pub use mounts::{ExtraBind, SandboxFile};
pub use pooled::{Handover, PrestartMode, Prestarted};

/// One program to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Absolute path of the program inside the sandbox (the host's /usr is visible read-only).
    pub program: PathBuf,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The complete environment (nothing is inherited from the service).
    pub env: Vec<(String, String)>,
    /// Files written read-only under `/box`.
    pub files: Vec<SandboxFile>,
    /// Extra read-only binds (tools such as ruff).
    pub binds: Vec<ExtraBind>,
    /// Working directory inside the sandbox.
    pub workdir: String,
    /// Bytes fed to the program's standard input (then closed).
    pub stdin: Vec<u8>,
    /// Resource limits of this run.
    pub limits: RunLimits,
    /// Capture descriptor 3 as a side channel (e.g. pytest's JUnit XML), capped like stdout.
    pub capture_fd3: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Exit code 0.
    Ok,
    /// Non-zero exit or a signal not caused by a limit.
    RuntimeError,
    /// Wall-clock limit; the whole process tree was killed.
    Timeout,
    /// CPU-time limit.
    CpuLimit,
    /// The cgroup's OOM killer fired.
    MemoryLimit,
    /// An output stream exceeded its cap; the tree was killed.
    OutputLimit,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output (descriptor 1).
    Stdout,
    /// Standard error (descriptor 2).
    Stderr,
}

/// Output as it is produced (streaming runs).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The stream the bytes were written to.
    pub stream: StreamKind,
    /// The bytes, in the order they were read.
    pub data: Vec<u8>,
}

/// Result of one run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// How the run ended.
    pub termination: Termination,
    /// Exit code when the program exited.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// Captured standard output (empty when streamed through chunks instead).
    pub stdout: Vec<u8>,
    /// Captured standard error (empty when streamed through chunks instead).
    pub stderr: Vec<u8>,
    /// Standard output hit the per-stream cap (and the run was stopped).
    pub stdout_truncated: bool,
    /// Standard error hit the per-stream cap (and the run was stopped).
    pub stderr_truncated: bool,
    /// Bytes written to descriptor 3 (when `capture_fd3`).
    pub side_channel: Vec<u8>,
    /// Wall-clock time from the clone to the reaping of the whole tree.
    pub wall_time: Duration,
    /// CPU time of the whole tree (the cgroup's counter, else the child's rusage).
    pub cpu_time: Duration,
    /// Peak memory of the whole tree (0 when unknown).
    pub peak_memory_bytes: u64,
}

/// Why a run could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The child failed before `execve` (a mount, the credential switch, the seccomp filter, …).
    #[error("sandbox setup failed at {step}: {source}")]
    Setup {
        /// The step that failed, e.g. `pivot_root`.
        step: String,
        /// The errno the step failed with.
        source: std::io::Error,
    },
    /// The host refused a resource (pipes, cgroup files, a slot) or supervision failed.
    #[error("sandbox resource error: {0}")]
    Resource(#[source] std::io::Error),
    /// The request cannot be run as given (a path that leaves `/box`, a string with NUL, …).
    #[error("invalid sandbox request: {0}")]
    Invalid(String),
    /// The caller went away, or the sandbox is shutting down.
    #[error("the run was cancelled")]
    Cancelled,
}

/// What the sandbox offers, for logs and health output.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    /// Name of the backend, e.g. `linux-namespaces`.
    pub backend: &'static str,
    /// e.g. `cgroup v1 (/sys/fs/cgroup/memory)`, or `none` in insecure mode.
    pub cgroups: String,
    /// Number of runs that may be in flight at once.
    pub slots: usize,
    /// UID of slot 0 (slot i runs as `uid_base + i`).
    pub uid_base: u32,
    /// Host directories this instance created (cgroup instance directories, the root mount
    /// point); all are removed when the sandbox is dropped.
    pub owned_paths: Vec<PathBuf>,
}

/// A place to run untrusted programs.
#[async_trait::async_trait]
pub trait Sandbox: Send + Sync + std::fmt::Debug {
    /// Runs `spec`. With `chunks`, output is sent there as it is produced (and not kept in the
    /// result); otherwise it is captured up to the per-stream cap.
    async fn run(
        &self,
        spec: RunSpec,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<RunOutput, RunError>;

    /// What this sandbox offers (for start-up logs and health output).
    fn info(&self) -> SandboxInfo;
}
