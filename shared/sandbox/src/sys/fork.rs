//! The fork-and-pipe primitives behind `isolate`: fork a child under rlimits, read its result
//! with a deadline, reap it. Unlike the rest of `sys` these run ordinary Rust in the child
//! (glibc's `fork` resets the allocator's locks), so they are not for the process launcher.
#![allow(unsafe_code)]

use std::os::fd::IntoRawFd;
use std::time::Instant;

/// Exit code of a child whose work panicked (an allocation failure under the rlimit may panic
/// through `catch_unwind` in `Vec::try_reserve`-style paths; treated as out of memory).
pub(crate) const OOM_EXIT: i32 = 86;
const FAILED_EXIT: i32 = 87;

#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    pub(crate) read_fd: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
    Unknown,
}

#[derive(Debug)]
pub(crate) enum Read {
    Done(Vec<u8>),
    TooLarge,
    TimedOut,
    Failed,
}

/// The process's data size (VmData) in bytes: the rlimit is set relative to it because the
/// child inherits every mapping of the parent.
pub(crate) fn data_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Forks; the child sets RLIMIT_DATA and RLIMIT_CPU, runs `work`, writes its bytes to the pipe
/// and exits without running the parent's destructors or atexit handlers.
pub(crate) fn fork_child(
    data_limit: u64,
    cpu_secs: u64,
    work: impl FnOnce() -> Option<Vec<u8>>,
) -> std::io::Result<Child> {
    // Close-on-exec keeps the pipe out of other forks' exec'd children.
    let (read_end, write_end) = super::pipe_cloexec()?;
    let (read_fd, write_fd) = (read_end.into_raw_fd(), write_end.into_raw_fd());
    // SAFETY: the child only runs `work` on memory it inherited, writes to its pipe and calls
    // `_exit`; glibc's fork resets the allocator's locks so allocation in the child is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        let _ = super::close(read_fd);
        let _ = super::close(write_fd);
        return Err(err);
    }
    if pid == 0 {
        // In the child: our copy of the read end is not needed.
        let _ = super::close(read_fd);
        set_limit(libc::RLIMIT_DATA, data_limit);
        set_limit(libc::RLIMIT_CPU, cpu_secs);
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            Ok(Some(bytes)) => {
                if super::write_all(write_fd, &bytes).is_ok() {
                    0
                } else {
                    FAILED_EXIT
                }
            }
            Ok(None) => FAILED_EXIT,
            Err(_) => OOM_EXIT,
        };
        // SAFETY: ends the child without unwinding into the parent's state.
        unsafe { libc::_exit(code) };
    }
    // Our copy of the write end; closing it lets the read see EOF when the child exits.
    let _ = super::close(write_fd);
    Ok(Child { pid, read_fd })
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let limit = libc::rlimit64 {
        rlim_cur: value,
        rlim_max: value,
    };
    let _ = super::setrlimit(resource as libc::c_int, &limit);
}

/// Reads the pipe until EOF, `deadline`, or more than `cap` bytes; closes it.
pub(crate) fn read_until(fd: i32, deadline: Instant, cap: usize) -> Read {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Read::TimedOut;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break Read::Failed;
        }
        if ready == 0 {
            continue;
        }
        match super::read(fd, &mut buf) {
            Ok(0) => break Read::Done(out),
            Err(_) => break Read::Failed,
            Ok(n) => {
                out.extend_from_slice(&buf[..n as usize]);
                if out.len() > cap {
                    break Read::TooLarge;
                }
            }
        }
    };
    // The read end is ours and used nowhere else.
    let _ = super::close(fd);
    result
}

/// Waits for the child to exit and says how it ended.
pub(crate) fn reap(pid: i32) -> Exit {
    let mut status = 0i32;
    loop {
        // SAFETY: `status` is valid for writing; `pid` is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Exit::Unknown;
        }
    }
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Unknown
    }
}
