//! End-to-end `Execute` latency through the gateway: a client sends `print(1)` in Python to the
//! gateway, which authenticates it and forwards it to the execution service, which runs it in a
//! fresh sandbox. Measured against the same call straight to the execution service, in one run.
//!
//! Run with `make bench`, or after `cargo build --release --bins --examples`:
//! `target/release/examples/bench_execute [runs]`. Target: p50 ≤ 25 ms through the gateway.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

mod support;

use hdrhistogram::Histogram;
use support::{free_port, mint, spawn};
use tonic::transport::{Channel, Endpoint};
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use umcp_proto::execution::v1::{ExecuteRequest, Language, RunStatus};

async fn execute(
    client: &mut ExecutionServiceClient<Channel>,
    token: &str,
) -> Result<Duration, String> {
    let mut request = tonic::Request::new(ExecuteRequest {
        language: Language::Python as i32,
        code: "print(1)".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let started = Instant::now();
    let response = client
        .execute(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    let elapsed = started.elapsed();
    let result = response.into_inner();
    if result.status != RunStatus::Ok as i32 || result.stdout != b"1\n" {
        return Err(format!(
            "unexpected result: status {} stdout {:?}",
            result.status, result.stdout
        ));
    }
    Ok(elapsed)
}

async fn measure(url: &str, token: &str, runs: usize) -> Histogram<u64> {
    let channel = Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_lazy();
    let mut client = ExecutionServiceClient::new(channel);
    // Wait until it answers, then warm up the interpreter's page cache and the connection.
    for attempt in 0.. {
        match execute(&mut client, token).await {
            Ok(_) => break,
            Err(e) if attempt > 100 => panic!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for _ in 0..10 {
        execute(&mut client, token).await.expect("warm-up");
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..runs {
        let elapsed = execute(&mut client, token).await.expect("execute");
        h.record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
            .expect("record");
    }
    h
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    let token = mint(&jwks, &["developer"]);
    let jwks = jwks.display().to_string();
    let (exec_port, gw_port) = (free_port(), free_port());
    let venv = std::env::current_dir()
        .expect("cwd")
        .join(".venv")
        .display()
        .to_string();
    let _execution = spawn(
        "umcp-execution",
        &[
            ("UMCP_LISTEN", format!("127.0.0.1:{exec_port}")),
            ("UMCP_AUTH__JWKS_FILE", jwks.clone()),
            ("UMCP_GRAPH_URL", String::new()),
            ("UMCP_TOOLS_VENV", venv),
            ("UMCP_LOG__FILTER", "error".into()),
        ],
    );
    let _gateway = spawn(
        "umcp-gateway",
        &[
            ("UMCP_LISTEN", format!("127.0.0.1:{gw_port}")),
            (
                "UMCP_BACKENDS__EXECUTION",
                format!("http://127.0.0.1:{exec_port}"),
            ),
            ("UMCP_BACKENDS__AUTH", String::new()),
            ("UMCP_BACKENDS__GRAPH", String::new()),
            ("UMCP_BACKENDS__AUDIT", String::new()),
            // 200 executions of one principal: measure the path, not the limiter.
            ("UMCP_RATE_LIMITS__ENABLED", "false".into()),
            // The HTTP (MCP) port is not measured here; no fixed port to collide on.
            ("UMCP_HTTP__LISTEN", String::new()),
            ("UMCP_AUTH__JWKS_FILE", jwks),
            ("UMCP_LOG__FILTER", "error".into()),
        ],
    );
    println!(
        "Execute python print(1), {runs} sequential calls per path, sandboxed, with a bearer token"
    );
    let mut rows = Vec::new();
    for (name, port) in [
        ("direct", exec_port),
        ("gateway", gw_port),
        ("direct", exec_port),
        ("gateway", gw_port),
    ] {
        let h = measure(&format!("http://127.0.0.1:{port}"), &token, runs / 2).await;
        println!(
            "{name:<8} p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.95) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
        rows.push((name, h));
    }
    let merged = |want: &str| {
        let mut all = Histogram::<u64>::new(3).expect("histogram");
        for (name, h) in &rows {
            if *name == want {
                all.add(h).expect("same bounds");
            }
        }
        all
    };
    let (direct, gateway) = (merged("direct"), merged("gateway"));
    println!(
        "summary: Execute through the gateway p50 {:.2} ms p95 {:.2} ms (target p50 <= 25 ms); direct p50 {:.2} ms",
        gateway.value_at_quantile(0.5) as f64 / 1000.0,
        gateway.value_at_quantile(0.95) as f64 / 1000.0,
        direct.value_at_quantile(0.5) as f64 / 1000.0
    );
}
