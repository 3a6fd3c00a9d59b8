//! Per-slot cgroups: memory, process and CPU accounting for each run.
//!
//! Creating and removing a cgroup per run costs 5–13 ms and a long p95 tail on cgroup v1, so a
//! pool of slot cgroups is created once per sandbox instance and reused; each run resets the
//! peak counter and reads the OOM and CPU counters as deltas. Two backends: cgroup v1 (memory,
//! pids and cpuacct hierarchies) and cgroup v2 (one unified hierarchy).
//!
//! Layout: `<controller root>/umcp-sandbox/<pid>-<n>/slot-<i>`. The `<pid>` lets a later start
//! remove what a crashed process left behind.

mod v1;
mod v2;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Which cgroup version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// v2 when its memory and pids controllers are available, else v1.
    #[default]
    Auto,
    /// cgroup v1: the memory, pids and cpuacct hierarchies.
    V1,
    /// cgroup v2: the unified hierarchy with the memory, pids and cpu controllers.
    V2,
}

/// Limits a slot enforces for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupLimits {
    pub(crate) memory_bytes: u64,
    pub(crate) max_processes: u32,
}

/// What a slot measured for one run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CgroupStats {
    pub(crate) oom_killed: bool,
    pub(crate) peak_memory_bytes: Option<u64>,
    pub(crate) cpu: Option<Duration>,
}

/// One reusable slot cgroup (or one per controller on v1).
pub(crate) trait CgroupSlot: Send + Sync + std::fmt::Debug {
    /// Applies the limits and takes the counter baselines for a new run.
    fn begin(&mut self, limits: CgroupLimits) -> io::Result<()>;
    /// Moves one thread of this process (the slot's spawner) into the slot, so children it
    /// clones start inside. Returns false when the hierarchy cannot hold a single thread
    /// (cgroup v2 domains); the child then joins through `procs_fds`.
    fn adopt_thread(&mut self, tid: libc::pid_t) -> io::Result<bool>;
    /// `cgroup.procs` descriptors the child writes "0" to, joining the slot.
    fn procs_fds(&self) -> Vec<BorrowedFd<'_>>;
    /// CPU time used since `begin`.
    fn cpu_used(&self) -> Option<Duration>;
    /// Counters for the finished run.
    fn end(&mut self) -> CgroupStats;
    /// Kills whatever is still in the slot and waits until it is empty.
    fn kill_all(&self) -> io::Result<()>;
}

/// Host cgroup layout found in /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: PathBuf,
    },
    V2 {
        root: PathBuf,
    },
}

impl Layout {
    pub(crate) fn describe(&self) -> String {
        match self {
            Layout::V1 { memory, .. } => format!("cgroup v1 ({})", memory.display()),
            Layout::V2 { root } => format!("cgroup v2 ({})", root.display()),
        }
    }
}

/// Finds usable controllers; `Err` explains what is missing.
pub(crate) fn detect(mode: CgroupMode) -> Result<Layout, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mut v1 = (None, None, None);
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let opts = right.nth(1).unwrap_or_default();
        let path = PathBuf::from(mount_point);
        if fstype == "cgroup2" {
            v2 = Some(path);
        } else if fstype == "cgroup" {
            for opt in opts.split(',') {
                match opt {
                    "memory" => v1.0 = Some(path.clone()),
                    "pids" => v1.1 = Some(path.clone()),
                    "cpuacct" => v1.2 = Some(path.clone()),
                    _ => {}
                }
            }
        }
    }
    let v2_usable = v2.as_ref().is_some_and(|root| {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        has("memory") && has("pids") && has("cpu")
    });
    let v1_layout = match v1 {
        (Some(memory), Some(pids), Some(cpuacct)) => Some(Layout::V1 {
            memory,
            pids,
            cpuacct,
        }),
        _ => None,
    };
    match (mode, v2_usable, v1_layout) {
        (CgroupMode::V2 | CgroupMode::Auto, true, _) => Ok(Layout::V2 {
            root: v2.unwrap_or_default(),
        }),
        (CgroupMode::V1 | CgroupMode::Auto, _, Some(l)) => Ok(l),
        (CgroupMode::V2, false, _) => Err(
            "cgroup v2 is not mounted with the memory, pids and cpu controllers available".into(),
        ),
        _ => Err(
            "no cgroup v2 with memory+pids+cpu and no cgroup v1 memory, pids and cpuacct \
                  hierarchies are mounted"
                .into(),
        ),
    }
}

/// Name of the shared parent directory under every controller root.
const PARENT: &str = "umcp-sandbox";
static INSTANCE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The instance directories of one pool; removed (after killing leftovers) on drop.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) slots: Vec<Box<dyn CgroupSlot>>,
    instance_dirs: Vec<PathBuf>,
    slot_count: usize,
}

impl Pool {
    /// Creates `count` slots under a fresh instance directory.
    pub(crate) fn create(layout: &Layout, count: usize) -> io::Result<Self> {
        let instance = format!(
            "{}-{}",
            std::process::id(),
            INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let roots: Vec<PathBuf> = match layout {
            Layout::V1 {
                memory,
                pids,
                cpuacct,
            } => vec![memory.clone(), pids.clone(), cpuacct.clone()],
            Layout::V2 { root } => vec![root.clone()],
        };
        for root in &roots {
            remove_stale(&root.join(PARENT));
        }
        let mut pool = Pool {
            slots: Vec::with_capacity(count),
            instance_dirs: Vec::new(),
            slot_count: count,
        };
        for root in &roots {
            let parent = root.join(PARENT);
            let dir = parent.join(&instance);
            // Another instance may remove the shared parent between our two mkdirs: retry.
            let mut attempt = 0;
            loop {
                ensure_dir(&parent)?;
                if matches!(layout, Layout::V2 { .. }) {
                    v2::enable_controllers(root)?;
                    v2::enable_controllers(&parent)?;
                }
                match ensure_dir(&dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => attempt += 1,
                    other => break other?,
                }
            }
            pool.instance_dirs.push(dir.clone());
            if matches!(layout, Layout::V2 { .. }) {
                v2::enable_controllers(&dir)?;
            }
        }
        for i in 0..count {
            let name = format!("slot-{i}");
            let slot: Box<dyn CgroupSlot> = match layout {
                Layout::V1 { .. } => Box::new(v1::Slot::create(
                    &pool.instance_dirs[0].join(&name),
                    &pool.instance_dirs[1].join(&name),
                    &pool.instance_dirs[2].join(&name),
                )?),
                Layout::V2 { .. } => {
                    Box::new(v2::Slot::create(&pool.instance_dirs[0].join(&name))?)
                }
            };
            pool.slots.push(slot);
        }
        Ok(pool)
    }
}

impl Pool {
    /// The instance directories (one per controller hierarchy).
    pub(crate) fn instance_dirs(&self) -> Vec<PathBuf> {
        self.instance_dirs.clone()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Err(e) = slot.kill_all() {
                tracing::warn!(error = %e, "cgroup slot not emptied on shutdown");
            }
        }
        self.slots.clear();
        for dir in &self.instance_dirs {
            for i in 0..self.slot_count {
                let _ = std::fs::remove_dir(dir.join(format!("slot-{i}")));
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cgroup instance directory not removed");
            }
            // The shared parent goes too once no other instance uses it (EBUSY otherwise).
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!("mkdir {}: {e}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// Removes instance directories whose owning process is gone (a crashed earlier run).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(slots) = std::fs::read_dir(&dir) {
            for slot in slots.flatten().filter(|s| s.path().is_dir()) {
                kill_listed(&slot.path().join("cgroup.procs"));
                let _ = std::fs::remove_dir(slot.path());
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed stale sandbox cgroups"),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "stale sandbox cgroups not removed")
            }
        }
    }
}

/// SIGKILLs every process listed in a `cgroup.procs` file and waits (bounded) until it is empty.
/// This process itself is listed when its spawner thread sits in the slot, and is skipped.
pub(super) fn kill_listed(procs: &Path) -> bool {
    let own = std::process::id() as i32;
    for _ in 0..200 {
        let listed = std::fs::read_to_string(procs).unwrap_or_default();
        let pids: Vec<i32> = listed
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|pid| *pid != own)
            .collect();
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            crate::sys::kill(pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A cgroup control file kept open for the pool's lifetime.
#[derive(Debug)]
pub(super) struct Knob(File, PathBuf);

impl Knob {
    pub(super) fn open(path: PathBuf, write: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Ok(Self(file, path))
    }

    pub(super) fn set(&self, value: &str) -> io::Result<()> {
        self.0
            .write_at(value.as_bytes(), 0)
            .map(|_| ())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("write {:?} to {}: {e}", value, self.1.display()),
                )
            })
    }

    pub(super) fn get(&self) -> io::Result<String> {
        let mut buf = [0u8; 4096];
        let n = self.0.read_at(&mut buf, 0)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub(super) fn get_u64(&self) -> Option<u64> {
        self.get().ok()?.trim().parse().ok()
    }

    /// Value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
    pub(super) fn get_key(&self, key: &str) -> Option<u64> {
        let text = self.get().ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k == key {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
