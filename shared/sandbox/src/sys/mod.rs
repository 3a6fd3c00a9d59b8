//! Thin wrappers over raw Linux system calls, and [`fork`], the fork-and-pipe primitives behind
//! [`crate::isolate`]. With `process::child` (the `clone` call and its cross-thread plan) this
//! is all the `unsafe` of the crate, and of the workspace.
//!
//! Everything in this module itself is async-signal-safe: no allocation, no locks, no glibc
//! wrappers that keep process-wide state (glibc's `setresuid` & co. broadcast to all threads
//! through the setxid mechanism and deadlock in a raw-`clone` child of a multithreaded parent).
//! The child side of the process launcher may call only functions from this module between
//! `clone` and `execve`.
#![allow(unsafe_code)]

pub(crate) mod fork;

use std::ffi::CStr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long, c_ulong, c_void};

/// Result of a raw system call: the return value, or the errno.
pub(crate) type SysResult = Result<c_long, c_int>;

#[inline(always)]
fn check(ret: c_long) -> SysResult {
    if ret < 0 {
        // SAFETY: `__errno_location` returns the calling thread's errno slot; in the clone child
        // this is the child's private copy of the parent thread's TLS, so reading it is sound.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(ret)
    }
}

macro_rules! raw {
    ($nr:expr $(, $arg:expr)*) => {
        // SAFETY: callers pass pointers to live, NUL-terminated or correctly sized buffers; the
        // kernel validates everything else and reports errors through the return value.
        check(unsafe { libc::syscall($nr $(, $arg as c_long)*) })
    };
}

pub(crate) fn mount(
    src: Option<&CStr>,
    dst: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    raw!(
        libc::SYS_mount,
        p(src),
        dst.as_ptr(),
        p(fstype),
        flags,
        p(data)
    )
}

pub(crate) fn umount_detach(path: &CStr) -> SysResult {
    raw!(libc::SYS_umount2, path.as_ptr(), libc::MNT_DETACH)
}

pub(crate) fn mkdir(path: &CStr, mode: u32) -> SysResult {
    raw!(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), mode)
}

pub(crate) fn symlink(target: &CStr, link: &CStr) -> SysResult {
    raw!(
        libc::SYS_symlinkat,
        target.as_ptr(),
        libc::AT_FDCWD,
        link.as_ptr()
    )
}

pub(crate) fn create_file(path: &CStr, mode: u32) -> SysResult {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    raw!(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode)
}

/// Writes the whole buffer (retrying short writes and EINTR).
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult {
    while !buf.is_empty() {
        match raw!(libc::SYS_write, fd, buf.as_ptr(), buf.len()) {
            Ok(n) => buf = &buf[n as usize..],
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

pub(crate) fn close(fd: RawFd) -> SysResult {
    raw!(libc::SYS_close, fd)
}

pub(crate) fn chdir(path: &CStr) -> SysResult {
    raw!(libc::SYS_chdir, path.as_ptr())
}

pub(crate) fn pivot_root(new_root: &CStr, put_old: &CStr) -> SysResult {
    raw!(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr())
}

pub(crate) fn sethostname(name: &[u8]) -> SysResult {
    raw!(libc::SYS_sethostname, name.as_ptr(), name.len())
}

pub(crate) fn setdomainname(name: &[u8]) -> SysResult {
    raw!(libc::SYS_setdomainname, name.as_ptr(), name.len())
}

pub(crate) fn unshare(flags: c_int) -> SysResult {
    raw!(libc::SYS_unshare, flags)
}

pub(crate) fn dup3(old: RawFd, new: RawFd) -> SysResult {
    raw!(libc::SYS_dup3, old, new, 0)
}

/// Duplicates `fd` to the lowest free descriptor >= `min`, close-on-exec.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> SysResult {
    raw!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min)
}

pub(crate) fn set_cloexec(fd: RawFd) -> SysResult {
    raw!(libc::SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC)
}

/// Marks every descriptor >= `first` close-on-exec.
pub(crate) fn cloexec_from(first: RawFd) -> SysResult {
    raw!(
        libc::SYS_close_range,
        first,
        c_uint_max(),
        libc::CLOSE_RANGE_CLOEXEC
    )
}

const fn c_uint_max() -> libc::c_uint {
    libc::c_uint::MAX
}

pub(crate) fn setrlimit(resource: c_int, limit: &libc::rlimit64) -> SysResult {
    raw!(
        libc::SYS_prlimit64,
        0,
        resource,
        limit as *const libc::rlimit64,
        std::ptr::null::<libc::rlimit64>()
    )
}

pub(crate) fn setsid() -> SysResult {
    raw!(libc::SYS_setsid)
}

pub(crate) fn prctl(option: c_int, arg2: c_ulong) -> SysResult {
    raw!(libc::SYS_prctl, option, arg2, 0, 0, 0)
}

pub(crate) fn install_filter(prog: &libc::sock_fprog) -> SysResult {
    raw!(
        libc::SYS_prctl,
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        prog as *const libc::sock_fprog,
        0,
        0
    )
}

pub(crate) fn setgroups_empty() -> SysResult {
    raw!(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>())
}

pub(crate) fn setresgid(gid: u32) -> SysResult {
    raw!(libc::SYS_setresgid, gid, gid, gid)
}

pub(crate) fn setresuid(uid: u32) -> SysResult {
    raw!(libc::SYS_setresuid, uid, uid, uid)
}

pub(crate) fn execve(
    path: &CStr,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> SysResult {
    raw!(libc::SYS_execve, path.as_ptr(), argv, envp)
}

pub(crate) fn exit_group(code: c_int) -> ! {
    // SAFETY: exit_group never returns; nothing is left to clean up in the child.
    unsafe {
        libc::syscall(libc::SYS_exit_group, code as c_long);
    }
    // The kernel never returns from exit_group; abort keeps the type system honest.
    std::process::abort()
}

/// `clone` with namespace flags and `CLONE_PIDFD`; behaves like `fork` (no `CLONE_VM`): the child
/// continues on a copy-on-write copy of the caller's stack. Returns `Ok(0)` in the child and
/// `Ok(pid)` with `pidfd` filled in the parent.
///
/// # Safety
/// The child may only call async-signal-safe raw system calls (this module) and must end with
/// `execve` or `exit_group`: it is a copy of one thread of a multithreaded process, so every
/// lock another thread held at clone time stays locked forever in the child.
pub(crate) unsafe fn clone_fork(flags: c_ulong, pidfd: &mut c_int) -> SysResult {
    let pidfd_ptr = pidfd as *mut c_int;
    // Argument order differs between architectures only after the third argument, and both of
    // those are zero here; CLONE_PIDFD writes the pidfd through `parent_tid` on every arch.
    // SAFETY: no CLONE_VM, so the child gets its own copy of memory and a null stack pointer
    // means "keep using the current stack" (fork semantics).
    check(unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as c_long,
            0 as c_long,
            pidfd_ptr as c_long,
            0 as c_long,
            0 as c_long,
        )
    })
}

// ---- parent-side helpers (ordinary threads; still raw for want of std wrappers) ----

pub(crate) fn pidfd_kill(pidfd: RawFd) -> SysResult {
    raw!(
        libc::SYS_pidfd_send_signal,
        pidfd,
        libc::SIGKILL,
        std::ptr::null::<c_void>(),
        0
    )
}

/// Exit information of a reaped child.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reaped {
    pub(crate) code: c_int,
    pub(crate) status: c_int,
    pub(crate) rusage: libc::rusage,
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable), without blocking.
pub(crate) fn pidfd_exited(pidfd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // One pollfd, no timeout: the kernel only reads and writes that struct.
    raw!(libc::SYS_poll, &mut poll as *mut libc::pollfd, 1, 0).is_ok_and(|n| n > 0)
}

/// Reaps the child behind `pidfd` (blocking unless it has already exited).
pub(crate) fn waitid_pidfd(pidfd: RawFd) -> Result<Reaped, c_int> {
    // SAFETY: both structs are plain old data; zeroed is a valid initial value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        match raw!(
            libc::SYS_waitid,
            libc::P_PIDFD,
            pidfd,
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED,
            &mut rusage as *mut libc::rusage
        ) {
            Ok(_) => break,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: waitid filled a SIGCHLD siginfo, for which si_status is the valid union member.
    let status = unsafe { info.si_status() };
    Ok(Reaped {
        code: info.si_code,
        status,
        rusage,
    })
}

/// A close-on-exec pipe as `(read end, write end)`.
pub(crate) fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    raw!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC)
        .map_err(std::io::Error::from_raw_os_error)?;
    // SAFETY: pipe2 succeeded and returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(crate) fn set_nonblocking(fd: RawFd) -> SysResult {
    let flags = raw!(libc::SYS_fcntl, fd, libc::F_GETFL)?;
    raw!(
        libc::SYS_fcntl,
        fd,
        libc::F_SETFL,
        flags | libc::O_NONBLOCK as c_long
    )
}

pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> SysResult {
    raw!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len())
}

pub(crate) fn write(fd: RawFd, buf: &[u8]) -> SysResult {
    raw!(libc::SYS_write, fd, buf.as_ptr(), buf.len())
}

pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a raw x32-ABI system call reaches the kernel (then the seccomp filter must cover it).
pub(crate) fn x32_abi_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        const X32_SYSCALL_BIT: c_long = 0x4000_0000;
        // SAFETY: getpid takes no arguments; an unsupported ABI just yields ENOSYS.
        let ret = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
        ret >= 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Best-effort SIGKILL by PID: to our own unreaped fork children, or to processes found in our
/// own slot cgroups.
pub(crate) fn kill(pid: libc::pid_t) {
    let _ = raw!(libc::SYS_kill, pid, libc::SIGKILL);
}

/// Registers an owned descriptor with the tokio reactor.
pub(crate) fn register(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd always reports the descriptor it owns, and that descriptor stays open
    // (and refers to the same file description) until the AsyncFd drops the OwnedFd.
    Ok(unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }?)
}

/// Restores default dispositions for every catchable signal and unblocks all signals. Ignored
/// dispositions survive execve (Rust ignores SIGPIPE in the parent), and `yes | head` must see
/// SIGPIPE like anywhere else.
pub(crate) fn reset_signals() -> SysResult {
    /// The kernel's `struct sigaction` on the generic syscall ABI: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // EINVAL for numbers the kernel reserves (glibc's internal signals) is fine to ignore.
        let _ = raw!(
            libc::SYS_rt_sigaction,
            sig,
            &default as *const KernelSigaction,
            std::ptr::null::<KernelSigaction>(),
            8
        );
    }
    let empty: u64 = 0;
    raw!(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        &empty as *const u64,
        std::ptr::null::<u64>(),
        8
    )
}

pub(crate) fn setns(fd: RawFd, nstype: c_int) -> SysResult {
    raw!(libc::SYS_setns, fd, nstype)
}

pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Opens an existing file for writing (procfs control files).
pub(crate) fn open_write(path: &CStr) -> SysResult {
    raw!(
        libc::SYS_openat,
        libc::AT_FDCWD,
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC
    )
}

/// Writes `data` to the existing file `path` in one go.
pub(crate) fn write_file(path: &CStr, data: &[u8]) -> SysResult {
    let fd = open_write(path)? as RawFd;
    let written = write_all(fd, data);
    let _ = close(fd);
    written
}

/// Clears the effective, permitted and inheritable capability sets of the calling thread.
pub(crate) fn capset_empty() -> SysResult {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    raw!(libc::SYS_capset, &header as *const Header, data.as_ptr())
}

/// Real uid and gid of this process.
pub(crate) fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Per-mount flags of the mount holding `path`, as `MS_*` bits. A bind mount's read-only
/// remount must repeat the flags the kernel locks in a user namespace (atime mode, nosuid, …).
pub(crate) fn mount_flags_of(path: &CStr) -> Result<c_ulong, c_int> {
    // SAFETY: statvfs is plain old data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        // SAFETY: reading this thread's errno right after the failed call.
        return Err(unsafe { *libc::__errno_location() });
    }
    let pairs = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_bit, _)| st.f_flag & *st_bit != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}
