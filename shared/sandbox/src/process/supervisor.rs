//! Supervision of a started child: feeds stdin, reads stdout/stderr (and the optional fd-3 side
//! channel) with per-stream caps, enforces the wall-clock and CPU limits, and reaps the child.
//!
//! Everything is non-blocking on the tokio reactor: the pipes and the pidfd are registered with
//! `AsyncFd`. Killing the child (the init of its PID namespace) with SIGKILL makes the kernel
//! kill every other process of the namespace, so the pidfd becomes readable only when the whole
//! tree is gone.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

use super::cgroup::CgroupSlot;
use super::{Chunk, StreamKind};
use crate::sys;

/// Why the supervisor killed the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum KillReason {
    Timeout = 1,
    CpuLimit = 2,
    OutputLimit = 3,
    Cancelled = 4,
}

/// Sends SIGKILL once and remembers the first reason.
struct Killer {
    pidfd: RawFd,
    reason: AtomicU8,
}

impl Killer {
    fn kill(&self, reason: KillReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
        // ESRCH after the child was reaped cannot happen: the pidfd is reaped only after every
        // user of the killer has finished.
        let _ = sys::pidfd_kill(self.pidfd);
    }

    fn reason(&self) -> Option<KillReason> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(KillReason::Timeout),
            2 => Some(KillReason::CpuLimit),
            3 => Some(KillReason::OutputLimit),
            4 => Some(KillReason::Cancelled),
            _ => None,
        }
    }
}

/// Output of one stream.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) data: Vec<u8>,
    pub(super) truncated: bool,
}

/// The parent's ends of the child's descriptors.
#[derive(Debug)]
pub(super) struct ParentEnds {
    pub(super) pidfd: OwnedFd,
    pub(super) stdin: Option<OwnedFd>,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) side: Option<OwnedFd>,
    pub(super) report: OwnedFd,
    /// Pre-started sandboxes: the pipe the program is written to at hand-over (fd 3 inside).
    pub(super) code: Option<OwnedFd>,
}

/// What the supervisor saw.
#[derive(Debug)]
pub(super) struct Supervised {
    pub(super) reaped: sys::Reaped,
    pub(super) killed: Option<KillReason>,
    pub(super) stdout: Captured,
    pub(super) stderr: Captured,
    pub(super) side: Captured,
    pub(super) wall: Duration,
    /// `(step, errno)` when the child failed before `execve`.
    pub(super) setup_error: Option<(u32, i32)>,
}

pub(super) struct Watch<'a> {
    pub(super) started_at: Instant,
    pub(super) wall_limit: Duration,
    pub(super) cpu_limit: Duration,
    pub(super) output_cap: u64,
    pub(super) stdin: Vec<u8>,
    /// What is written to `ParentEnds::code` (then closed).
    pub(super) code: Vec<u8>,
    pub(super) cgroup: Option<&'a (dyn CgroupSlot + 'static)>,
    pub(super) chunks: Option<mpsc::Sender<Chunk>>,
    pub(super) cancel: oneshot::Receiver<()>,
}

/// How often the cgroup CPU counter is compared with the CPU limit.
const CPU_POLL: Duration = Duration::from_millis(25);

pub(super) async fn supervise(ends: ParentEnds, watch: Watch<'_>) -> io::Result<Supervised> {
    let ParentEnds {
        pidfd,
        stdin,
        stdout,
        stderr,
        side,
        report,
        code,
    } = ends;
    let code_data = watch.code;
    let killer = Killer {
        pidfd: pidfd.as_raw_fd(),
        reason: AtomicU8::new(0),
    };
    let chunks = watch.chunks.as_ref();
    let cap = watch.output_cap;
    let pidfd = sys::register(pidfd, Interest::READABLE)?;
    // The report pipe is close-on-exec: it turns readable (EOF) when the program's execve
    // succeeded, which splits the run into setup (namespaces, mounts, credentials, seccomp)
    // and the program itself, as two spans.
    sys::set_nonblocking(report.as_raw_fd()).map_err(io::Error::from_raw_os_error)?;
    let report = sys::register(report, Interest::READABLE)?;
    let stdin_data = watch.stdin;
    let cgroup = watch.cgroup;
    let deadline = tokio::time::Instant::from_std(watch.started_at + watch.wall_limit);
    let cpu_limit = watch.cpu_limit;
    let mut cancel = watch.cancel;

    let wait = async {
        let mut setup_span = Some(tracing::debug_span!("sandbox.setup"));
        let mut program_span = None;
        let mut timed_out = false;
        let mut cancelled = false;
        let mut cpu_watch = cgroup.is_some();
        let mut tick = tokio::time::interval(CPU_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = pidfd.readable() => { let _exited = ready?; break; }
                _ = report.readable(), if setup_span.is_some() => {
                    drop(setup_span.take());
                    program_span = Some(tracing::debug_span!("sandbox.program"));
                }
                _ = tokio::time::sleep_until(deadline), if !timed_out => {
                    timed_out = true;
                    killer.kill(KillReason::Timeout);
                }
                _ = tick.tick(), if cpu_watch => {
                    if cgroup.and_then(|c| c.cpu_used()).is_some_and(|used| used >= cpu_limit) {
                        cpu_watch = false;
                        killer.kill(KillReason::CpuLimit);
                    }
                }
                _ = &mut cancel, if !cancelled => {
                    cancelled = true;
                    killer.kill(KillReason::Cancelled);
                }
            }
        }
        drop(program_span);
        io::Result::Ok(())
    };
    let keep = chunks.is_none();
    let (waited, out, err, side_out, (), ()) = tokio::join!(
        wait,
        pump(stdout, cap, Some(StreamKind::Stdout), keep, chunks, &killer),
        pump(stderr, cap, Some(StreamKind::Stderr), keep, chunks, &killer),
        async {
            match side {
                Some(fd) => pump(fd, cap, None, true, None, &killer).await,
                None => Ok(Captured::default()),
            }
        },
        feed(stdin, stdin_data),
        feed(code, code_data),
    );
    let wall = watch.started_at.elapsed();
    // Reap before propagating any I/O error, so no zombie is left behind.
    if let Err(e) = &waited {
        tracing::warn!(error = %e, "pidfd wait failed; killing and reaping synchronously");
        killer.kill(KillReason::Cancelled);
    }
    let reaped =
        sys::waitid_pidfd(pidfd.get_ref().as_raw_fd()).map_err(io::Error::from_raw_os_error)?;
    waited?;
    let setup_error = read_report(report.get_ref());
    Ok(Supervised {
        reaped,
        killed: killer.reason(),
        stdout: out?,
        stderr: err?,
        side: side_out?,
        wall,
        setup_error,
    })
}

/// Reads one stream until EOF, keeping at most `cap` bytes; more kills the child.
async fn pump(
    fd: OwnedFd,
    cap: u64,
    kind: Option<StreamKind>,
    keep: bool,
    chunks: Option<&mpsc::Sender<Chunk>>,
    killer: &Killer,
) -> io::Result<Captured> {
    sys::set_nonblocking(fd.as_raw_fd()).map_err(io::Error::from_raw_os_error)?;
    let afd = sys::register(fd, Interest::READABLE)?;
    let mut captured = Captured::default();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = afd.readable().await?;
        let read = guard.try_io(|inner| {
            sys::read(inner.get_ref().as_raw_fd(), &mut buf).map_err(io::Error::from_raw_os_error)
        });
        let n = match read {
            Err(_would_block) => continue,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n as usize,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => return Err(e),
        };
        let room = usize::try_from(cap.saturating_sub(total)).unwrap_or(usize::MAX);
        let take = n.min(room);
        total += take as u64;
        if take > 0 {
            if keep {
                captured.data.extend_from_slice(&buf[..take]);
            }
            if let (Some(tx), Some(stream)) = (chunks, kind) {
                let chunk = Chunk {
                    stream,
                    data: buf[..take].to_vec(),
                };
                if tx.send(chunk).await.is_err() {
                    // Nobody listens any more (client went away): stop the run.
                    killer.kill(KillReason::Cancelled);
                    break;
                }
            }
        }
        if n > room {
            captured.truncated = true;
            killer.kill(KillReason::OutputLimit);
            break;
        }
    }
    Ok(captured)
}

/// Writes stdin and closes it; a child that exits early just ends the feed (EPIPE).
async fn feed(fd: Option<OwnedFd>, data: Vec<u8>) {
    let Some(fd) = fd else { return };
    if data.is_empty() || sys::set_nonblocking(fd.as_raw_fd()).is_err() {
        return;
    }
    let Ok(afd) = sys::register(fd, Interest::WRITABLE) else {
        return;
    };
    let mut rest = &data[..];
    while !rest.is_empty() {
        let Ok(mut guard) = afd.writable().await else {
            return;
        };
        match guard.try_io(|inner| {
            sys::write(inner.get_ref().as_raw_fd(), rest).map_err(io::Error::from_raw_os_error)
        }) {
            Err(_would_block) => continue,
            Ok(Ok(n)) => rest = &rest[n as usize..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return,
        }
    }
}

/// Non-blocking read of the child's error report. By now the child is reaped, so its report
/// (if any) is in the pipe; EAGAIN only means another fresh child still holds a copy of the
/// write end until its own execve.
fn read_report(report: &OwnedFd) -> Option<(u32, i32)> {
    let mut buf = [0u8; 8];
    match sys::read(report.as_raw_fd(), &mut buf) {
        Ok(8) => super::child::decode_report(&buf),
        _ => None,
    }
}
