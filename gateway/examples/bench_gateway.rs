//! Gateway overhead benchmark: the same cheap RPC (`GraphService/GetMetrics`) sent straight to
//! the graph service and through the gateway, under the same concurrent load, in one run.
//!
//! Run with `make bench` (it builds the release binaries first), or:
//! `cargo run --release -p umcp-gateway --example bench_gateway -- [seconds] [connections] [in-flight per connection]`
//!
//! Both processes are the real release binaries, started here on free ports with a throw-away
//! data directory; rounds alternate direct / gateway so machine noise hits both alike.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use umcp_proto::graph::v1::GetMetricsRequest;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/bench_gateway -> target/release/<name>
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join(name)
}

fn spawn(name: &str, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(bin(name));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap_or_else(|e| {
        panic!("start {name} (build with `cargo build --release --bins`): {e}")
    }))
}

struct Round {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn connect(url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .expect("url")
        .tcp_nodelay(true);
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            let mut client = GraphServiceClient::new(channel.clone());
            if client.get_metrics(GetMetricsRequest {}).await.is_ok() {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered GetMetrics");
}

async fn round(url: &str, seconds: u64, connections: usize, per_connection: usize) -> Round {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(url).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for channel in &channels {
        for _ in 0..per_connection {
            let mut client = GraphServiceClient::new(channel.clone());
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut latency =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut ok, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match client.get_metrics(GetMetricsRequest {}).await {
                        Ok(_) => {
                            ok += 1;
                            let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = latency.record(micros.max(1));
                        }
                        Err(_) => errors += 1,
                    }
                }
                (ok, errors, latency)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Round {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    for task in tasks {
        let (ok, errors, latency) = task.await.expect("load task");
        total.requests += ok;
        total.errors += errors;
        total.latency.add(latency).expect("same bounds");
    }
    total.elapsed = started.elapsed();
    total
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(5);
    let connections = usize::try_from(args.get(1).copied().unwrap_or(4)).unwrap_or(4);
    let per_connection = usize::try_from(args.get(2).copied().unwrap_or(16)).unwrap_or(16);

    let data = tempfile::tempdir().expect("tempdir");
    let (graph_port, gateway_port) = (free_port(), free_port());
    let _graph = spawn(
        "umcp-graph",
        &[
            ("UMCP_LISTEN", format!("127.0.0.1:{graph_port}")),
            (
                "UMCP_DATA_DIR",
                data.path().join("graph").display().to_string(),
            ),
            ("UMCP_LOG__FILTER", "error".into()),
        ],
    );
    let _gateway = spawn(
        "umcp-gateway",
        &[
            ("UMCP_LISTEN", format!("127.0.0.1:{gateway_port}")),
            (
                "UMCP_BACKENDS__GRAPH",
                format!("http://127.0.0.1:{graph_port}"),
            ),
            ("UMCP_BACKENDS__AUTH", String::new()),
            ("UMCP_BACKENDS__EXECUTION", String::new()),
            ("UMCP_BACKENDS__AUDIT", String::new()),
            ("UMCP_LOG__FILTER", "error".into()),
        ],
    );
    let direct = format!("http://127.0.0.1:{graph_port}");
    let via = format!("http://127.0.0.1:{gateway_port}");
    // Warm both paths (connections, allocator, caches) before measuring.
    let _ = round(&direct, 1, connections, per_connection).await;
    let _ = round(&via, 1, connections, per_connection).await;

    println!(
        "GetMetrics, {connections} connections x {per_connection} in flight, {seconds} s per round, client on 1 thread"
    );
    println!(
        "{:<10} {:>5} {:>10} {:>9} {:>9} {:>7}",
        "path", "round", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let mut results: Vec<(bool, Round)> = Vec::new();
    for r in 1..=2 {
        for (is_gateway, url) in [(false, &direct), (true, &via)] {
            let result = round(url, seconds, connections, per_connection).await;
            println!(
                "{:<10} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>7}",
                if is_gateway { "gateway" } else { "direct" },
                r,
                result.rps(),
                result.p(0.5),
                result.p(0.99),
                result.errors
            );
            results.push((is_gateway, result));
        }
    }
    let mean = |gw: bool, f: &dyn Fn(&Round) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(g, _)| *g == gw)
            .map(|(_, r)| f(r))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (d_rps, g_rps) = (mean(false, &Round::rps), mean(true, &Round::rps));
    let (d_p50, g_p50) = (mean(false, &|r| r.p(0.5)), mean(true, &|r| r.p(0.5)));
    let (d_p99, g_p99) = (mean(false, &|r| r.p(0.99)), mean(true, &|r| r.p(0.99)));
    println!("summary: direct {d_rps:.0} req/s p50 {d_p50:.3} ms p99 {d_p99:.3} ms");
    println!("summary: gateway {g_rps:.0} req/s p50 {g_p50:.3} ms p99 {g_p99:.3} ms");
    println!(
        "summary: gateway keeps {:.1}% of direct throughput (target >= 60%), adds {:.3} ms p50 (target < 0.5 ms)",
        100.0 * g_rps / d_rps,
        g_p50 - d_p50
    );
}
