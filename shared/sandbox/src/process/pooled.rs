//! Pre-started, single-use sandboxes: everything a cold run does before `execve` (slot,
//! cgroup, namespaces, mounts, credentials, seccomp) and the interpreter's own start-up happen
//! before a request arrives; the interpreter then writes one readiness byte to stdout (which
//! the parent consumes) and blocks reading its program from descriptor 3.
//! A request hands over the program, stdin and its limits, and the sandbox is supervised and
//! torn down exactly like a cold run. It is never reused: one [`Prestarted`] runs one program.
//!
//! Per-request limits are applied at hand-over: the slot cgroup's memory and pids limits and
//! counter baselines (so CPU and peak memory count from there), and the wall clock starts then.
//! The rlimits are lowered by the waiting program itself before it runs anything it was handed:
//! `prlimit` on another uid's process needs CAP_SYS_RESOURCE, which hosts (such as these VMs)
//! may withhold. The hand-over pipe therefore starts with one line,
//! `UMCP-RLIMITS <resource>:<soft>:<hard> …\n`, that the loader applies with `setrlimit`
//! (lowering needs no privilege), then carries the program. The sandbox is started with the
//! largest limits a request may ask for, and no handed-over byte runs before they are lowered.
//! Only the sizes of `/tmp` and `/dev/shm` are fixed at start; [`Prestarted::tmp_bytes`] says
//! which.
//!
//! Two variations ([`PrestartMode`]): a program that cannot call `setrlimit` (Node) is started
//! with the request limits it will be handed and accepts only requests whose rlimits are the
//! same ([`Prestarted::accepts`]); a program that must find its files on disk as a cold run
//! does (Node's main module, Bash's script) gets a host directory bound read-only at `/box`,
//! into which the parent writes the request's files at hand-over, before the program reads
//! anything from descriptor 3 (see `boxdir.rs`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::boxdir::BoxDir;
use super::launcher::NamespaceSandbox;
use super::mounts::{ExtraBind, SandboxFile};
use super::run::{self, Fd3, ParentPipes, Pipes, Release};
use super::supervisor::{self, ParentEnds, Watch};
use super::{Chunk, RunError, RunLimits, RunOutput, RunSpec};
use crate::sys;

/// How long a pre-start may take before it is given up (a loaded host).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request hands to a pre-started sandbox.
#[derive(Debug, Clone)]
pub struct Handover {
    /// Written to the program's descriptor 3 after the rlimit line, then closed (e.g. the
    /// code for a loader).
    pub program: Vec<u8>,
    /// Written to standard input, then closed.
    pub stdin: Vec<u8>,
    /// The request's limits; the sandbox must [accept](Prestarted::accepts) them.
    pub limits: RunLimits,
    /// Files written under `/box` before the program goes on ([`PrestartMode::box_at_handover`]
    /// only; empty otherwise).
    pub files: Vec<SandboxFile>,
}

/// How a pre-started program takes what it is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrestartMode {
    /// The program lowers its rlimits itself from the hand-over line. When false (it has no
    /// `setrlimit`), it keeps the rlimits of its start and only requests with the same rlimits
    /// are accepted; it still receives (and must skip) the line.
    pub lowers_rlimits: bool,
    /// `/box` is a host directory, bound read-only: the start files of the spec are written
    /// there (e.g. a loader) and removed at hand-over, when the request's files are written.
    /// When false, `/box` holds the spec's files, as in a cold run, and a hand-over brings none.
    pub box_at_handover: bool,
}

impl PrestartMode {
    /// A program that applies the rlimit line and reads everything from descriptor 3 (Python).
    pub const LOADER: Self = Self {
        lowers_rlimits: true,
        box_at_handover: false,
    };
}

/// A sandbox whose program is running and waiting on descriptor 3. Dropping it unused kills
/// it and frees its slot.
#[derive(Debug)]
pub struct Prestarted {
    release: Option<Release>,
    pidfd: Option<OwnedFd>,
    report: Option<OwnedFd>,
    parent: Option<ParentPipes>,
    tmp_bytes: u64,
    /// The rlimits of its start, when the program cannot lower them.
    fixed_rlimits: Option<RunLimits>,
    box_dir: Option<BoxDir>,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ParentPipes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentPipes").finish_non_exhaustive()
    }
}

impl Prestarted {
    /// Size of this sandbox's `/tmp` and `/dev/shm`, fixed when it was started.
    pub fn tmp_bytes(&self) -> u64 {
        self.tmp_bytes
    }

    /// Whether a request with `limits` may run here: the same `/tmp` size and, for a program
    /// that cannot lower its rlimits, the same rlimits as at its start.
    pub fn accepts(&self, limits: &RunLimits) -> bool {
        limits.tmp_bytes == self.tmp_bytes
            && self.fixed_rlimits.as_ref().is_none_or(|start| {
                let same = |a: &RunLimits| {
                    super::limits::rlimits(a, true)
                        .into_iter()
                        .map(|(r, l)| (r, l.rlim_cur, l.rlim_max))
                        .collect::<Vec<_>>()
                };
                same(start) == same(limits)
            })
    }

    /// False once the waiting program has died (it is then dropped, not used).
    pub fn is_alive(&self) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|fd| !sys::pidfd_exited(fd.as_raw_fd()))
    }
}

impl Drop for Prestarted {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        // Never handed over: kill the tree (the PID-namespace init) and reap it off the async
        // threads, then the slot goes back as after any run.
        let _ = sys::pidfd_kill(pidfd.as_raw_fd());
        let release = self.release.take();
        let reap = move || {
            let _ = sys::waitid_pidfd(pidfd.as_raw_fd());
            drop(release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(reap)),
            Err(_) => reap(),
        }
    }
}

impl NamespaceSandbox {
    /// Starts `spec`'s program in a free slot with descriptor 3 as the hand-over pipe, and
    /// returns once it runs (its `execve` succeeded). `spec.files` are written as in a cold
    /// run; `spec.limits` apply until hand-over (its `tmp_bytes` for good).
    ///
    /// # Errors
    /// `Resource` when no slot is free now (pre-starting never waits for one) or the host
    /// refuses; `Setup` when the child failed before `execve`; `Invalid` in rootless mode,
    /// where limits cannot be changed after start.
    pub async fn prestart(
        &self,
        mut spec: RunSpec,
        mode: PrestartMode,
    ) -> Result<Prestarted, RunError> {
        if self.is_rootless() {
            return Err(RunError::Invalid(
                "pre-started sandboxes need root (per-request limits are set at hand-over)".into(),
            ));
        }
        let lease = self.try_lease().ok_or_else(|| {
            RunError::Resource(std::io::Error::other(
                "no free sandbox slot to pre-start in",
            ))
        })?;
        let inner = std::sync::Arc::clone(&lease.inner);
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
        let box_dir = if mode.box_at_handover {
            let dir = BoxDir::create(&std::mem::take(&mut spec.files))?;
            spec.binds.push(ExtraBind {
                host: dir.path().to_path_buf(),
                inside: "/box".into(),
            });
            Some(dir)
        } else {
            None
        };
        run::arm_cgroup(slot, &spec.limits)?;
        let pipes = Pipes::open(Fd3::Feed)?;
        pipes.hand_to(uid)?;
        let (stdio, parent) = pipes.split();
        let plan = run::build_plan(&inner, slot, &spec, uid, stdio)?;
        let mut started = slot.spawner.spawn(plan).await.map_err(RunError::Resource)?;
        release.mount_ns = started.mount_ns.take();
        let mut prestarted = Prestarted {
            release: Some(release),
            pidfd: Some(started.pidfd),
            report: None,
            parent: Some(parent),
            tmp_bytes: spec.limits.tmp_bytes,
            fixed_rlimits: (!mode.lowers_rlimits).then_some(spec.limits),
            box_dir,
        };
        prestarted.report = Some(await_exec(started.report).await?);
        if let Some(mut parent) = prestarted.parent.take() {
            // Dropped on failure with the rest of `prestarted` (which kills the sandbox).
            parent.stdout = await_ready(parent.stdout).await?;
            prestarted.parent = Some(parent);
        }
        Ok(prestarted)
    }

    /// Runs the program of a pre-started sandbox with `handover`; supervised, limited and
    /// torn down like a cold run (see the module docs).
    ///
    /// # Errors
    /// As [`super::Sandbox::run`]; `Invalid` when the sandbox does not
    /// [accept](Prestarted::accepts) the limits, or files come for a sandbox without a box
    /// directory.
    pub async fn run_prestarted(
        &self,
        prestarted: Prestarted,
        handover: Handover,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<RunOutput, RunError> {
        if !prestarted.accepts(&handover.limits) {
            return Err(RunError::Invalid(format!(
                "this pre-started sandbox (/tmp of {} bytes, rlimits {}) cannot take these limits",
                prestarted.tmp_bytes,
                if prestarted.fixed_rlimits.is_some() {
                    "fixed"
                } else {
                    "lowered at hand-over"
                },
            )));
        }
        if prestarted.box_dir.is_none() && !handover.files.is_empty() {
            return Err(RunError::Invalid(
                "this pre-started sandbox takes no files at hand-over".into(),
            ));
        }
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            hand_over(prestarted, handover, chunks, stop_rx).instrument(tracing::Span::current()),
        );
        let result = task.await;
        drop(stop_tx);
        result.unwrap_or_else(|e| {
            Err(RunError::Resource(std::io::Error::other(format!(
                "supervisor task failed: {e}"
            ))))
        })
    }
}

/// Waits until the child's report pipe reaches EOF (its `execve` succeeded, the pipe is
/// close-on-exec) or carries an error report, and gives the descriptor back.
async fn await_exec(report: OwnedFd) -> Result<OwnedFd, RunError> {
    sys::set_nonblocking(report.as_raw_fd())
        .map_err(|e| RunError::Resource(std::io::Error::from_raw_os_error(e)))?;
    let afd = sys::register(report, Interest::READABLE).map_err(RunError::Resource)?;
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            let mut guard = afd.readable().await?;
            match guard.try_io(|fd| {
                sys::read(fd.get_ref().as_raw_fd(), &mut buf)
                    .map_err(std::io::Error::from_raw_os_error)
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    })
    .await;
    match read {
        Ok(Ok(0)) => Ok(afd.into_inner()),
        Ok(Ok(_)) => {
            let (step, errno) = super::child::decode_report(&buf).unwrap_or((0, libc::EIO));
            Err(RunError::Setup {
                step: super::child::step_name(step),
                source: std::io::Error::from_raw_os_error(errno),
            })
        }
        Ok(Err(e)) => Err(RunError::Resource(e)),
        Err(_elapsed) => Err(RunError::Resource(std::io::Error::other(
            "a pre-started sandbox did not start in time",
        ))),
    }
}

/// Waits for the program's readiness byte on stdout (it has started and now blocks on
/// descriptor 3), so a request never waits for the interpreter's start-up.
async fn await_ready(stdout: OwnedFd) -> Result<OwnedFd, RunError> {
    sys::set_nonblocking(stdout.as_raw_fd())
        .map_err(|e| RunError::Resource(std::io::Error::from_raw_os_error(e)))?;
    let afd = sys::register(stdout, Interest::READABLE).map_err(RunError::Resource)?;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            let mut guard = afd.readable().await?;
            match guard.try_io(|fd| {
                sys::read(fd.get_ref().as_raw_fd(), &mut byte)
                    .map_err(std::io::Error::from_raw_os_error)
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    })
    .await;
    match read {
        Ok(Ok(1)) => Ok(afd.into_inner()),
        Ok(Ok(_)) => Err(RunError::Resource(std::io::Error::other(
            "a pre-started sandbox ended before it was ready",
        ))),
        Ok(Err(e)) => Err(RunError::Resource(e)),
        Err(_elapsed) => Err(RunError::Resource(std::io::Error::other(
            "a pre-started sandbox did not become ready in time",
        ))),
    }
}

/// Applies the request's limits to the waiting process and its slot, then supervises the run.
async fn hand_over(
    mut p: Prestarted,
    handover: Handover,
    chunks: Option<mpsc::Sender<Chunk>>,
    cancel: oneshot::Receiver<()>,
) -> Result<RunOutput, RunError> {
    let (Some(pidfd), Some(report), Some(parent)) =
        (p.pidfd.take(), p.report.take(), p.parent.take())
    else {
        return Err(RunError::Cancelled);
    };
    // From here on the run owns the process; `p` only keeps the slot until the end.
    let release = p.release.take();
    let mut release = release.ok_or(RunError::Cancelled)?;
    let slot = release
        .lease
        .as_mut()
        .and_then(|l| l.slot.as_mut())
        .ok_or(RunError::Cancelled)?;
    let limits = handover.limits;
    let handover_span = tracing::debug_span!("sandbox.handover").entered();
    let applied = match p.box_dir.as_mut() {
        // The files first: the program only goes on once descriptor 3 carries its line.
        Some(dir) => dir.hand_over(&handover.files),
        None => Ok(()),
    }
    .and_then(|()| run::arm_cgroup(slot, &limits));
    let mut code = rlimit_line(&limits);
    code.extend_from_slice(&handover.program);
    drop(handover_span);
    if let Err(e) = applied {
        let _ = sys::pidfd_kill(pidfd.as_raw_fd());
        let _ = sys::waitid_pidfd(pidfd.as_raw_fd());
        return Err(e);
    }
    let started_at = Instant::now();
    // As in a cold run: with nothing to feed, stdin stays open (not at EOF) until the end.
    let (stdin, _idle_stdin) = if handover.stdin.is_empty() {
        (None, Some(parent.stdin))
    } else {
        (Some(parent.stdin), None)
    };
    let ends = ParentEnds {
        pidfd,
        stdin,
        stdout: parent.stdout,
        stderr: parent.stderr,
        side: None,
        report,
        code: parent.side,
    };
    let watch = Watch {
        started_at,
        wall_limit: limits.wall_time,
        cpu_limit: limits.cpu_time,
        output_cap: limits.output_bytes,
        stdin: handover.stdin,
        code,
        cgroup: slot.cgroup.as_deref(),
        chunks,
        cancel,
    };
    let seen = supervisor::supervise(ends, watch)
        .await
        .map_err(RunError::Resource)?;
    let _teardown = tracing::debug_span!("sandbox.teardown").entered();
    let stats = slot.cgroup.as_mut().map(|c| c.end()).unwrap_or_default();
    drop(p);
    run::outcome(seen, stats, &limits)
}

/// The run's rlimits as the hand-over line the loader applies: exactly a cold run's, so a
/// program reading its limits sees the same values. The CPU the interpreter spent starting
/// (tens of milliseconds) comes out of the CPU rlimit's margin of two seconds over the
/// request's limit; the precise limit is the cgroup's, counted from hand-over.
fn rlimit_line(limits: &RunLimits) -> Vec<u8> {
    let mut line = String::from("UMCP-RLIMITS");
    for (resource, limit) in super::limits::rlimits(limits, true) {
        line.push_str(&format!(
            " {resource}:{}:{}",
            limit.rlim_cur, limit.rlim_max
        ));
    }
    line.push('\n');
    line.into_bytes()
}
