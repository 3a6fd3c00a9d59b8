//! [`NamespaceSandbox`]: the in-process launcher behind the [`Sandbox`] trait.
//!
//! A fixed pool of slots bounds concurrency; each slot has its own UID/GID (`uid_base + i`, so
//! RLIMIT_NPROC and file ownership never mix two runs) and its own cgroup(s). Every run is
//! supervised in its own task, so a caller that goes away (a cancelled RPC) only signals the
//! run to stop; the task still kills, reaps and returns the slot.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::cgroup::{self, CgroupMode, CgroupSlot, Pool};
use super::run::run_in_slot;
use super::spawner::Spawner;
use super::{Chunk, RunError, RunOutput, RunSpec, Sandbox, SandboxInfo, seccomp};
use crate::sys;

/// Construction options.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Number of slots = maximum concurrent runs.
    pub slots: usize,
    /// UID/GID of slot 0; slot `i` runs as `uid_base + i`.
    pub uid_base: u32,
    /// Which cgroup version to use for the slots.
    pub cgroup_mode: CgroupMode,
    /// Run without cgroups when none are usable (no memory or process-count limit!). Only for
    /// development; the caller must log it loudly.
    pub allow_without_cgroups: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            slots: 8,
            uid_base: 60000,
            cgroup_mode: CgroupMode::Auto,
            allow_without_cgroups: false,
        }
    }
}

/// One slot: its index (and so its uid), cgroup, network namespace and spawner thread.
#[derive(Debug)]
pub(super) struct SlotState {
    pub(super) index: usize,
    pub(super) cgroup: Option<Box<dyn CgroupSlot>>,
    /// The child inherits the slot's cgroups from the spawner thread (cgroup v1).
    pub(super) inherits_cgroup: bool,
    /// `None` in rootless mode (each run's clone creates one).
    pub(super) net_ns: Option<OwnedFd>,
    pub(super) spawner: Spawner,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) options: SandboxOptions,
    pub(super) policy: Arc<seccomp::Policy>,
    /// Empty directory the child mounts its root tmpfs on (inside its own mount namespace, so
    /// the host never sees anything there).
    pub(super) root_dir: tempfile::TempDir,
    free: Mutex<Vec<SlotState>>,
    permits: Arc<Semaphore>,
    cgroups: String,
    /// Not root: user namespace per run, no cgroups (development only).
    pub(super) rootless: bool,
    /// Owns the cgroup directories; dropped (and removed) with the sandbox.
    pool: Mutex<Option<Pool>>,
}

/// Linux-namespace sandbox (see the module docs of [`crate::process`]).
#[derive(Debug, Clone)]
pub struct NamespaceSandbox {
    inner: Arc<Inner>,
}

/// Returns a slot to the pool when dropped (also on panics and cancellation).
pub(super) struct Lease {
    pub(super) inner: Arc<Inner>,
    pub(super) slot: Option<SlotState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // A slot whose cgroup cannot be emptied is never handed out again.
            let clean = slot.cgroup.as_ref().is_none_or(|c| c.kill_all().is_ok());
            if clean {
                self.inner.free.lock().push(slot);
            } else {
                tracing::error!(
                    slot = slot.index,
                    "sandbox slot quarantined: cgroup not empty"
                );
            }
        }
    }
}

impl NamespaceSandbox {
    /// Checks the host and prepares the slot pool.
    ///
    /// # Errors
    /// A message naming what is missing: root, cgroups (unless `allow_without_cgroups`), the
    /// seccomp policy, network namespaces or a spawner thread.
    pub fn new(options: SandboxOptions) -> Result<Self, String> {
        let rootless = check_host(&options)?;
        let policy = seccomp::build().map_err(|e| e.to_string())?;
        if sys::x32_abi_enabled() {
            tracing::info!(
                "x32 syscall abi enabled on this kernel; seccomp answers it with enosys"
            );
        }
        let (mut pool, cgroups) = cgroup_pool(&options, rootless)?;
        remove_stale_roots();
        super::boxdir::remove_stale();
        let root_dir = tempfile::Builder::new()
            .prefix(&format!("{ROOT_PREFIX}{}.", std::process::id()))
            .tempdir()
            .map_err(|e| format!("cannot create the sandbox root mount point: {e}"))?;
        let free = start_slots(&options, rootless, pool.as_mut())?;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(options.slots)),
                options,
                policy: Arc::new(policy),
                root_dir,
                free: Mutex::new(free),
                cgroups,
                rootless,
                pool: Mutex::new(pool),
            }),
        })
    }

    /// A free slot now, or `None` when every slot is busy (pre-starting never waits).
    pub(super) fn try_lease(&self) -> Option<Lease> {
        let permit = Arc::clone(&self.inner.permits).try_acquire_owned().ok()?;
        let slot = take_slot(&mut self.inner.free.lock(), Pick::Highest)?;
        Some(Lease {
            inner: Arc::clone(&self.inner),
            slot: Some(slot),
            _permit: permit,
        })
    }

    pub(super) fn is_rootless(&self) -> bool {
        self.inner.rootless
    }

    async fn lease(&self) -> Result<Lease, RunError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| RunError::Cancelled)?;
        let slot = take_slot(&mut self.inner.free.lock(), Pick::Lowest);
        match slot {
            Some(slot) => Ok(Lease {
                inner: Arc::clone(&self.inner),
                slot: Some(slot),
                _permit: permit,
            }),
            None => Err(RunError::Resource(std::io::Error::other(
                "every sandbox slot is quarantined",
            ))),
        }
    }
}

/// Which free slot to take: runs take the lowest index and pre-started sandboxes the highest,
/// so with sequential runs each keeps to its own end of the uid range (logs and tests can tell
/// a waiting pooled sandbox from a leftover of a run).
#[derive(Clone, Copy)]
enum Pick {
    Lowest,
    Highest,
}

fn take_slot(free: &mut Vec<SlotState>, pick: Pick) -> Option<SlotState> {
    let indices = free.iter().enumerate().map(|(at, s)| (s.index, at));
    let (_, at) = match pick {
        Pick::Lowest => indices.min()?,
        Pick::Highest => indices.max()?,
    };
    Some(free.swap_remove(at))
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Slots hold descriptors into the cgroup directories: close them before removal.
        let slots: Vec<SlotState> = self.free.lock().drain(..).collect();
        if let Some(pool) = self.pool.lock().as_mut() {
            pool.slots
                .extend(slots.into_iter().filter_map(|s| s.cgroup));
        }
    }
}

#[async_trait::async_trait]
impl Sandbox for NamespaceSandbox {
    async fn run(
        &self,
        spec: RunSpec,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<RunOutput, RunError> {
        let lease = self.lease().await?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // The run's spans stay children of the caller's, though the run has its own task.
        let task = tokio::spawn(
            run_in_slot(lease, spec, chunks, stop_rx).instrument(tracing::Span::current()),
        );
        let result = task.await;
        drop(stop_tx);
        match result {
            Ok(r) => r,
            Err(e) => Err(RunError::Resource(std::io::Error::other(format!(
                "supervisor task failed: {e}"
            )))),
        }
    }

    fn info(&self) -> SandboxInfo {
        SandboxInfo {
            backend: if self.inner.rootless {
                "linux-namespaces (rootless)"
            } else {
                "linux-namespaces"
            },
            cgroups: self.inner.cgroups.clone(),
            slots: self.inner.options.slots,
            uid_base: self.inner.options.uid_base,
            owned_paths: {
                let pool = self.inner.pool.lock();
                let mut paths = pool.as_ref().map(Pool::instance_dirs).unwrap_or_default();
                paths.push(self.inner.root_dir.path().to_path_buf());
                paths
            },
        }
    }
}

/// Whether the sandbox must run rootless. Without root it can only run in a user namespace
/// per run and without cgroups, so without memory or process limits: a development mode that
/// the options must ask for.
fn check_host(options: &SandboxOptions) -> Result<bool, String> {
    let rootless = sys::effective_uid() != 0;
    if rootless && !options.allow_without_cgroups {
        return Err(
            "the namespace sandbox needs root (it creates per-slot cgroups and switches \
                    every run to a per-slot uid); run the execution service as root on a \
                    dedicated host or VM"
                .into(),
        );
    }
    if rootless {
        tracing::warn!(
            "insecure: not root; sandboxes run rootless in user namespaces without cgroup limits"
        );
    }
    if options.slots == 0 {
        return Err("the sandbox needs at least one slot".into());
    }
    Ok(rootless)
}

/// The slot cgroups and their description for `info`; none (and `"none"`) only when the
/// options allow running without them.
fn cgroup_pool(options: &SandboxOptions, rootless: bool) -> Result<(Option<Pool>, String), String> {
    let detected = if rootless {
        Err("cgroups need root".to_owned())
    } else {
        cgroup::detect(options.cgroup_mode)
    };
    match detected {
        Ok(layout) => {
            let pool = Pool::create(&layout, options.slots).map_err(|e| {
                format!("cannot create sandbox cgroups ({}): {e}", layout.describe())
            })?;
            Ok((Some(pool), layout.describe()))
        }
        Err(why) if options.allow_without_cgroups => {
            tracing::warn!(reason = %why, "insecure: sandbox runs without cgroups; memory and process limits are not enforced");
            Ok((None, "none".to_owned()))
        }
        Err(why) => Err(format!("cannot enforce memory and process limits: {why}")),
    }
}

/// One slot per cgroup slot of `pool` (or cgroup-less ones), each with its network namespace
/// (none in rootless mode) and its spawner thread, moved into the slot's cgroup where the
/// hierarchy allows, so children start inside.
fn start_slots(
    options: &SandboxOptions,
    rootless: bool,
    pool: Option<&mut Pool>,
) -> Result<Vec<SlotState>, String> {
    let mut free = Vec::with_capacity(options.slots);
    let mut cgroup_slots: Vec<Option<Box<dyn CgroupSlot>>> = match pool {
        Some(p) => p.slots.drain(..).map(Some).collect(),
        None => (0..options.slots).map(|_| None).collect(),
    };
    let mut namespaces: Vec<Option<OwnedFd>> = if rootless {
        (0..options.slots).map(|_| None).collect()
    } else {
        super::netns::create(options.slots)
            .map_err(|e| format!("cannot create network namespaces for the sandbox slots: {e}"))?
            .into_iter()
            .map(Some)
            .collect()
    };
    for (index, mut cgroup) in cgroup_slots.drain(..).enumerate().rev() {
        let net_ns = namespaces.pop().ok_or("network namespace missing")?;
        let spawner =
            Spawner::start(index).map_err(|e| format!("cannot start a spawner thread: {e}"))?;
        let inherits_cgroup = match cgroup.as_mut() {
            Some(c) => c
                .adopt_thread(spawner.tid)
                .map_err(|e| format!("cannot move a spawner thread into its slot cgroup: {e}"))?,
            None => false,
        };
        free.push(SlotState {
            index,
            cgroup,
            inherits_cgroup,
            net_ns,
            spawner,
        });
    }
    Ok(free)
}

/// Name prefix of root mount points in the temp directory: `<prefix><pid>.<random>`.
const ROOT_PREFIX: &str = "umcp-sandbox-root.";

/// Removes the (empty) root mount points of processes that are gone (a crashed service).
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(ROOT_PREFIX)
            .and_then(|r| r.split('.').next())
        else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            // remove_dir only succeeds on an empty directory: nothing else is ever deleted.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}
