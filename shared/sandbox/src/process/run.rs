//! One run in a leased slot, as named steps: arm the slot's cgroup, open the child's pipes,
//! build its plan, clone it on the slot's spawner thread, supervise it, and turn what was seen
//! into a [`RunOutput`]. [`run_in_slot`] keeps the order in one place: the cgroup is armed
//! before the clone (every byte the child uses is charged there), the wall clock starts before
//! the plan is built, and a setup failure wins over any termination.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::cgroup::{CgroupLimits, CgroupStats};
use super::child::{self, ChildPlan, ChildStdio, PlanParts, UserMaps};
use super::launcher::{Inner, Lease, SlotState};
use super::mounts::{self, MountOp, PlanInput};
use super::supervisor::{self, KillReason, ParentEnds, Supervised, Watch};
use super::{Chunk, RunError, RunLimits, RunOutput, RunSpec, Termination};
use crate::sys;

/// Hands the slot back only once the run's mount namespace is gone: unmounting frees the
/// run's tmpfs pages, which are charged to the slot's memory cgroup and would otherwise count
/// against the next run. Both happen on a blocking thread, after the result was returned.
pub(super) struct Release {
    pub(super) lease: Option<Lease>,
    pub(super) mount_ns: Option<OwnedFd>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let (lease, ns) = (self.lease.take(), self.mount_ns.take());
        let finish = move || {
            // Off the caller's path: the result was already returned.
            let _span = tracing::debug_span!("sandbox.release").entered();
            drop(ns);
            drop(lease);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(finish)),
            Err(_) => finish(),
        }
    }
}

/// Runs `spec` in the leased slot (in its own task, see `NamespaceSandbox::run`).
pub(super) async fn run_in_slot(
    lease: Lease,
    spec: RunSpec,
    chunks: Option<mpsc::Sender<Chunk>>,
    cancel: oneshot::Receiver<()>,
) -> Result<RunOutput, RunError> {
    let inner = Arc::clone(&lease.inner);
    let mut release = Release {
        lease: Some(lease),
        mount_ns: None,
    };
    let slot = release
        .lease
        .as_mut()
        .and_then(|l| l.slot.as_mut())
        .ok_or(RunError::Cancelled)?;
    let uid = inner.options.uid_base + slot.index as u32;
    let limits = spec.limits;
    let prepare = tracing::debug_span!("sandbox.prepare").entered();
    arm_cgroup(slot, &limits)?;
    let fd3 = if spec.capture_fd3 {
        Fd3::Capture
    } else {
        Fd3::None
    };
    let pipes = Pipes::open(fd3)?;
    if !inner.rootless {
        pipes.hand_to(uid)?;
    }
    let started_at = Instant::now();
    let (plan, parent) = pipes.split();
    let plan = build_plan(&inner, slot, &spec, uid, plan)?;
    drop(prepare);
    let mut started = slot
        .spawner
        .spawn(plan)
        .instrument(tracing::debug_span!("sandbox.clone"))
        .await
        .map_err(RunError::Resource)?;
    release.mount_ns = started.mount_ns.take();
    tracing::debug!(
        pid = started.pid,
        slot = slot.index,
        "sandbox child started"
    );
    // With nothing to feed, the parent's write end of stdin is kept open (not given to the
    // feeder) until the run is over, as it always was.
    let (stdin, _idle_stdin) = if spec.stdin.is_empty() {
        (None, Some(parent.stdin))
    } else {
        (Some(parent.stdin), None)
    };
    let ends = ParentEnds {
        pidfd: started.pidfd,
        stdin,
        stdout: parent.stdout,
        stderr: parent.stderr,
        side: parent.side,
        report: started.report,
        code: None,
    };
    let watch = Watch {
        started_at,
        wall_limit: limits.wall_time,
        cpu_limit: limits.cpu_time,
        output_cap: limits.output_bytes,
        stdin: spec.stdin,
        code: Vec::new(),
        cgroup: slot.cgroup.as_deref(),
        chunks,
        cancel,
    };
    let seen = supervisor::supervise(ends, watch)
        .await
        .map_err(RunError::Resource)?;
    let _teardown = tracing::debug_span!("sandbox.teardown").entered();
    let stats = slot.cgroup.as_mut().map(|c| c.end()).unwrap_or_default();
    outcome(seen, stats, &limits)
}

/// Applies this run's memory and process limits to the slot's cgroup and takes the counter
/// baselines, before anything of the run exists.
pub(super) fn arm_cgroup(slot: &mut SlotState, limits: &RunLimits) -> Result<(), RunError> {
    if let Some(cg) = slot.cgroup.as_mut() {
        cg.begin(CgroupLimits {
            memory_bytes: limits.memory_bytes,
            max_processes: limits.max_processes,
        })
        .map_err(RunError::Resource)?;
    }
    Ok(())
}

/// The pipes of one run, both ends.
pub(super) struct Pipes {
    child: ChildStdio,
    parent: ParentPipes,
}

/// The parent's ends: it writes stdin and reads stdout, stderr and the side channel.
pub(super) struct ParentPipes {
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) side: Option<OwnedFd>,
}

/// What descriptor 3 of the child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fd3 {
    /// Not open.
    None,
    /// A side channel the child writes and the parent captures.
    Capture,
    /// A pipe the parent writes the program into at hand-over (pre-started sandboxes).
    Feed,
}

impl Pipes {
    pub(super) fn open(fd3: Fd3) -> Result<Self, RunError> {
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let (side_r, side_w) = match fd3 {
            Fd3::None => (None, None),
            Fd3::Capture => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            // Swapped: the child reads, the parent writes.
            Fd3::Feed => {
                let (r, w) = pipe()?;
                (Some(w), Some(r))
            }
        };
        Ok(Self {
            child: ChildStdio {
                stdin: stdin_r,
                stdout: stdout_w,
                stderr: stderr_w,
                side: side_w,
            },
            parent: ParentPipes {
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
                side: side_r,
            },
        })
    }

    /// The child may reopen its stdio through /proc/self/fd (`/dev/stdout`, pytest's
    /// `--junitxml=/dev/fd/3`); pipe inodes belong to their creator, so the child's ends go to
    /// the slot's uid or the reopen fails with EACCES once the child has dropped root.
    pub(super) fn hand_to(&self, uid: u32) -> Result<(), RunError> {
        let c = &self.child;
        for fd in [
            Some(&c.stdin),
            Some(&c.stdout),
            Some(&c.stderr),
            c.side.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            std::os::unix::fs::fchown(fd, Some(uid), Some(uid)).map_err(RunError::Resource)?;
        }
        Ok(())
    }

    pub(super) fn split(self) -> (ChildStdio, ParentPipes) {
        (self.child, self.parent)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    sys::pipe_cloexec().map_err(RunError::Resource)
}

fn cstring(s: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Invalid(format!("string contains NUL: {s:?}")))
}

/// Everything the child touches, built here before the clone and owned by the plan (it
/// travels to the spawner thread and may outlive the run's task if the run is abandoned).
pub(super) fn build_plan(
    inner: &Inner,
    slot: &SlotState,
    spec: &RunSpec,
    uid: u32,
    stdio: ChildStdio,
) -> Result<ChildPlan, RunError> {
    let ops = file_system(inner, spec, uid)?;
    // The root tmpfs holds the request's files (and an inode's worth each) plus the skeleton.
    let files_bytes: u64 = spec
        .files
        .iter()
        .map(|f| f.contents.len() as u64 + 4096)
        .sum();
    let root_size = files_bytes + (1 << 20);
    let command = Command::of(spec)?;
    let (cgroup_procs, net_ns) = slot_descriptors(slot)?;
    Ok(ChildPlan::new(PlanParts {
        cgroup_procs,
        net_ns,
        user_maps: inner.rootless.then(|| user_maps(uid)),
        root: cstring(inner.root_dir.path().to_str().unwrap_or("/"))?,
        root_tmpfs_data: cstring(&format!("size={root_size},nr_inodes=4096,mode=0755"))?,
        ops,
        workdir: cstring(&spec.workdir)?,
        rlimits: super::limits::rlimits(&spec.limits, !inner.rootless),
        uid,
        gid: uid,
        stdio,
        policy: Arc::clone(&inner.policy),
        program: command.program,
        argv: command.argv,
        envp: command.envp,
    }))
}

/// The operations that populate the run's root (checked paths, ready C strings).
fn file_system(inner: &Inner, spec: &RunSpec, uid: u32) -> Result<Vec<MountOp>, RunError> {
    mounts::plan(&PlanInput {
        root: inner.root_dir.path(),
        files: &spec.files,
        binds: &spec.binds,
        tmp_bytes: spec.limits.tmp_bytes,
        uid,
        gid: uid,
    })
    .map_err(|e| RunError::Invalid(e.0))
}

/// The program, argv and environment as C strings (a NUL anywhere is an invalid request).
struct Command {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Command {
    fn of(spec: &RunSpec) -> Result<Self, RunError> {
        let program = spec
            .program
            .to_str()
            .ok_or_else(|| RunError::Invalid("program path".into()))?;
        let mut argv = vec![cstring(program)?];
        for a in &spec.args {
            argv.push(cstring(a)?);
        }
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            program: cstring(program)?,
            argv,
            envp,
        })
    }
}

/// Own duplicates of the slot's cgroup and network namespace descriptors: the plan may outlive
/// the lease (a cancelled run). No cgroup descriptors when the child inherits the cgroup from
/// the spawner thread (v1), no namespace in rootless mode (the clone creates one).
fn slot_descriptors(slot: &SlotState) -> Result<(Vec<OwnedFd>, Option<OwnedFd>), RunError> {
    let cgroup_procs = match slot.cgroup.as_ref().filter(|_| !slot.inherits_cgroup) {
        Some(c) => c
            .procs_fds()
            .into_iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunError::Resource)?,
        None => Vec::new(),
    };
    let net_ns = slot
        .net_ns
        .as_ref()
        .map(OwnedFd::try_clone)
        .transpose()
        .map_err(RunError::Resource)?;
    Ok((cgroup_procs, net_ns))
}

/// Rootless mode: the slot's uid (gid) inside maps to the service's own outside; nothing maps
/// to root.
fn user_maps(uid: u32) -> UserMaps {
    let (outer_uid, outer_gid) = sys::real_ids();
    UserMaps {
        uid_map: format!("{uid} {outer_uid} 1\n").into_bytes(),
        gid_map: format!("{uid} {outer_gid} 1\n").into_bytes(),
    }
}

/// What the supervisor and the cgroup saw, as the run's result. A child that failed before
/// `execve` is a setup error whatever else happened; a cancelled run has no result.
pub(super) fn outcome(
    seen: Supervised,
    stats: CgroupStats,
    limits: &RunLimits,
) -> Result<RunOutput, RunError> {
    if let Some((step, errno)) = seen.setup_error {
        return Err(RunError::Setup {
            step: child::step_name(step),
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    let ru = seen.reaped.rusage;
    let cpu_time = stats.cpu.unwrap_or_else(|| rusage_cpu(&ru));
    let (exit_code, signal) = match seen.reaped.code {
        libc::CLD_EXITED => (Some(seen.reaped.status), None),
        _ => (None, Some(seen.reaped.status)),
    };
    let ended = Ended {
        killed: seen.killed,
        oom_killed: stats.oom_killed,
        exit_code,
        signal,
        cpu_time,
    };
    let termination = ended.termination(limits.cpu_time)?;
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

/// User plus system time of the reaped child (and its reaped descendants).
fn rusage_cpu(ru: &libc::rusage) -> Duration {
    Duration::from_micros(
        (ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64) * 1_000_000
            + ru.ru_utime.tv_usec as u64
            + ru.ru_stime.tv_usec as u64,
    )
}

/// How the child ended, before it is named.
struct Ended {
    killed: Option<KillReason>,
    oom_killed: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
    cpu_time: Duration,
}

impl Ended {
    /// Our own kill reason first (we know why we sent SIGKILL), then the OOM killer, then the
    /// CPU rlimit backstop (SIGXCPU, or SIGKILL past the limit), then the exit code.
    fn termination(&self, cpu_limit: Duration) -> Result<Termination, RunError> {
        Ok(match self.killed {
            Some(KillReason::Cancelled) => return Err(RunError::Cancelled),
            Some(KillReason::Timeout) => Termination::Timeout,
            Some(KillReason::CpuLimit) => Termination::CpuLimit,
            Some(KillReason::OutputLimit) => Termination::OutputLimit,
            None if self.oom_killed => Termination::MemoryLimit,
            None if self.signal == Some(libc::SIGXCPU)
                || (self.signal == Some(libc::SIGKILL) && self.cpu_time >= cpu_limit) =>
            {
                Termination::CpuLimit
            }
            None if self.exit_code == Some(0) => Termination::Ok,
            None => Termination::RuntimeError,
        })
    }
}
