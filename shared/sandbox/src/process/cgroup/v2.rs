//! cgroup v2 backend: one directory per slot in the unified hierarchy (production hosts).

use parking_lot::Mutex;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CgroupLimits, CgroupSlot, CgroupStats, Knob, ensure_dir, kill_listed};

/// Enables the controllers a slot needs for the children of `dir`.
pub(super) fn enable_controllers(dir: &Path) -> io::Result<()> {
    let knob = Knob::open(dir.join("cgroup.subtree_control"), true)?;
    let enabled = knob.get()?;
    for controller in ["memory", "pids", "cpu"] {
        if !enabled.split_whitespace().any(|c| c == controller) {
            knob.set(&format!("+{controller}"))?;
        }
    }
    Ok(())
}

#[derive(Debug)]
pub(super) struct Slot {
    dir: PathBuf,
    procs: Knob,
    memory_max: Knob,
    swap_max: Option<Knob>,
    pids_max: Knob,
    cpu_stat: Knob,
    events: Knob,
    kill: Option<Knob>,
    /// `memory.peak` opened per run: since Linux 6.12 a write resets the peak as seen through
    /// that descriptor; on older kernels the value is the slot's lifetime peak.
    peak: Mutex<Option<Knob>>,
    applied: Option<CgroupLimits>,
    oom_baseline: u64,
    cpu_baseline_us: u64,
}

impl Slot {
    pub(super) fn create(dir: &Path) -> io::Result<Self> {
        ensure_dir(dir)?;
        let optional = |name: &str| {
            let p = dir.join(name);
            p.exists().then(|| Knob::open(p, true)).transpose()
        };
        let slot = Self {
            dir: dir.to_path_buf(),
            procs: Knob::open(dir.join("cgroup.procs"), true)?,
            memory_max: Knob::open(dir.join("memory.max"), true)?,
            swap_max: optional("memory.swap.max")?,
            pids_max: Knob::open(dir.join("pids.max"), true)?,
            cpu_stat: Knob::open(dir.join("cpu.stat"), false)?,
            events: Knob::open(dir.join("memory.events"), false)?,
            kill: optional("cgroup.kill")?,
            peak: Mutex::new(None),
            applied: None,
            oom_baseline: 0,
            cpu_baseline_us: 0,
        };
        // Kill the whole slot on OOM, not just the largest process: a half-killed tree would
        // report a misleading result.
        Knob::open(dir.join("memory.oom.group"), true)?.set("1")?;
        if let Some(swap) = &slot.swap_max {
            swap.set("0")?;
        }
        Ok(slot)
    }
}

impl CgroupSlot for Slot {
    fn begin(&mut self, limits: CgroupLimits) -> io::Result<()> {
        if self.applied.map(|a| a.memory_bytes) != Some(limits.memory_bytes) {
            self.memory_max.set(&limits.memory_bytes.to_string())?;
        }
        if self.applied.map(|a| a.max_processes) != Some(limits.max_processes) {
            self.pids_max.set(&limits.max_processes.to_string())?;
        }
        self.applied = Some(limits);
        let peak_path = self.dir.join("memory.peak");
        let peak = peak_path
            .exists()
            .then(|| Knob::open(peak_path, true))
            .transpose()?;
        if let Some(p) = &peak {
            // EINVAL on kernels without resettable peaks: the lifetime peak is still reported.
            let _ = p.set("reset");
        }
        *self.peak.lock() = peak;
        self.oom_baseline = self.events.get_key("oom_kill").unwrap_or(0);
        self.cpu_baseline_us = self.cpu_stat.get_key("usage_usec").unwrap_or(0);
        Ok(())
    }

    fn adopt_thread(&mut self, _tid: libc::pid_t) -> io::Result<bool> {
        // A v2 domain cgroup holds whole processes only.
        Ok(false)
    }

    fn procs_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.procs.fd()]
    }

    fn cpu_used(&self) -> Option<Duration> {
        let now = self.cpu_stat.get_key("usage_usec")?;
        Some(Duration::from_micros(
            now.saturating_sub(self.cpu_baseline_us),
        ))
    }

    fn end(&mut self) -> CgroupStats {
        let ooms = self.events.get_key("oom_kill").unwrap_or(0);
        let peak = self.peak.lock().take();
        CgroupStats {
            oom_killed: ooms > self.oom_baseline,
            peak_memory_bytes: peak.and_then(|p| p.get_u64()),
            cpu: self.cpu_used(),
        }
    }

    fn kill_all(&self) -> io::Result<()> {
        if let Some(kill) = &self.kill {
            let _ = kill.set("1");
        }
        if kill_listed(&self.dir.join("cgroup.procs")) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} still has processes",
                self.dir.display()
            )))
        }
    }
}
