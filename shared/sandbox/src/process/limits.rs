//! Resource limits of one run and their translation into rlimits.
//!
//! The cgroup (memory, pids, CPU accounting) is the primary enforcement; rlimits are a second
//! layer that also covers what cgroups cannot (file size, open files, core dumps). There is no
//! RLIMIT_AS: V8 reserves large virtual ranges and does not start under it.

use std::time::Duration;

/// Resolved limits of one run (the service applies defaults and maxima before this point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall-clock time; past it the whole process tree is killed.
    pub wall_time: Duration,
    /// CPU time of the whole tree.
    pub cpu_time: Duration,
    /// Memory of the whole tree (the slot's memory cgroup).
    pub memory_bytes: u64,
    /// Processes and threads of the tree (the slot's pids cgroup, and RLIMIT_NPROC).
    pub max_processes: u32,
    /// Per stream (stdout, stderr, side channel).
    pub output_bytes: u64,
    /// Largest file the program may write (RLIMIT_FSIZE).
    pub file_size_bytes: u64,
    /// Open descriptors per process (RLIMIT_NOFILE).
    pub open_files: u32,
    /// Size of each of `/tmp` and `/dev/shm` (tmpfs).
    pub tmp_bytes: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(5),
            memory_bytes: 256 << 20,
            max_processes: 32,
            output_bytes: 1 << 20,
            file_size_bytes: 16 << 20,
            open_files: 64,
            tmp_bytes: 64 << 20,
        }
    }
}

fn limit(value: u64) -> libc::rlimit64 {
    libc::rlimit64 {
        rlim_cur: value,
        rlim_max: value,
    }
}

/// The rlimits the child sets before dropping privileges. `per_slot_uid`: RLIMIT_NPROC counts
/// per real uid host-wide, so it is only meaningful when every slot has its own uid (root
/// mode); in rootless mode all slots share the service's uid.
pub(super) fn rlimits(l: &RunLimits, per_slot_uid: bool) -> Vec<(libc::c_int, libc::rlimit64)> {
    // Whole seconds, one above the requested CPU time: the precise limit is enforced from the
    // cgroup's CPU counter; this backstop SIGKILLs a process that escapes that accounting.
    let cpu_secs = l.cpu_time.as_secs() + 2;
    let mut list = vec![
        (libc::RLIMIT_CPU as libc::c_int, limit(cpu_secs)),
        (libc::RLIMIT_FSIZE as libc::c_int, limit(l.file_size_bytes)),
        (
            libc::RLIMIT_NOFILE as libc::c_int,
            limit(u64::from(l.open_files)),
        ),
        (libc::RLIMIT_CORE as libc::c_int, limit(0)),
        (libc::RLIMIT_MEMLOCK as libc::c_int, limit(0)),
        (libc::RLIMIT_MSGQUEUE as libc::c_int, limit(0)),
    ];
    if per_slot_uid {
        // Per UID host-wide; every slot has its own UID, so this is per run.
        list.push((
            libc::RLIMIT_NPROC as libc::c_int,
            limit(u64::from(l.max_processes)),
        ));
    }
    list
}
