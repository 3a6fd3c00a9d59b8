//! The warm pool: per language, a few pre-started single-use sandboxes whose interpreter is
//! already running a tiny loader blocked on descriptor 3 (see `umcp_sandbox::process::pooled`).
//! A request takes one, hands over its code, stdin and arguments, and the sandbox is destroyed
//! after that one run; a background task starts a replacement at once. An empty pool never
//! delays a request: it runs cold.
//!
//! * Python: `python3 -u -B -s -c <py_loader.py>`; the loader lowers the rlimits and runs the
//!   code it is handed as `/box/main.py`. Started with the configured maxima.
//! * Node: `node --max-old-space-size=N -r /box/.umcp-loader.js /box/main.js`, `/box` a host
//!   directory the request's `main.js` is written to at hand-over; the preloaded loader only
//!   sets the arguments, then Node runs the real file as its main module. Node cannot lower its
//!   rlimits (nor its heap limit), so it is started with the default limits and takes only
//!   requests whose rlimits and memory are those.
//! * Bash: `bash -c <bash_loader.sh> <bash>`; the loader lowers the rlimits (`ulimit`), reads
//!   the arguments and `exec`s `<bash> /box/main.sh args…` — a cold run's command line, the
//!   script written to the host directory behind `/box` at hand-over. It saves the sandbox's
//!   set-up, not Bash's own start (about a millisecond).
//!
//! Sizes: `warm_pool_size` per language, or `warm_pool_{python,node,bash}` (0 disables);
//! every pooled language uses `size + 1` slots of its own, on top of `max_concurrent`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use umcp_sandbox::process::{
    Handover, NamespaceSandbox, PrestartMode, Prestarted, RunLimits, RunSpec, SandboxFile,
};

use crate::model::Language;
use crate::runtime;

const PY_LOADER: &str = include_str!("scripts/py_loader.py");
const NODE_LOADER: &str = include_str!("scripts/node_loader.js");
const BASH_LOADER: &str = include_str!("scripts/bash_loader.sh");
/// Where the Node loader sits in `/box` until hand-over (it is removed before `main.js` runs).
const NODE_LOADER_FILE: &str = ".umcp-loader.js";

/// Pause after a failed pre-start before the next attempt (the host is short of something).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One language's pool as configured.
#[derive(Debug, Clone)]
pub struct ShelfPlan {
    pub language: Language,
    /// Absolute path of the interpreter.
    pub interpreter: String,
    pub size: usize,
    /// The largest limits a request may have (languages whose loader lowers rlimits).
    pub max_limits: RunLimits,
    /// The default limits (Node's start limits; every pooled language's `/tmp` size).
    pub default_limits: RunLimits,
}

#[derive(Debug)]
pub struct WarmPool {
    sandbox: NamespaceSandbox,
    shelves: Vec<Arc<Shelf>>,
}

/// The ready sandboxes of one language and what starts more.
#[derive(Debug)]
struct Shelf {
    language: Language,
    sandbox: NamespaceSandbox,
    spec: RunSpec,
    mode: PrestartMode,
    size: usize,
    ready: Mutex<VecDeque<Prestarted>>,
    /// Outside the shelf, so the refill task can wait on it without keeping the shelf alive.
    wake: Arc<Notify>,
    stats: Arc<PoolStats>,
}

/// Counters of one language's pool (for the metrics endpoint).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests that ran in a pre-started sandbox.
    pub hits: AtomicU64,
    /// Requests of a pooled language that ran cold (pool empty, or limits it cannot take).
    pub misses: AtomicU64,
    /// Sandboxes waiting now.
    pub ready: AtomicU64,
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Wakes the refill tasks, which then find their shelf gone and end; the ready
        // sandboxes are killed as the shelves drop.
        for shelf in &self.shelves {
            shelf.wake.notify_one();
        }
    }
}

/// The pre-started program and how it takes its hand-over, per language.
fn shelf_spec(plan: &ShelfPlan) -> (RunSpec, PrestartMode) {
    let max = RunLimits {
        tmp_bytes: plan.default_limits.tmp_bytes,
        ..plan.max_limits
    };
    match plan.language {
        Language::Python => {
            let args = ["-u", "-B", "-s", "-c", PY_LOADER]
                .map(String::from)
                .to_vec();
            let spec = runtime::spec(&plan.interpreter, args, Vec::new(), max);
            (spec, PrestartMode::LOADER)
        }
        Language::JavaScript => {
            let limits = plan.default_limits;
            // The cold command line with the preload between the heap flag and the script.
            let mut args = runtime::program_args(Language::JavaScript, &limits, &[]);
            args.splice(1..1, ["-r".to_owned(), format!("/box/{NODE_LOADER_FILE}")]);
            let loader = SandboxFile {
                path: NODE_LOADER_FILE.into(),
                contents: NODE_LOADER.as_bytes().to_vec(),
            };
            let spec = runtime::spec(&plan.interpreter, args, vec![loader], limits);
            let mode = PrestartMode {
                lowers_rlimits: false,
                box_at_handover: true,
            };
            (spec, mode)
        }
        Language::Bash => {
            let args = vec!["-c".into(), BASH_LOADER.into(), plan.interpreter.clone()];
            let spec = runtime::spec(&plan.interpreter, args, Vec::new(), max);
            let mode = PrestartMode {
                lowers_rlimits: true,
                box_at_handover: true,
            };
            (spec, mode)
        }
    }
}

impl WarmPool {
    /// Starts filling one shelf per plan with a size above 0.
    pub fn start(sandbox: &NamespaceSandbox, plans: &[ShelfPlan]) -> Self {
        let shelves = plans
            .iter()
            .filter(|p| p.size > 0)
            .map(|plan| {
                let (spec, mode) = shelf_spec(plan);
                let shelf = Arc::new(Shelf {
                    language: plan.language,
                    sandbox: sandbox.clone(),
                    spec,
                    mode,
                    size: plan.size,
                    ready: Mutex::new(VecDeque::with_capacity(plan.size)),
                    wake: Arc::new(Notify::new()),
                    stats: Arc::new(PoolStats::default()),
                });
                tokio::spawn(refill(Arc::downgrade(&shelf), Arc::clone(&shelf.wake)));
                shelf
            })
            .collect();
        Self {
            sandbox: sandbox.clone(),
            shelves,
        }
    }

    /// Runs `handover` in `taken` (from [`WarmPool::take`]).
    pub async fn run(
        &self,
        taken: Prestarted,
        handover: Handover,
        chunks: Option<tokio::sync::mpsc::Sender<umcp_sandbox::process::Chunk>>,
    ) -> Result<umcp_sandbox::process::RunOutput, umcp_sandbox::process::RunError> {
        self.sandbox.run_prestarted(taken, handover, chunks).await
    }

    fn shelf(&self, language: Language) -> Option<&Arc<Shelf>> {
        self.shelves.iter().find(|s| s.language == language)
    }

    /// A ready sandbox for `language` that can take `limits`, if one is waiting. Counts a hit
    /// or a miss for a pooled language.
    pub fn take(&self, language: Language, limits: &RunLimits) -> Option<Prestarted> {
        let shelf = self.shelf(language)?;
        let taken = shelf.take(limits);
        let counter = if taken.is_some() {
            &shelf.stats.hits
        } else {
            &shelf.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        taken
    }

    /// Counts a request of `language` that could not be pooled at all (e.g. NUL in an argument).
    pub fn missed(&self, language: Language) {
        if let Some(shelf) = self.shelf(language) {
            shelf.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sandboxes waiting now (for tests and logs).
    pub fn ready(&self, language: Language) -> usize {
        self.shelf(language).map_or(0, |s| s.ready.lock().len())
    }

    /// Every pooled language's counters.
    pub fn stats(&self) -> Vec<(Language, Arc<PoolStats>)> {
        self.shelves
            .iter()
            .map(|s| (s.language, Arc::clone(&s.stats)))
            .collect()
    }

    /// Sandbox slots pools of these sizes need on top of the running ones: one more per
    /// language lets a replacement start while the taken sandbox still runs.
    pub fn slots_needed(sizes: &[usize]) -> usize {
        sizes.iter().filter(|&&s| s > 0).map(|s| s + 1).sum()
    }
}

impl Shelf {
    fn take(&self, limits: &RunLimits) -> Option<Prestarted> {
        if !self.takes(limits) {
            return None;
        }
        let taken = {
            let mut ready = self.ready.lock();
            let taken = loop {
                match ready.pop_front() {
                    // A dead one (killed from outside) is dropped and never used.
                    Some(p) if !p.is_alive() => continue,
                    Some(p) if !p.accepts(limits) => {
                        // Same start limits for the whole shelf: none will take them.
                        ready.push_front(p);
                        break None;
                    }
                    other => break other,
                }
            };
            self.stats
                .ready
                .store(ready.len() as u64, Ordering::Relaxed);
            taken
        };
        self.wake.notify_one();
        taken
    }

    /// Limits this language's pre-started sandboxes can run with, beyond what
    /// [`Prestarted::accepts`] checks.
    fn takes(&self, limits: &RunLimits) -> bool {
        match self.language {
            Language::Python => true,
            // The heap limit is a start flag.
            Language::JavaScript => limits.memory_bytes == self.spec.limits.memory_bytes,
            // ulimit counts file sizes in KiB; the loader refuses anything else.
            Language::Bash => limits.file_size_bytes.is_multiple_of(1024),
        }
    }
}

/// What a pooled run of `language` is handed; `None` when it must run cold (a NUL in the code
/// of a Python run or in an argument: a cold run reports that as the interpreter does).
pub fn handover(
    language: Language,
    code: &str,
    args: &[String],
    stdin: Vec<u8>,
    limits: RunLimits,
) -> Option<Handover> {
    if args.iter().any(|a| a.contains('\0')) {
        return None;
    }
    let mut program =
        Vec::with_capacity(code.len() + args.iter().map(|a| a.len() + 1).sum::<usize>());
    let files = match language {
        // Python: "code\0arg\0arg…"; /box stays empty.
        Language::Python => {
            if code.contains('\0') {
                return None;
            }
            program.extend_from_slice(code.as_bytes());
            for a in args {
                program.push(0);
                program.extend_from_slice(a.as_bytes());
            }
            Vec::new()
        }
        // Node and Bash: "arg\0arg\0…"; the code is the file a cold run has.
        Language::JavaScript | Language::Bash => {
            for a in args {
                program.extend_from_slice(a.as_bytes());
                program.push(0);
            }
            vec![SandboxFile {
                path: language.main_file().into(),
                contents: code.as_bytes().to_vec(),
            }]
        }
    };
    Some(Handover {
        program,
        stdin,
        limits,
        files,
    })
}

/// Keeps the shelf full until the pool is dropped.
async fn refill(shelf: Weak<Shelf>, wake: Arc<Notify>) {
    loop {
        let Some(s) = shelf.upgrade() else { return };
        if s.ready.lock().len() >= s.size {
            drop(s);
            wake.notified().await;
            continue;
        }
        match s.sandbox.prestart(s.spec.clone(), s.mode).await {
            Ok(p) => {
                let mut ready = s.ready.lock();
                ready.push_back(p);
                s.stats.ready.store(ready.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Usually every slot is busy (the host is saturated): requests run cold.
                tracing::debug!(language = s.language.name(), error = %e, "warm pool: pre-start failed; retrying");
                drop(s);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }
}
