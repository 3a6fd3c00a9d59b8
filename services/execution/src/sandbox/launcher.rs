//! [`NamespaceSandbox`]: the in-process launcher behind the [`Sandbox`] trait.
//!
//! A fixed pool of slots bounds concurrency; each slot has its own UID/GID (`uid_base + i`, so
//! RLIMIT_NPROC and file ownership never mix two runs) and its own cgroup(s). Every run is
//! supervised in its own task, so a caller that goes away (a cancelled RPC) only signals the
//! run to stop; the task still kills, reaps and returns the slot.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::cgroup::{self, CgroupLimits, CgroupMode, CgroupSlot, Pool};
use super::child::{self, ChildPlan, ChildStdio, PlanParts, UserMaps};
use super::mounts::{self, PlanInput};
use super::spawner::Spawner;
use super::supervisor::{self, KillReason, ParentEnds, Watch};
use super::{
    Chunk, RunOutput, RunSpec, Sandbox, SandboxError, SandboxInfo, Termination, seccomp, sys,
};

/// Construction options.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Number of slots = maximum concurrent runs.
    pub slots: usize,
    /// UID/GID of slot 0; slot `i` runs as `uid_base + i`.
    pub uid_base: u32,
    pub cgroup_mode: CgroupMode,
    /// Run without cgroups when none are usable (no memory or process-count limit!). Only for
    /// development; the caller must log it loudly.
    pub allow_without_cgroups: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            slots: 8,
            uid_base: 60000,
            cgroup_mode: CgroupMode::Auto,
            allow_without_cgroups: false,
        }
    }
}

#[derive(Debug)]
struct SlotState {
    index: usize,
    cgroup: Option<Box<dyn CgroupSlot>>,
    /// The child inherits the slot's cgroups from the spawner thread (cgroup v1).
    inherits_cgroup: bool,
    /// `None` in rootless mode (each run's clone creates one).
    net_ns: Option<OwnedFd>,
    spawner: Spawner,
}

#[derive(Debug)]
struct Inner {
    options: SandboxOptions,
    policy: Arc<seccomp::Policy>,
    /// Empty directory the child mounts its root tmpfs on (inside its own mount namespace, so
    /// the host never sees anything there).
    root_dir: tempfile::TempDir,
    free: Mutex<Vec<SlotState>>,
    permits: Arc<Semaphore>,
    cgroups: String,
    /// Not root: user namespace per run, no cgroups (development only).
    rootless: bool,
    /// Owns the cgroup directories; dropped (and removed) with the sandbox.
    pool: Mutex<Option<Pool>>,
}

/// Linux-namespace sandbox (see the module docs of [`crate::sandbox`]).
#[derive(Debug, Clone)]
pub struct NamespaceSandbox {
    inner: Arc<Inner>,
}

/// Returns a slot to the pool when dropped (also on panics and cancellation).
struct Lease {
    inner: Arc<Inner>,
    slot: Option<SlotState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // A slot whose cgroup cannot be emptied is never handed out again.
            let clean = slot.cgroup.as_ref().is_none_or(|c| c.kill_all().is_ok());
            if clean {
                self.inner.free.lock().push(slot);
            } else {
                tracing::error!(
                    slot = slot.index,
                    "sandbox slot quarantined: cgroup not empty"
                );
            }
        }
    }
}

impl NamespaceSandbox {
    /// Checks the host and prepares the slot pool. Fails with a message naming what is missing.
    pub fn new(options: SandboxOptions) -> Result<Self, String> {
        // Without root the sandbox can only run rootless: a user namespace per run and no
        // cgroups, so no memory or process limits. That is a development mode only.
        let rootless = sys::effective_uid() != 0;
        if rootless && !options.allow_without_cgroups {
            return Err(
                "the namespace sandbox needs root (it creates per-slot cgroups and switches \
                        every run to a per-slot uid); run the execution service as root on a \
                        dedicated host or VM"
                    .into(),
            );
        }
        if rootless {
            tracing::warn!(
                "insecure: not root; sandboxes run rootless in user namespaces without cgroup limits"
            );
        }
        if options.slots == 0 {
            return Err("the sandbox needs at least one slot".into());
        }
        let policy = seccomp::build().map_err(|e| e.to_string())?;
        if sys::x32_abi_enabled() {
            tracing::info!(
                "x32 syscall abi enabled on this kernel; seccomp answers it with enosys"
            );
        }
        let detected = if rootless {
            Err("cgroups need root".to_owned())
        } else {
            cgroup::detect(options.cgroup_mode)
        };
        let (pool, cgroups) = match detected {
            Ok(layout) => {
                let pool = Pool::create(&layout, options.slots).map_err(|e| {
                    format!("cannot create sandbox cgroups ({}): {e}", layout.describe())
                })?;
                (Some(pool), layout.describe())
            }
            Err(why) if options.allow_without_cgroups => {
                tracing::warn!(reason = %why, "insecure: sandbox runs without cgroups; memory and process limits are not enforced");
                (None, "none".to_owned())
            }
            Err(why) => return Err(format!("cannot enforce memory and process limits: {why}")),
        };
        remove_stale_roots();
        let root_dir = tempfile::Builder::new()
            .prefix(&format!("{ROOT_PREFIX}{}.", std::process::id()))
            .tempdir()
            .map_err(|e| format!("cannot create the sandbox root mount point: {e}"))?;
        let mut pool = pool;
        let mut free = Vec::with_capacity(options.slots);
        let mut cgroup_slots: Vec<Option<Box<dyn CgroupSlot>>> = match pool.as_mut() {
            Some(p) => p.slots.drain(..).map(Some).collect(),
            None => (0..options.slots).map(|_| None).collect(),
        };
        let mut namespaces: Vec<Option<OwnedFd>> = if rootless {
            (0..options.slots).map(|_| None).collect()
        } else {
            super::netns::create(options.slots)
                .map_err(|e| {
                    format!("cannot create network namespaces for the sandbox slots: {e}")
                })?
                .into_iter()
                .map(Some)
                .collect()
        };
        for (index, mut cgroup) in cgroup_slots.drain(..).enumerate().rev() {
            let net_ns = namespaces.pop().ok_or("network namespace missing")?;
            let spawner =
                Spawner::start(index).map_err(|e| format!("cannot start a spawner thread: {e}"))?;
            let inherits_cgroup = match cgroup.as_mut() {
                Some(c) => c.adopt_thread(spawner.tid).map_err(|e| {
                    format!("cannot move a spawner thread into its slot cgroup: {e}")
                })?,
                None => false,
            };
            free.push(SlotState {
                index,
                cgroup,
                inherits_cgroup,
                net_ns,
                spawner,
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(options.slots)),
                options,
                policy: Arc::new(policy),
                root_dir,
                free: Mutex::new(free),
                cgroups,
                rootless,
                pool: Mutex::new(pool),
            }),
        })
    }

    async fn lease(&self) -> Result<Lease, SandboxError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| SandboxError::Cancelled)?;
        let slot = self.inner.free.lock().pop();
        match slot {
            Some(slot) => Ok(Lease {
                inner: Arc::clone(&self.inner),
                slot: Some(slot),
                _permit: permit,
            }),
            None => Err(SandboxError::Resource(std::io::Error::other(
                "every sandbox slot is quarantined",
            ))),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Slots hold descriptors into the cgroup directories: close them before removal.
        let slots: Vec<SlotState> = self.free.lock().drain(..).collect();
        if let Some(pool) = self.pool.lock().as_mut() {
            pool.slots
                .extend(slots.into_iter().filter_map(|s| s.cgroup));
        }
    }
}

#[async_trait::async_trait]
impl Sandbox for NamespaceSandbox {
    async fn run(
        &self,
        spec: RunSpec,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<RunOutput, SandboxError> {
        let lease = self.lease().await?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_in_slot(lease, spec, chunks, stop_rx));
        let result = task.await;
        drop(stop_tx);
        match result {
            Ok(r) => r,
            Err(e) => Err(SandboxError::Resource(std::io::Error::other(format!(
                "supervisor task failed: {e}"
            )))),
        }
    }

    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            backend: if self.inner.rootless {
                "linux-namespaces (rootless)"
            } else {
                "linux-namespaces"
            },
            cgroups: self.inner.cgroups.clone(),
            slots: self.inner.options.slots,
            uid_base: self.inner.options.uid_base,
            owned_paths: {
                let pool = self.inner.pool.lock();
                let mut paths = pool.as_ref().map(Pool::instance_dirs).unwrap_or_default();
                paths.push(self.inner.root_dir.path().to_path_buf());
                paths
            },
        }
    }
}

/// Name prefix of root mount points in the temp directory: `<prefix><pid>.<random>`.
const ROOT_PREFIX: &str = "umcp-sandbox-root.";

/// Removes the (empty) root mount points of processes that are gone (a crashed service).
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(ROOT_PREFIX)
            .and_then(|r| r.split('.').next())
        else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            // remove_dir only succeeds on an empty directory: nothing else is ever deleted.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    sys::pipe_cloexec().map_err(SandboxError::Resource)
}

fn cstring(s: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Invalid(format!("string contains NUL: {s:?}")))
}

/// Hands the slot back only once the run's mount namespace is gone: unmounting frees the
/// run's tmpfs pages, which are charged to the slot's memory cgroup and would otherwise count
/// against the next run. Both happen on a blocking thread, after the result was returned.
struct Release {
    lease: Option<Lease>,
    mount_ns: Option<OwnedFd>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let (lease, ns) = (self.lease.take(), self.mount_ns.take());
        let finish = move || {
            drop(ns);
            drop(lease);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
}

async fn run_in_slot(
    lease: Lease,
    spec: RunSpec,
    chunks: Option<mpsc::Sender<Chunk>>,
    cancel: oneshot::Receiver<()>,
) -> Result<RunOutput, SandboxError> {
    let inner = Arc::clone(&lease.inner);
    let mut release = Release {
        lease: Some(lease),
        mount_ns: None,
    };
    let slot = release
        .lease
        .as_mut()
        .and_then(|l| l.slot.as_mut())
        .ok_or(SandboxError::Cancelled)?;
    let uid = inner.options.uid_base + slot.index as u32;
    let limits = spec.limits;
    if let Some(cg) = slot.cgroup.as_mut() {
        cg.begin(CgroupLimits {
            memory_bytes: limits.memory_bytes,
            max_processes: limits.max_processes,
        })
        .map_err(SandboxError::Resource)?;
    }
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (side_r, side_w) = if spec.capture_fd3 {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    // The child may reopen its stdio through /proc/self/fd (`/dev/stdout`, pytest's
    // `--junitxml=/dev/fd/3`); pipe inodes belong to their creator, so hand them to the slot's
    // uid or the reopen fails with EACCES once the child has dropped root.
    for fd in [
        Some(&stdin_r),
        Some(&stdout_w),
        Some(&stderr_w),
        side_w.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if !inner.rootless {
            std::os::unix::fs::fchown(fd, Some(uid), Some(uid)).map_err(SandboxError::Resource)?;
        }
    }
    let started_at = Instant::now();
    // Everything the child touches is built here, before the clone, and owned by the plan (it
    // travels to the spawner thread and may outlive this task if the run is abandoned).
    let started = {
        let ops = mounts::plan(&PlanInput {
            root: inner.root_dir.path(),
            files: &spec.files,
            binds: &spec.binds,
            tmp_bytes: limits.tmp_bytes,
            uid,
            gid: uid,
        })
        .map_err(|e| SandboxError::Invalid(e.0))?;
        let files_bytes: u64 = spec
            .files
            .iter()
            .map(|f| f.contents.len() as u64 + 4096)
            .sum();
        let root_size = files_bytes + (1 << 20);
        let program = spec
            .program
            .to_str()
            .ok_or_else(|| SandboxError::Invalid("program path".into()))?;
        let mut argv = vec![cstring(program)?];
        for a in &spec.args {
            argv.push(cstring(a)?);
        }
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        let cgroup_procs = match slot.cgroup.as_ref().filter(|_| !slot.inherits_cgroup) {
            Some(c) => c
                .procs_fds()
                .into_iter()
                .map(|fd| fd.try_clone_to_owned())
                .collect::<Result<Vec<_>, _>>()
                .map_err(SandboxError::Resource)?,
            None => Vec::new(),
        };
        let plan = ChildPlan::new(PlanParts {
            cgroup_procs,
            net_ns: slot
                .net_ns
                .as_ref()
                .map(OwnedFd::try_clone)
                .transpose()
                .map_err(SandboxError::Resource)?,
            user_maps: inner.rootless.then(|| {
                let (outer_uid, outer_gid) = sys::real_ids();
                UserMaps {
                    uid_map: format!("{uid} {outer_uid} 1\n").into_bytes(),
                    gid_map: format!("{uid} {outer_gid} 1\n").into_bytes(),
                }
            }),
            root: cstring(inner.root_dir.path().to_str().unwrap_or("/"))?,
            root_tmpfs_data: cstring(&format!("size={root_size},nr_inodes=4096,mode=0755"))?,
            ops,
            workdir: cstring(&spec.workdir)?,
            rlimits: super::limits::rlimits(&limits, !inner.rootless),
            uid,
            gid: uid,
            stdio: ChildStdio {
                stdin: stdin_r,
                stdout: stdout_w,
                stderr: stderr_w,
                side: side_w,
            },
            policy: Arc::clone(&inner.policy),
            program: cstring(program)?,
            argv,
            envp,
        });
        slot.spawner.spawn(plan)
    };
    let mut started = started.await.map_err(SandboxError::Resource)?;
    release.mount_ns = started.mount_ns.take();
    tracing::debug!(
        pid = started.pid,
        slot = slot.index,
        "sandbox child started"
    );
    let stdin = if spec.stdin.is_empty() {
        None
    } else {
        Some(stdin_w)
    };
    let ends = ParentEnds {
        pidfd: started.pidfd,
        stdin,
        stdout: stdout_r,
        stderr: stderr_r,
        side: side_r,
        report: started.report,
    };
    let watch = Watch {
        started_at,
        wall_limit: limits.wall_time,
        cpu_limit: limits.cpu_time,
        output_cap: limits.output_bytes,
        stdin: spec.stdin,
        cgroup: slot.cgroup.as_deref(),
        chunks,
        cancel,
    };
    let seen = supervisor::supervise(ends, watch)
        .await
        .map_err(SandboxError::Resource)?;
    let stats = slot.cgroup.as_mut().map(|c| c.end()).unwrap_or_default();
    if let Some((step, errno)) = seen.setup_error {
        return Err(SandboxError::Setup {
            step: child::step_name(step),
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    let ru = seen.reaped.rusage;
    let rusage_cpu = std::time::Duration::from_micros(
        (ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64) * 1_000_000
            + ru.ru_utime.tv_usec as u64
            + ru.ru_stime.tv_usec as u64,
    );
    let cpu_time = stats.cpu.unwrap_or(rusage_cpu);
    let (exit_code, signal) = match seen.reaped.code {
        libc::CLD_EXITED => (Some(seen.reaped.status), None),
        _ => (None, Some(seen.reaped.status)),
    };
    let termination = match seen.killed {
        Some(KillReason::Cancelled) => return Err(SandboxError::Cancelled),
        Some(KillReason::Timeout) => Termination::Timeout,
        Some(KillReason::CpuLimit) => Termination::CpuLimit,
        Some(KillReason::OutputLimit) => Termination::OutputLimit,
        None if stats.oom_killed => Termination::MemoryLimit,
        None if signal == Some(libc::SIGXCPU)
            || (signal == Some(libc::SIGKILL) && cpu_time >= limits.cpu_time) =>
        {
            Termination::CpuLimit
        }
        None if exit_code == Some(0) => Termination::Ok,
        None => Termination::RuntimeError,
    };
    Ok(RunOutput {
        termination,
        exit_code,
        signal,
        stdout: seen.stdout.data,
        stderr: seen.stderr.data,
        stdout_truncated: seen.stdout.truncated,
        stderr_truncated: seen.stderr.truncated,
        side_channel: seen.side.data,
        wall_time: seen.wall,
        cpu_time,
        peak_memory_bytes: stats
            .peak_memory_bytes
            .unwrap_or_else(|| (ru.ru_maxrss as u64).saturating_mul(1024)),
    })
}
