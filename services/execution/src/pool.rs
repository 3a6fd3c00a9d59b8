//! The warm pool: per language, a few pre-started single-use sandboxes whose interpreter is
//! already running a tiny loader blocked on descriptor 3 (see `umcp_sandbox::process::pooled`).
//! A request takes one, hands over its code, stdin and arguments, and the sandbox is destroyed
//! after that one run; a background task starts a replacement at once. An empty pool never
//! delays a request: it runs cold.
//!
//! Python only so far (Node and Bash run cold). Size: `warm_pool_size` per language (default
//! 2, 0 disables); the pooled sandboxes use slots of their own, on top of `max_concurrent`.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use umcp_sandbox::process::{Handover, NamespaceSandbox, Prestarted, RunLimits, RunSpec};

use crate::model::Language;
use crate::runtime;

const PY_LOADER: &str = include_str!("scripts/py_loader.py");

/// Pause after a failed pre-start before the next attempt (the host is short of something).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct WarmPool {
    sandbox: NamespaceSandbox,
    python: Option<Arc<Shelf>>,
}

/// The ready sandboxes of one language and what starts more.
#[derive(Debug)]
struct Shelf {
    sandbox: NamespaceSandbox,
    spec: RunSpec,
    size: usize,
    ready: Mutex<VecDeque<Prestarted>>,
    /// Outside the shelf, so the refill task can wait on it without keeping the shelf alive.
    wake: Arc<Notify>,
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Wakes the refill task, which then finds the shelf gone and ends; the ready
        // sandboxes are killed as the shelf drops.
        if let Some(shelf) = &self.python {
            shelf.wake.notify_one();
        }
    }
}

impl WarmPool {
    /// Starts filling the pool: `size` Python sandboxes started with `limits` (their `/tmp`
    /// size is fixed; requests asking for another run cold). `None` python: no pool.
    pub fn start(
        sandbox: &NamespaceSandbox,
        python: Option<&str>,
        size: usize,
        limits: RunLimits,
    ) -> Self {
        let python = python.filter(|_| size > 0).map(|interpreter| {
            let spec = runtime::spec(
                interpreter,
                vec![
                    "-u".into(),
                    "-B".into(),
                    "-s".into(),
                    "-c".into(),
                    PY_LOADER.into(),
                ],
                Vec::new(),
                limits,
            );
            let shelf = Arc::new(Shelf {
                sandbox: sandbox.clone(),
                spec,
                size,
                ready: Mutex::new(VecDeque::with_capacity(size)),
                wake: Arc::new(Notify::new()),
            });
            tokio::spawn(refill(Arc::downgrade(&shelf), Arc::clone(&shelf.wake)));
            shelf
        });
        Self {
            sandbox: sandbox.clone(),
            python,
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

    /// A ready sandbox for `language` whose `/tmp` is `tmp_bytes`, if one is waiting.
    pub fn take(&self, language: Language, tmp_bytes: u64) -> Option<Prestarted> {
        let shelf = match language {
            Language::Python => self.python.as_ref()?,
            Language::JavaScript | Language::Bash => return None,
        };
        if shelf.spec.limits.tmp_bytes != tmp_bytes {
            return None;
        }
        let taken = {
            let mut ready = shelf.ready.lock();
            loop {
                match ready.pop_front() {
                    // A dead one (killed from outside) is dropped and never used.
                    Some(p) if !p.is_alive() => continue,
                    other => break other,
                }
            }
        };
        shelf.wake.notify_one();
        taken
    }

    /// Sandboxes waiting now (for tests and logs).
    pub fn ready(&self, language: Language) -> usize {
        match language {
            Language::Python => self.python.as_ref().map_or(0, |s| s.ready.lock().len()),
            Language::JavaScript | Language::Bash => 0,
        }
    }

    /// Sandbox slots the pool needs on top of the running ones.
    pub fn slots_needed(size: usize) -> usize {
        // One language pooled so far; one more slot per language lets a replacement start
        // while the taken sandbox still runs.
        if size == 0 { 0 } else { size + 1 }
    }
}

/// What a pooled Python run is handed: the code, then each argument, NUL-separated. `None`
/// when the code itself contains NUL (a cold run reports that as Python does).
pub fn python_handover(
    code: &str,
    args: &[String],
    stdin: Vec<u8>,
    limits: RunLimits,
) -> Option<Handover> {
    if code.contains('\0') {
        return None;
    }
    let mut program =
        Vec::with_capacity(code.len() + args.iter().map(|a| a.len() + 1).sum::<usize>());
    program.extend_from_slice(code.as_bytes());
    for a in args {
        program.push(0);
        program.extend_from_slice(a.as_bytes());
    }
    Some(Handover {
        program,
        stdin,
        limits,
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
        match s.sandbox.prestart(s.spec.clone()).await {
            Ok(p) => s.ready.lock().push_back(p),
            Err(e) => {
                // Usually every slot is busy (the host is saturated): requests run cold.
                tracing::debug!(error = %e, "warm pool: pre-start failed; retrying");
                drop(s);
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }
}
