//! Where the milliseconds of one `Execute` go: the service's and the sandbox's tracing spans
//! (`exec.*`, `sandbox.*`), timed by a small subscriber layer, over sequential `Execute` calls
//! of the in-process service, next to a bare interpreter start in the same run.
//!
//! ```text
//! cargo run --release -p umcp-execution --example execute_phases [runs]   (as root)
//! ```
//!
//! Spans marked "after" run once the result is on its way (the slot's release, persistence);
//! the gRPC framing, auth and the audit record before the run are measured end to end by the
//! gateway's `bench_execute`.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use umcp_execution::config::ExecutionConfig;
use umcp_execution::model::{ExecuteInput, Language, LimitRequest, RunStatus};
use umcp_execution::service::ExecutionService;

type Samples = Arc<Mutex<BTreeMap<&'static str, Histogram<u64>>>>;

/// Records each closed span's lifetime (creation to close, in µs) under its name.
struct SpanTimes(Samples);

struct Opened(Instant);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        let micros = u64::try_from(opened.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut all = self.0.lock();
        let h = all
            .entry(span.name())
            .or_insert_with(|| Histogram::new(3).expect("histogram"));
        let _ = h.record(micros.max(1));
    }
}

fn input(code: &str) -> ExecuteInput {
    ExecuteInput {
        language: Language::Python,
        code: code.into(),
        stdin: Vec::new(),
        args: Vec::new(),
        limits: LimitRequest::default(),
        idempotency_key: None,
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Phases in the order a call meets them, and whether the caller waits for them.
const PHASES: &[(&str, &str, bool)] = &[
    ("exec.validate", "validation, request fingerprint", true),
    ("exec.admission", "admission (queue)", true),
    ("sandbox.handover", "  pooled: limits at hand-over", true),
    ("exec.sandbox", "sandbox run, all of it", true),
    ("sandbox.prepare", "  slot cgroup, pipes, mount plan", true),
    ("sandbox.clone", "  clone on the slot thread", true),
    (
        "sandbox.setup",
        "  namespaces, mounts, credentials, seccomp → execve",
        true,
    ),
    ("sandbox.program", "  interpreter start + user code", true),
    ("sandbox.teardown", "  cgroup counters, result", true),
    ("exec.result", "result mapping, persistence hand-off", true),
    (
        "sandbox.release",
        "mount namespace drop, cgroup drain",
        false,
    ),
    ("exec.persist", "graph persistence", false),
];

async fn measure(
    svc: &ExecutionService,
    samples: &Samples,
    code: &str,
    runs: usize,
    pool: usize,
) -> Histogram<u64> {
    for _ in 0..20 {
        let r = svc.execute("bench", input(code)).await.expect("warm-up");
        assert_eq!(
            r.status,
            RunStatus::Ok,
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    samples.lock().clear();
    let mut total = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..runs {
        // Measures a call that finds the pool refilled (a caller's think time between calls;
        // back-to-back calls outpace the refill and run cold). Not timed.
        let bound = Instant::now() + Duration::from_secs(1);
        while svc.warm_ready(Language::Python) < pool && Instant::now() < bound {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let r = svc.execute("bench", input(code)).await.expect("execute");
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        assert_eq!(r.status, RunStatus::Ok);
        total.record(micros).expect("record");
    }
    // Let the after-response work (releases) finish and close its spans.
    tokio::time::sleep(Duration::from_millis(200)).await;
    total
}

fn print_table(title: &str, samples: &Samples, total: &Histogram<u64>) {
    println!("\n{title}");
    println!(
        "{:<18} {:<52} {:>8} {:>8} {:>6}",
        "span", "phase", "p50 ms", "mean ms", "path"
    );
    let all = samples.lock();
    for (name, what, on_path) in PHASES {
        let Some(h) = all.get(name) else { continue };
        println!(
            "{name:<18} {what:<52} {:>8.2} {:>8.2} {:>6}",
            ms(h.value_at_quantile(0.5)),
            h.mean() / 1000.0,
            if *on_path { "caller" } else { "after" }
        );
    }
    println!(
        "{:<18} {:<52} {:>8.2} {:>8.2}",
        "total",
        "ExecutionService::execute, end to end",
        ms(total.value_at_quantile(0.5)),
        total.mean() / 1000.0
    );
}

async fn bare(runs: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..runs + 10 {
        let started = Instant::now();
        let out = tokio::process::Command::new("/usr/bin/python3")
            .args(["-c", "print(1)"])
            .env_clear()
            .envs(umcp_execution::runtime::base_env())
            .output()
            .await
            .expect("bare spawn");
        assert!(out.status.success());
        if i >= 10 {
            h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
                .expect("record");
        }
    }
    h
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let samples: Samples = Arc::default();
    let filter = Targets::new()
        .with_target("umcp_execution", tracing::Level::DEBUG)
        .with_target("umcp_sandbox", tracing::Level::DEBUG);
    let subscriber = tracing_subscriber::registry()
        .with(SpanTimes(Arc::clone(&samples)))
        .with(filter);
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let cold = Arc::new(service(0, 63_000).await);
    let pooled = Arc::new(service(2, 63_100).await);
    for round in 0..2 {
        println!(
            "throughput round {round}, 100 print(1) runs 4-way: bare {:.0}/s, cold {:.0}/s, warm pool {:.0}/s",
            throughput(None).await,
            throughput(Some(&cold)).await,
            throughput(Some(&pooled)).await
        );
    }
    let bare = bare(runs).await;
    println!(
        "bare /usr/bin/python3 -c 'print(1)': p50 {:.2} ms, p95 {:.2} ms ({runs} runs)",
        ms(bare.value_at_quantile(0.5)),
        ms(bare.value_at_quantile(0.95))
    );
    for (title, code) in [
        ("python `pass` (interpreter start only)", "pass"),
        ("python `print(1)`", "print(1)"),
    ] {
        for (mode, svc, pool) in [("cold", &*cold, 0), ("warm pool", &*pooled, 2)] {
            let total = measure(svc, &samples, code, runs, pool).await;
            print_table(
                &format!("{title}, {mode}, {runs} sequential calls"),
                &samples,
                &total,
            );
        }
    }
}

/// 100 `print(1)` runs, 4 at a time: runs per second (bare spawns when `svc` is `None`).
async fn throughput(svc: Option<&Arc<ExecutionService>>) -> f64 {
    const RUNS: usize = 100;
    const WAYS: usize = 4;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..WAYS).map(|_| {
        let (svc, next) = (svc.cloned(), Arc::clone(&next));
        tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < RUNS {
                match &svc {
                    Some(svc) => {
                        let r = svc
                            .execute("bench", input("print(1)"))
                            .await
                            .expect("execute");
                        assert_eq!(r.status, RunStatus::Ok);
                    }
                    None => {
                        let out = tokio::process::Command::new("/usr/bin/python3")
                            .args(["-c", "print(1)"])
                            .output()
                            .await
                            .expect("bare spawn");
                        assert!(out.status.success());
                    }
                }
            }
        })
    });
    for w in workers.collect::<Vec<_>>() {
        w.await.expect("worker");
    }
    RUNS as f64 / started.elapsed().as_secs_f64()
}

/// The service with `pool` pre-started Python sandboxes (0: every run cold).
async fn service(pool: usize, uid_base: u32) -> ExecutionService {
    let config = ExecutionConfig {
        max_concurrent: 4,
        uid_base,
        warm_pool_size: pool,
        tools_venv: std::env::current_dir().expect("cwd").join(".venv"),
        graph_url: String::new(),
        ..ExecutionConfig::default()
    };
    let sandbox = umcp_execution::build_sandbox(&config).expect("sandbox (run as root)");
    ExecutionService::new(config, Arc::new(sandbox.clone()), None)
        .await
        .expect("service")
        .with_warm_pool(&sandbox)
}
