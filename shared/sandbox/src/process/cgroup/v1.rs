//! cgroup v1 backend: one directory per slot in each of the memory, pids and cpuacct
//! hierarchies (this is what the development VMs have).

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CgroupLimits, CgroupSlot, CgroupStats, Knob, ensure_dir, kill_listed};

#[derive(Debug)]
pub(super) struct Slot {
    memory_dir: PathBuf,
    dirs: [PathBuf; 3],
    procs: [Knob; 3],
    /// The slot's spawner thread lives here and counts against pids.max.
    hosts_thread: bool,
    limit: Knob,
    memsw_limit: Option<Knob>,
    max_usage: Knob,
    oom_control: Knob,
    pids_max: Knob,
    cpu_usage: Knob,
    applied: Option<CgroupLimits>,
    oom_baseline: u64,
    cpu_baseline_ns: u64,
}

impl Slot {
    pub(super) fn create(memory: &Path, pids: &Path, cpuacct: &Path) -> io::Result<Self> {
        for dir in [memory, pids, cpuacct] {
            ensure_dir(dir)?;
        }
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        Ok(Self {
            memory_dir: memory.to_path_buf(),
            dirs: [
                memory.to_path_buf(),
                pids.to_path_buf(),
                cpuacct.to_path_buf(),
            ],
            hosts_thread: false,
            procs: [
                Knob::open(memory.join("cgroup.procs"), true)?,
                Knob::open(pids.join("cgroup.procs"), true)?,
                Knob::open(cpuacct.join("cgroup.procs"), true)?,
            ],
            limit: Knob::open(memory.join("memory.limit_in_bytes"), true)?,
            // Absent when the kernel was built without swap accounting.
            memsw_limit: memsw
                .exists()
                .then(|| Knob::open(memsw, true))
                .transpose()?,
            max_usage: Knob::open(memory.join("memory.max_usage_in_bytes"), true)?,
            oom_control: Knob::open(memory.join("memory.oom_control"), false)?,
            pids_max: Knob::open(pids.join("pids.max"), true)?,
            cpu_usage: Knob::open(cpuacct.join("cpuacct.usage"), false)?,
            applied: None,
            oom_baseline: 0,
            cpu_baseline_ns: 0,
        })
    }

    fn set_memory(&self, bytes: u64) -> io::Result<()> {
        // memsw must stay >= limit at every moment: open memsw up, set limit, then close memsw
        // down to the same value (no swap for sandboxes).
        if let Some(memsw) = &self.memsw_limit {
            memsw.set("-1")?;
        }
        self.limit.set(&bytes.to_string())?;
        if let Some(memsw) = &self.memsw_limit {
            memsw.set(&bytes.to_string())?;
        }
        Ok(())
    }
}

impl CgroupSlot for Slot {
    fn begin(&mut self, limits: CgroupLimits) -> io::Result<()> {
        if self.applied.map(|a| a.memory_bytes) != Some(limits.memory_bytes) {
            self.set_memory(limits.memory_bytes)?;
        }
        if self.applied.map(|a| a.max_processes) != Some(limits.max_processes) {
            let resident = u32::from(self.hosts_thread);
            self.pids_max
                .set(&(limits.max_processes + resident).to_string())?;
        }
        self.applied = Some(limits);
        self.max_usage.set("0")?;
        self.oom_baseline = self.oom_control.get_key("oom_kill").unwrap_or(0);
        self.cpu_baseline_ns = self.cpu_usage.get_u64().unwrap_or(0);
        Ok(())
    }

    fn adopt_thread(&mut self, tid: libc::pid_t) -> io::Result<bool> {
        for dir in &self.dirs {
            Knob::open(dir.join("tasks"), true)?.set(&tid.to_string())?;
        }
        self.hosts_thread = true;
        self.applied = None;
        Ok(true)
    }

    fn procs_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.procs.iter().map(Knob::fd).collect()
    }

    fn cpu_used(&self) -> Option<Duration> {
        let now = self.cpu_usage.get_u64()?;
        Some(Duration::from_nanos(
            now.saturating_sub(self.cpu_baseline_ns),
        ))
    }

    fn end(&mut self) -> CgroupStats {
        let ooms = self.oom_control.get_key("oom_kill").unwrap_or(0);
        CgroupStats {
            oom_killed: ooms > self.oom_baseline,
            peak_memory_bytes: self.max_usage.get_u64(),
            cpu: self.cpu_used(),
        }
    }

    fn kill_all(&self) -> io::Result<()> {
        if kill_listed(&self.memory_dir.join("cgroup.procs")) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} still has processes",
                self.memory_dir.display()
            )))
        }
    }
}
