//! Query bounds with the real binary: runaway queries answer a precise code (memory →
//! RESOURCE_EXHAUSTED, time → DEADLINE_EXCEEDED), the service's memory stays under its ceiling,
//! one caller cannot take every slot, other callers are answered meanwhile, and SIGTERM stops the
//! service while runaways run.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::{Client, KillOnDrop, caller_client, query_req, spawn_binary_with, wait_ready};
use umcp_testkit::issuer::TestIssuer;

/// Grows one list without bound (the engine's `range` wraps at i64::MAX): a memory runaway.
const MEMORY_RUNAWAY: &str = "UNWIND range(1, 9223372036854775807) AS x RETURN collect(x) AS xs";
/// A cartesian product of small lists, counted as it streams: CPU only, flat memory.
const CPU_RUNAWAY: &str = "UNWIND range(1, 2000) AS a UNWIND range(1, 2000) AS b \
                           UNWIND range(1, 2000) AS c RETURN count(*) AS n";

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Binary {
    _dir: tempfile::TempDir,
    issuer: TestIssuer,
    port: u16,
    child: KillOnDrop,
}

impl Binary {
    async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::new();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, issuer.jwks_json()).expect("write jwks");
        let port = umcp_testkit::free_port();
        let child = spawn_binary_with(&dir.path().join("graph"), port, &jwks, env);
        wait_ready(port, &issuer).await;
        Self {
            _dir: dir,
            issuer,
            port,
            child,
        }
    }

    fn client(&self, sub: &str) -> Client {
        let channel = umcp_testkit::channel(([127, 0, 0, 1], self.port).into());
        caller_client(channel, &self.issuer, sub)
    }

    /// Starts `cypher` as caller `sub` in the background. Each run gets its own (unused)
    /// parameter: identical concurrent queries would share one load in the query cache, and
    /// these tests need every run to be its own query child.
    fn spawn_query(
        &self,
        sub: &str,
        cypher: &'static str,
    ) -> tokio::task::JoinHandle<(Result<(), tonic::Status>, Duration)> {
        static RUN: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        let mut c = self.client(sub);
        let mut req = query_req(cypher);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        req.parameters
            .insert("run_id".into(), crate::support::int(run));
        tokio::spawn(async move {
            let t = Instant::now();
            let r = c.query(req).await.map(|_| ());
            (r, t.elapsed())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::print_stdout)] // numbers for BENCHMARKS
async fn runaway_queries_are_bounded_and_others_are_answered() {
    let bin = Binary::start(&[]).await;
    let pid = bin.child.0.id();
    let baseline = peak_kib(pid);

    // Eight runaways from four callers (two each, their cap): every slot is taken.
    let started = Instant::now();
    let mut runaways = Vec::new();
    for i in 0..8 {
        let cypher = if i % 2 == 0 {
            MEMORY_RUNAWAY
        } else {
            CPU_RUNAWAY
        };
        runaways.push((
            cypher,
            bin.spawn_query(&format!("runaway-{}", i / 2), cypher),
        ));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let small = bin
        .client("bystander")
        .query(query_req("RETURN 1 AS one"))
        .await;
    let other_ms = t.elapsed().as_millis();
    for (cypher, handle) in runaways {
        let (r, took) = handle.await.expect("join");
        let status = r.expect_err("a runaway query must not succeed");
        println!(
            "runaway {} -> {:?} in {} ms: {}",
            if cypher == MEMORY_RUNAWAY {
                "memory"
            } else {
                "cpu"
            },
            status.code(),
            took.as_millis(),
            status.message()
        );
        let expected = if cypher == MEMORY_RUNAWAY {
            Code::ResourceExhausted
        } else {
            Code::DeadlineExceeded
        };
        assert_eq!(status.code(), expected, "{cypher}: {}", status.message());
        if expected == Code::DeadlineExceeded {
            // The service's 3 s limit stopped it, not the caller giving up.
            assert!(took < Duration::from_secs(10), "took {took:?}");
        }
    }
    let peak = peak_kib(pid);
    println!(
        "graph service VmHWM: baseline {baseline} KiB, after 8 runaways {peak} KiB \
         (ceiling 256 MiB); unrelated query answered in {other_ms} ms; all done in {} ms",
        started.elapsed().as_millis()
    );
    small.expect("an unrelated query is answered while runaways run");
    assert!(
        peak < 256 * 1024,
        "service peak {peak} KiB over its ceiling"
    );
    bin.client("runaway-0")
        .query(query_req("RETURN 2 AS two"))
        .await
        .expect("the service keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::print_stdout)] // numbers for BENCHMARKS
async fn one_caller_cannot_take_every_slot() {
    let bin = Binary::start(&[]).await;
    // One caller floods: two are admitted, the rest refused at once, naming the cap.
    let flood: Vec<_> = (0..8)
        .map(|_| bin.spawn_query("greedy", CPU_RUNAWAY))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    bin.client("other")
        .query(query_req("RETURN 1 AS one"))
        .await
        .expect("another caller is answered while one caller floods");
    println!(
        "another caller answered in {} ms while one caller flooded",
        t.elapsed().as_millis()
    );
    let (mut refused, mut timed_out) = (0, 0);
    for handle in flood {
        let (r, took) = handle.await.expect("join");
        let status = r.expect_err("runaway");
        match status.code() {
            Code::ResourceExhausted => {
                assert!(
                    status.message().contains("for this caller (max 2)"),
                    "{}",
                    status.message()
                );
                assert!(took < Duration::from_secs(2), "refused late: {took:?}");
                refused += 1;
            }
            Code::DeadlineExceeded => timed_out += 1,
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
    }
    assert_eq!((timed_out, refused), (2, 6));
    // Once its queries ended, the caller is admitted again.
    bin.client("greedy")
        .query(query_req("RETURN 3 AS three"))
        .await
        .expect("the cap is released when queries end");
    // What the fork per query costs a caller: sequential small queries, each in its own child.
    let mut client = bin.client("greedy");
    let mut took = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        client
            .query(query_req("RETURN 1 AS one"))
            .await
            .expect("small query");
        took.push(t.elapsed());
    }
    took.sort();
    println!(
        "RETURN 1 through gRPC, each in a forked child: p50 {:?}, p99 {:?}",
        took[49], took[98]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::print_stdout)] // numbers for BENCHMARKS
async fn sigterm_stops_the_service_while_runaways_run() {
    // Queries may run a minute; SIGTERM must not wait for them.
    let mut bin = Binary::start(&[("UMCP_MAX_QUERY_TIME_MS", "60000")]).await;
    let runaways: Vec<_> = (0..8)
        .map(|i| bin.spawn_query(&format!("caller-{}", i / 2), CPU_RUNAWAY))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &bin.child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM failed");
    let status = loop {
        if let Some(status) = bin.child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "exited {status} {} ms after SIGTERM with 8 runaway queries",
        t.elapsed().as_millis()
    );
    assert!(status.success(), "{status}");
    for handle in runaways {
        let (r, _) = handle.await.expect("join");
        let status = r.expect_err("stopped");
        let code = status.code();
        assert_eq!(code, Code::Unavailable, "{}", status.message());
    }
}
