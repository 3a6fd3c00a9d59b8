//! Process creation: everything the child needs is prepared here in the parent, then a raw
//! `clone` creates the child in new mount, PID, network, IPC and UTS namespaces, and the child
//! walks the prepared plan with raw system calls only (see `crate::sys`) until `execve`.
//!
//! Failures in the child are reported as `(step, errno)` through a close-on-exec pipe: an empty
//! read after the child is gone means `execve` succeeded.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::c_char;

use std::sync::Arc;

use super::mounts::{self, MountOp, STEP_MOUNT_OP};
use super::seccomp::Policy;
use crate::sys;

/// Steps of the child, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    JoinCgroup = 1,
    CgroupNamespace = 2,
    MakePrivate = 3,
    RootTmpfs = 4,
    PivotRoot = 5,
    RootReadOnly = 6,
    Hostname = 7,
    Stdio = 8,
    Rlimits = 9,
    Session = 10,
    DropCapabilities = 11,
    Credentials = 12,
    NoNewPrivs = 13,
    Seccomp = 14,
    Exec = 15,
    Workdir = 16,
    ParentDeathSignal = 17,
    NetworkNamespace = 18,
    UserNamespace = 19,
}

pub(super) fn step_name(code: u32) -> String {
    let name = match code {
        1 => "join cgroup",
        2 => "cgroup namespace",
        3 => "make mounts private",
        4 => "mount root tmpfs",
        5 => "pivot_root",
        6 => "remount root read-only",
        7 => "set hostname",
        8 => "set up stdio",
        9 => "set rlimits",
        10 => "new session",
        11 => "drop capabilities",
        12 => "switch to sandbox user",
        13 => "no_new_privs",
        14 => "install seccomp filter",
        15 => "execve",
        16 => "enter working directory",
        17 => "set parent-death signal",
        18 => "enter network namespace",
        19 => "map the user namespace",
        c if c >= STEP_MOUNT_OP => return format!("file system operation #{}", c - STEP_MOUNT_OP),
        _ => "unknown",
    };
    name.to_owned()
}

/// Descriptors the child installs as 0, 1, 2 and optionally 3.
#[derive(Debug)]
pub(super) struct ChildStdio {
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) side: Option<OwnedFd>,
}

/// Everything the child needs, prepared before `clone`. Holds raw pointers into its own
/// `CString`s (argv/envp), so it is built, used and dropped within one synchronous call.
pub(super) struct ChildPlan {
    /// Own duplicates: the plan may outlive the slot that lent them (a cancelled run).
    pub(super) cgroup_procs: Vec<OwnedFd>,
    /// The slot's network namespace (own duplicate, like the cgroup descriptors); `None` in
    /// rootless mode, where the clone creates one.
    pub(super) net_ns: Option<OwnedFd>,
    /// Rootless mode: the child is created in a new user namespace and maps itself.
    pub(super) user_maps: Option<UserMaps>,
    pub(super) root: CString,
    pub(super) root_tmpfs_data: CString,
    pub(super) ops: Vec<MountOp>,
    pub(super) workdir: CString,
    pub(super) rlimits: Vec<(libc::c_int, libc::rlimit64)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) stdio: ChildStdio,
    pub(super) filters: Vec<libc::sock_fprog>,
    /// Keeps the BPF programs `filters` points into alive.
    _policy: Arc<Policy>,
    pub(super) program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
}

/// Builds a NULL-terminated pointer array over `strings` (which must outlive it).
fn pointer_array(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Contents of `uid_map`/`gid_map` for rootless mode: one line mapping the slot's uid (gid)
/// inside to the service's own uid (gid) outside; nothing maps to root.
#[derive(Debug)]
pub(super) struct UserMaps {
    pub(super) uid_map: Vec<u8>,
    pub(super) gid_map: Vec<u8>,
}

/// The parts of a plan that are not file system operations.
pub(super) struct PlanParts {
    pub(super) cgroup_procs: Vec<OwnedFd>,
    /// The slot's network namespace (own duplicate, like the cgroup descriptors); `None` in
    /// rootless mode, where the clone creates one.
    pub(super) net_ns: Option<OwnedFd>,
    /// Rootless mode: the child is created in a new user namespace and maps itself.
    pub(super) user_maps: Option<UserMaps>,
    pub(super) root: CString,
    pub(super) root_tmpfs_data: CString,
    pub(super) ops: Vec<MountOp>,
    pub(super) workdir: CString,
    pub(super) rlimits: Vec<(libc::c_int, libc::rlimit64)>,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) stdio: ChildStdio,
    pub(super) policy: Arc<Policy>,
    pub(super) program: CString,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
}

impl ChildPlan {
    pub(super) fn new(parts: PlanParts) -> Self {
        let argv_ptrs = pointer_array(&parts.argv);
        let envp_ptrs = pointer_array(&parts.envp);
        let filters = parts
            .policy
            .programs
            .iter()
            .map(|p| libc::sock_fprog {
                len: p.len() as u16,
                filter: p.as_ptr().cast_mut(),
            })
            .collect();
        Self {
            cgroup_procs: parts.cgroup_procs,
            net_ns: parts.net_ns,
            user_maps: parts.user_maps,
            root: parts.root,
            root_tmpfs_data: parts.root_tmpfs_data,
            ops: parts.ops,
            workdir: parts.workdir,
            rlimits: parts.rlimits,
            uid: parts.uid,
            gid: parts.gid,
            stdio: parts.stdio,
            filters,
            _policy: parts.policy,
            program: parts.program,
            _argv: parts.argv,
            argv_ptrs,
            _envp: parts.envp,
            envp_ptrs,
        }
    }
}

// SAFETY: the raw pointers in `argv_ptrs`/`envp_ptrs` (and in the sock_fprogs) point into heap
// buffers owned by the plan itself (or by the sandbox's policy, which outlives every run); they
// are never written after construction, so moving the plan to the spawner thread is sound.
unsafe impl Send for ChildPlan {}

/// A started child: its PID (in our namespace) and a pidfd.
#[derive(Debug)]
pub(super) struct Started {
    pub(super) pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
    /// Read end of the error-report pipe.
    pub(super) report: OwnedFd,
    /// A reference to the child's mount namespace (see `spawn`).
    pub(super) mount_ns: Option<OwnedFd>,
}

const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_PIDFD;

/// Creates the child (called on the slot's spawner thread, see `spawner`). The plan's
/// child-side descriptors are closed in the parent when the caller drops the plan.
pub(super) fn spawn(plan: &ChildPlan) -> std::io::Result<Started> {
    let (report, report_w) = sys::pipe_cloexec()?;
    let mut pidfd: libc::c_int = -1;
    // Rootless mode: a user namespace (whose capabilities allow the mounts below) and a network
    // namespace owned by it (the service cannot create one for the slot without privileges).
    let rootless = if plan.user_maps.is_some() {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNET
    } else {
        0
    };
    let flags = (CLONE_FLAGS | rootless | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: the child branch below calls only `child_main`, which uses raw system calls on
    // memory prepared before the clone and ends in execve or exit_group.
    let pid =
        unsafe { sys::clone_fork(flags, &mut pidfd) }.map_err(std::io::Error::from_raw_os_error)?;
    if pid == 0 {
        child_main(plan, report_w.as_raw_fd());
    }
    drop(report_w);
    // SAFETY: CLONE_PIDFD stored a fresh pidfd (close-on-exec) that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // Holding the mount namespace moves its teardown (unmounting the whole sandbox tree, which
    // waits for an RCU grace period) out of the child's exit path: the pidfd then signals exit
    // as soon as the processes are gone, and the supervisor drops this reference off the
    // request path. Best effort: a child that already failed simply has no namespace left.
    let mount_ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(OwnedFd::from);
    Ok(Started {
        pid: pid as libc::pid_t,
        pidfd,
        report,
        mount_ns,
    })
}

fn fail(report: RawFd, step: u32, errno: libc::c_int) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys::write_all(report, &msg);
    sys::exit_group(127)
}

/// Decodes a child error report (8 bytes) into `(step, errno)`.
pub(super) fn decode_report(buf: &[u8]) -> Option<(u32, i32)> {
    if buf.len() < 8 {
        return None;
    }
    let step = u32::from_ne_bytes(buf[..4].try_into().ok()?);
    let errno = i32::from_ne_bytes(buf[4..8].try_into().ok()?);
    Some((step, errno))
}

/// The child between `clone` and `execve`. Raw system calls only: no allocation, no locks, no
/// glibc credential wrappers (see the module docs of `crate::sys`).
fn child_main(plan: &ChildPlan, report: RawFd) -> ! {
    macro_rules! step {
        ($step:expr, $call:expr) => {
            if let Err(e) = $call {
                fail(report, $step as u32, e);
            }
        };
    }
    // Join the per-slot cgroups first (unless inherited from the spawner thread), so every byte
    // and process below is accounted there.
    for fd in &plan.cgroup_procs {
        step!(Step::JoinCgroup, sys::write_all(fd.as_raw_fd(), b"0"));
    }
    if let Some(maps) = &plan.user_maps {
        // Map ourselves before anything creates files; setgroups must be denied before an
        // unprivileged gid_map is accepted.
        step!(
            Step::UserNamespace,
            sys::write_file(c"/proc/self/setgroups", b"deny")
        );
        step!(
            Step::UserNamespace,
            sys::write_file(c"/proc/self/uid_map", &maps.uid_map)
        );
        step!(
            Step::UserNamespace,
            sys::write_file(c"/proc/self/gid_map", &maps.gid_map)
        );
    }
    if let Some(net_ns) = &plan.net_ns {
        step!(
            Step::NetworkNamespace,
            sys::setns(net_ns.as_raw_fd(), libc::CLONE_NEWNET)
        );
    }
    // A cgroup namespace rooted at the slot (now that the child is in it): /proc/self/cgroup
    // shows just "/".
    step!(Step::CgroupNamespace, sys::unshare(libc::CLONE_NEWCGROUP));
    let private = libc::MS_REC | libc::MS_PRIVATE;
    step!(
        Step::MakePrivate,
        sys::mount(None, c"/", None, private, None)
    );
    let root_flags = libc::MS_NOSUID | libc::MS_NODEV;
    step!(
        Step::RootTmpfs,
        sys::mount(
            Some(c"tmpfs"),
            &plan.root,
            Some(c"tmpfs"),
            root_flags,
            Some(&plan.root_tmpfs_data)
        )
    );
    for (i, op) in plan.ops.iter().enumerate() {
        step!(STEP_MOUNT_OP + i as u32, mounts::apply(op));
    }
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
    // the new root, with no directory of the host reachable.
    step!(Step::PivotRoot, sys::chdir(&plan.root));
    step!(Step::PivotRoot, sys::pivot_root(c".", c"."));
    step!(Step::PivotRoot, sys::umount_detach(c"."));
    step!(Step::PivotRoot, sys::chdir(c"/"));
    let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    step!(Step::RootReadOnly, sys::mount(None, c"/", None, ro, None));
    step!(Step::Workdir, sys::chdir(&plan.workdir));
    step!(Step::Hostname, sys::sethostname(b"sandbox"));
    step!(Step::Hostname, sys::setdomainname(b"sandbox"));

    // stdio: first move every source above the target range so no dup3 clobbers another source.
    let sources = [
        Some(plan.stdio.stdin.as_raw_fd()),
        Some(plan.stdio.stdout.as_raw_fd()),
        Some(plan.stdio.stderr.as_raw_fd()),
        plan.stdio.side.as_ref().map(AsRawFd::as_raw_fd),
    ];
    let mut high = [-1 as RawFd; 4];
    for (i, src) in sources.iter().enumerate() {
        if let Some(fd) = src {
            match sys::dup_above(*fd, 64) {
                Ok(h) => high[i] = h as RawFd,
                Err(e) => fail(report, Step::Stdio as u32, e),
            }
        }
    }
    for (target, fd) in high.iter().enumerate() {
        if *fd >= 0 {
            step!(Step::Stdio, sys::dup3(*fd, target as RawFd));
        }
    }
    let keep = if high[3] >= 0 { 4 } else { 3 };
    if sys::cloexec_from(keep).is_err() {
        // Kernels before 5.11 lack close_range: mark a generous range one by one.
        for fd in keep..4096 {
            let _ = sys::set_cloexec(fd);
        }
    }

    for (resource, limit) in &plan.rlimits {
        step!(Step::Rlimits, sys::setrlimit(*resource, limit));
    }
    step!(Step::Session, sys::setsid());
    step!(Step::Session, sys::reset_signals());
    // Empty the bounding set while still privileged: no later execve can regain a capability.
    let mut cap = 0;
    while sys::prctl(libc::PR_CAPBSET_DROP, cap).is_ok() {
        cap += 1;
    }
    if cap == 0 {
        fail(report, Step::DropCapabilities as u32, libc::EPERM);
    }
    if plan.user_maps.is_none() {
        step!(Step::Credentials, sys::setgroups_empty());
        step!(Step::Credentials, sys::setresgid(plan.gid));
        // Switching every uid to non-zero also clears the permitted and effective sets.
        step!(Step::Credentials, sys::setresuid(plan.uid));
    } else {
        // Rootless: the uid is already the slot's (through the map), but the creator of a user
        // namespace holds every capability in it until it drops them.
        step!(Step::Credentials, sys::capset_empty());
    }
    // After the uid change (which clears it): die with the slot's spawner thread, i.e. with the
    // service.
    step!(
        Step::ParentDeathSignal,
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
    );
    step!(Step::NoNewPrivs, sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1));
    for prog in &plan.filters {
        step!(Step::Seccomp, sys::install_filter(prog));
    }
    let err = sys::execve(
        &plan.program,
        plan.argv_ptrs.as_ptr(),
        plan.envp_ptrs.as_ptr(),
    );
    fail(report, Step::Exec as u32, err.err().unwrap_or(libc::EINVAL))
}
