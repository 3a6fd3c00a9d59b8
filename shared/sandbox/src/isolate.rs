//! `run`: a closure in a forked child bounded by a memory budget and a deadline.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sys::{self, fork, fork::Exit};

/// Largest serialized result a child may send; more is treated as a memory overrun.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Why an isolated call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The child ran out of its memory budget (allocation failure, or killed for it).
    #[error("query exceeded the memory budget of {budget_mib} MiB")]
    ResourceExhausted {
        /// The budget in MiB.
        budget_mib: u64,
    },
    /// The child ran past its deadline (wall clock or CPU time) and was killed.
    #[error("query ran past its deadline of {millis} ms and was stopped")]
    DeadlineExceeded {
        /// The deadline in milliseconds.
        millis: u64,
    },
    /// Isolation is shutting down; no new children are started.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The operating system refused (fork, pipe) or the child failed unexpectedly.
    #[error("isolated call failed: {0}")]
    Failed(String),
}

static CHILDREN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static STOPPING: AtomicBool = AtomicBool::new(false);

fn children<R>(f: impl FnOnce(&mut HashSet<i32>) -> R) -> R {
    let mut guard = CHILDREN.lock();
    f(guard.get_or_insert_with(HashSet::new))
}

/// Kills and reaps every running child and refuses new ones: called when the service stops, so
/// a runaway query cannot hold shutdown past its grace period.
pub fn stop_all() {
    STOPPING.store(true, Ordering::SeqCst);
    let pids: Vec<i32> = children(|c| c.iter().copied().collect());
    for pid in &pids {
        sys::kill(*pid);
    }
    tracing::info!(killed = pids.len(), "isolated children stopped");
}

/// Runs `work` in a forked child limited to `budget_bytes` more memory than the parent uses now
/// and to `deadline`, and returns its serialized result. Blocking: call from a blocking thread.
/// The caller takes whatever locks make its data consistent before calling, so the fork sees
/// no half-done write.
///
/// # Errors
/// See [`SandboxError`].
pub fn run<T, F>(budget_bytes: u64, deadline: Duration, work: F) -> Result<T, SandboxError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    run_with(budget_bytes, deadline, || (), work)
}

/// [`run`], calling `after_fork` in the parent as soon as the child exists (to release a lock
/// taken so the child's copy of memory is consistent).
///
/// # Errors
/// See [`SandboxError`].
pub fn run_with<T, F>(
    budget_bytes: u64,
    deadline: Duration,
    after_fork: impl FnOnce(),
    work: F,
) -> Result<T, SandboxError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    if STOPPING.load(Ordering::SeqCst) {
        return Err(SandboxError::ShuttingDown);
    }
    let budget_mib = budget_bytes / (1024 * 1024);
    let millis = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    let base = fork::data_size().unwrap_or(0);
    let cpu_secs = deadline.as_secs().saturating_add(1);
    let child = fork::fork_child(base.saturating_add(budget_bytes), cpu_secs, move || {
        serde_json::to_vec(&work()).ok()
    })
    .map_err(|e| SandboxError::Failed(format!("cannot start an isolated child: {e}")));
    after_fork();
    let child = child?;
    children(|c| c.insert(child.pid));
    let started = Instant::now();
    let output = fork::read_until(child.read_fd, started + deadline, MAX_OUTPUT_BYTES);
    if !matches!(output, fork::Read::Done(_)) {
        sys::kill(child.pid);
    }
    let exit = fork::reap(child.pid);
    children(|c| c.remove(&child.pid));
    tracing::debug!(
        pid = child.pid,
        ?exit,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "isolated child finished"
    );
    match (output, exit) {
        (fork::Read::Done(bytes), Exit::Code(0)) => serde_json::from_slice(&bytes)
            .map_err(|e| SandboxError::Failed(format!("undecodable child result: {e}"))),
        (fork::Read::TooLarge, _) => Err(SandboxError::ResourceExhausted { budget_mib }),
        (fork::Read::TimedOut, _) => Err(SandboxError::DeadlineExceeded { millis }),
        (_, Exit::Signal(libc::SIGXCPU)) => Err(SandboxError::DeadlineExceeded { millis }),
        (_, Exit::Signal(libc::SIGKILL)) if STOPPING.load(Ordering::SeqCst) => {
            Err(SandboxError::ShuttingDown)
        }
        // With a memory rlimit, an allocation failure aborts (SIGABRT), faults on a failed
        // stack/guard mapping (SIGSEGV/SIGBUS), or the kernel's OOM killer sends SIGKILL.
        (_, Exit::Signal(libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS | libc::SIGKILL)) => {
            Err(SandboxError::ResourceExhausted { budget_mib })
        }
        (_, Exit::Code(fork::OOM_EXIT)) => Err(SandboxError::ResourceExhausted { budget_mib }),
        (_, other) => Err(SandboxError::Failed(format!(
            "isolated child ended with {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn returns_the_closure_result() {
        let out: Result<Vec<u32>, String> =
            run(64 * MIB, Duration::from_secs(5), || Ok(vec![1, 2, 3])).expect("run");
        assert_eq!(out, Ok(vec![1, 2, 3]));
    }

    #[test]
    fn memory_runaway_is_resource_exhausted() {
        let err = run(64 * MIB, Duration::from_secs(20), || {
            let mut v: Vec<Vec<u8>> = Vec::new();
            loop {
                v.push(vec![1u8; 1024 * 1024]);
                if v.len() > 100_000 {
                    return v.len();
                }
            }
        })
        .expect_err("must not fit");
        assert_eq!(err, SandboxError::ResourceExhausted { budget_mib: 64 });
    }

    #[test]
    fn cpu_runaway_is_deadline_exceeded_and_reaped() {
        let err = run(64 * MIB, Duration::from_millis(500), || {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            #[allow(unreachable_code)]
            x
        })
        .expect_err("must time out");
        assert_eq!(err, SandboxError::DeadlineExceeded { millis: 500 });
    }
}
