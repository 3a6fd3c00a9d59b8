//! Sandbox overhead and throughput against bare interpreter starts, in one run:
//!
//! ```text
//! cargo run --release -p umcp-execution --example sandbox_bench   (as root)
//! ```
//!
//! * latency: 200 sequential `python3 -c 'print(1)'` runs bare (tokio::process) and sandboxed;
//!   overhead = sandboxed minus bare at p50 and p95 (targets: <= 3 ms p50, <= 6 ms p95);
//! * the sandbox floor: the same with `/usr/bin/true`;
//! * throughput: 100 runs 8-way parallel, bare vs sandboxed (target: >= 80 % of bare).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use umcp_execution::runtime::base_env;
use umcp_sandbox::process::{
    NamespaceSandbox, RunLimits, RunSpec, Sandbox, SandboxOptions, Termination,
};

const PYTHON: &str = "/usr/bin/python3";
const LATENCY_RUNS: usize = 200;
const WARMUP: usize = 10;
const BATCH: usize = 100;
const PARALLEL: usize = 8;

fn spec(program: &str, args: &[&str]) -> RunSpec {
    RunSpec {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: base_env(),
        files: Vec::new(),
        binds: Vec::new(),
        workdir: "/tmp".into(),
        stdin: Vec::new(),
        limits: RunLimits::default(),
        capture_fd3: false,
    }
}

async fn bare(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(base_env())
        .output()
        .await
        .expect("bare spawn");
    assert!(out.status.success(), "bare run failed");
    started.elapsed()
}

async fn sandboxed(sandbox: &NamespaceSandbox, program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = sandbox
        .run(spec(program, args), None)
        .await
        .expect("sandbox run");
    assert_eq!(
        out.termination,
        Termination::Ok,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn latency(
    sandbox: &NamespaceSandbox,
    program: &str,
    args: &[&str],
) -> (Histogram<u64>, Histogram<u64>) {
    let (mut b, mut s) = (hist(), hist());
    for i in 0..WARMUP + LATENCY_RUNS {
        // Interleave so drift of the (noisy) VM hits both sides equally.
        let tb = bare(program, args).await;
        let ts = sandboxed(sandbox, program, args).await;
        if i >= WARMUP {
            b.record(tb.as_micros() as u64).expect("record");
            s.record(ts.as_micros() as u64).expect("record");
        }
    }
    (b, s)
}

async fn throughput<F, Fut>(run: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let run = Arc::new(run);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (run, next) = (Arc::clone(&run), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < BATCH {
                    run().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    BATCH as f64 / started.elapsed().as_secs_f64()
}

fn row(name: &str, b: &Histogram<u64>, s: &Histogram<u64>) {
    let (b50, b95) = (b.value_at_quantile(0.5), b.value_at_quantile(0.95));
    let (s50, s95) = (s.value_at_quantile(0.5), s.value_at_quantile(0.95));
    println!(
        "| {name:<22} | {:>8.2} | {:>8.2} | {:>9.2} | {:>9.2} | {:>+8.2} | {:>+8.2} |",
        ms(b50),
        ms(b95),
        ms(s50),
        ms(s95),
        ms(s50) - ms(b50),
        ms(s95) - ms(b95)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sandbox = NamespaceSandbox::new(SandboxOptions {
        slots: PARALLEL,
        ..SandboxOptions::default()
    })
    .expect("the sandbox needs root and cgroups");
    let info = sandbox.info();
    println!(
        "sandbox: {} with {}, {} slots",
        info.backend, info.cgroups, info.slots
    );
    println!();
    println!("latency, {LATENCY_RUNS} sequential runs each (ms):");
    println!(
        "| payload                |  bare p50 |  bare p95 |  sbx p50 |  sbx p95 | Δ p50   | Δ p95   |"
    );
    println!(
        "|------------------------|---------:|---------:|----------:|----------:|---------:|---------:|"
    );
    let (b, s) = latency(&sandbox, PYTHON, &["-c", "print(1)"]).await;
    row("python3 -c print(1)", &b, &s);
    let (tb, ts) = latency(&sandbox, "/usr/bin/true", &[]).await;
    row("/usr/bin/true", &tb, &ts);

    let bare_rate = throughput(|| bare(PYTHON, &["-c", "print(1)"])).await;
    let shared = Arc::new(sandbox);
    let sbx = Arc::clone(&shared);
    let sbx_rate = throughput(move || {
        let sbx = Arc::clone(&sbx);
        async move { sandboxed(&sbx, PYTHON, &["-c", "print(1)"]).await }
    })
    .await;
    println!();
    println!("throughput, {BATCH} python3 print(1) runs, {PARALLEL}-way parallel:");
    println!("| mode      | runs/s |");
    println!("|-----------|-------:|");
    println!("| bare      | {bare_rate:>6.1} |");
    println!("| sandboxed | {sbx_rate:>6.1} |");
    println!("| ratio     | {:>5.0}% |", 100.0 * sbx_rate / bare_rate);
    let overhead50 = ms(s.value_at_quantile(0.5)) - ms(b.value_at_quantile(0.5));
    let overhead95 = ms(s.value_at_quantile(0.95)) - ms(b.value_at_quantile(0.95));
    println!();
    println!(
        "targets: overhead p50 {overhead50:.2} ms (<= 3) {}, p95 {overhead95:.2} ms (<= 6) {}, throughput {:.0}% (>= 80%) {}",
        verdict(overhead50 <= 3.0),
        verdict(overhead95 <= 6.0),
        100.0 * sbx_rate / bare_rate,
        verdict(sbx_rate >= 0.8 * bare_rate)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
