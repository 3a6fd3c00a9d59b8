//! The execution service on `/metrics` (through `umcp_telemetry::metrics::register_stats`):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `umcp_execution_runs_total` | counter | `status`: ok, runtime_error, timeout, cpu_limit, memory_limit, output_limit, sandbox_error |
//! | `umcp_execution_queue_depth` | gauge | — requests waiting for a sandbox now |
//! | `umcp_execution_admission_waits_total` | counter | — requests that had to queue |
//! | `umcp_execution_admission_wait_seconds_total` | counter | — their waits, summed |
//! | `umcp_execution_warm_pool_ready` | gauge | `language` |
//! | `umcp_execution_warm_pool_hits_total` | counter | `language` — runs in a pre-started sandbox |
//! | `umcp_execution_warm_pool_misses_total` | counter | `language` — runs of a pooled language that went cold |
//!
//! Runs count every sandbox run of the service (Execute, ExecuteStream, Lint, RunTests,
//! GenerateCode). Sources hold weak references: a dropped service stops reporting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use umcp_sandbox::process::{RunError, RunOutput, Termination};
use umcp_telemetry::metrics::{Kind, Sample, register_stats};

use crate::admission::Admission;
use crate::model::Language;
use crate::pool::PoolStats;

const STATUSES: [&str; 7] = [
    "ok",
    "runtime_error",
    "timeout",
    "cpu_limit",
    "memory_limit",
    "output_limit",
    "sandbox_error",
];

/// Sandbox runs by how they ended.
#[derive(Debug, Default)]
pub struct RunCounters([AtomicU64; 7]);

impl RunCounters {
    /// Counts one outcome (a cancelled or invalid run is no sandbox run and is not counted).
    pub fn count(&self, outcome: &Result<RunOutput, RunError>) {
        let index = match outcome {
            Ok(o) => match o.termination {
                Termination::Ok => 0,
                Termination::RuntimeError => 1,
                Termination::Timeout => 2,
                Termination::CpuLimit => 3,
                Termination::MemoryLimit => 4,
                Termination::OutputLimit => 5,
            },
            Err(RunError::Setup { .. } | RunError::Resource(_)) => 6,
            Err(RunError::Invalid(_) | RunError::Cancelled) => return,
        };
        self.0[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs that ended with `status` (one of the label values above).
    pub fn get(&self, status: &str) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Exposes the run counters and the admission queue.
pub fn register_service(runs: &Arc<RunCounters>, admission: &Arc<Admission>) {
    let (runs, admission) = (Arc::downgrade(runs), Arc::downgrade(admission));
    register_stats(move || {
        let (Some(runs), Some(admission)) = (runs.upgrade(), admission.upgrade()) else {
            return Vec::new();
        };
        let mut samples: Vec<Sample> = STATUSES
            .iter()
            .zip(&runs.0)
            .map(|(status, n)| {
                let help = "sandbox runs by how they ended";
                Sample::counter("umcp_execution_runs", help, n.load(Ordering::Relaxed))
                    .label("status", *status)
            })
            .collect();
        let (waits, waited) = admission.waits();
        samples.push(Sample::gauge(
            "umcp_execution_queue_depth",
            "requests waiting for a sandbox slot now",
            admission.queued() as f64,
        ));
        samples.push(Sample::counter(
            "umcp_execution_admission_waits",
            "requests that had to queue for a sandbox slot",
            waits,
        ));
        samples.push(Sample {
            name: "umcp_execution_admission_wait_seconds",
            help: "time requests spent queued for a sandbox slot, summed",
            kind: Kind::Counter,
            labels: Vec::new(),
            value: waited.as_secs_f64(),
        });
        samples
    });
}

/// Exposes the warm pool's counters per language.
pub fn register_pool(stats: &[(Language, Arc<PoolStats>)]) {
    let stats: Vec<(Language, Weak<PoolStats>)> =
        stats.iter().map(|(l, s)| (*l, Arc::downgrade(s))).collect();
    register_stats(move || {
        let mut samples = Vec::with_capacity(stats.len() * 3);
        for (language, s) in &stats {
            let Some(s) = s.upgrade() else { continue };
            let name = language.name();
            samples.push(
                Sample::gauge(
                    "umcp_execution_warm_pool_ready",
                    "pre-started sandboxes waiting",
                    s.ready.load(Ordering::Relaxed) as f64,
                )
                .label("language", name),
            );
            samples.push(
                Sample::counter(
                    "umcp_execution_warm_pool_hits",
                    "runs in a pre-started sandbox",
                    s.hits.load(Ordering::Relaxed),
                )
                .label("language", name),
            );
            samples.push(
                Sample::counter(
                    "umcp_execution_warm_pool_misses",
                    "runs of a pooled language that started cold",
                    s.misses.load(Ordering::Relaxed),
                )
                .label("language", name),
            );
        }
        samples
    });
}
