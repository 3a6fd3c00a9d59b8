//! Query bounds with the real binary: runaway queries answer a precise code, the service's
//! memory stays under its ceiling, and an unrelated query is answered meanwhile.

use std::time::Instant;

use tonic::Code;

use crate::support::{query_req, spawn_binary, wait_ready};

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::print_stdout)] // numbers for BENCHMARKS
async fn runaway_queries_are_bounded_and_others_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = umcp_testkit::issuer::TestIssuer::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).expect("write jwks");
    let port = umcp_testkit::free_port();
    let child = spawn_binary(&dir.path().join("graph"), port, &jwks);
    let pid = child.0.id();
    let client = wait_ready(port, &issuer).await;
    let baseline = peak_kib(pid);

    // Memory: collect grows one list without bound (the engine's range wraps at i64::MAX).
    let memory = "UNWIND range(1, 9223372036854775807) AS x RETURN collect(x) AS xs";
    // CPU: a count over a huge range allocates little but never ends.
    let cpu = "UNWIND range(1, 9223372036854775807) AS x RETURN count(x) AS n";
    let started = Instant::now();
    let mut runaways = Vec::new();
    for i in 0..8 {
        let mut c = client.clone();
        let cypher = if i % 2 == 0 { memory } else { cpu };
        runaways.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.query(query_req(cypher)).await;
            (cypher, r.map(|_| ()), t.elapsed())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut other = client.clone();
    let t = Instant::now();
    let small = other.query(query_req("RETURN 1 AS one")).await;
    let other_ms = t.elapsed().as_millis();
    let mut codes = Vec::new();
    for r in runaways {
        let (cypher, r, took) = r.await.expect("join");
        let status = r.expect_err("a runaway query must not succeed");
        println!(
            "runaway {:?} -> {:?} in {} ms: {}",
            &cypher[cypher.len() - 20..],
            status.code(),
            took.as_millis(),
            status.message()
        );
        codes.push(status.code());
    }
    let peak = peak_kib(pid);
    println!(
        "graph service VmHWM: baseline {baseline} KiB, after 8 runaways {peak} KiB \
         (ceiling 256 MiB); unrelated query answered in {other_ms} ms; all done in {} ms",
        started.elapsed().as_millis()
    );
    // The unrelated query may wait for a slot, but it is answered, not refused.
    small.expect("an unrelated query is answered while runaways run");
    for code in &codes {
        assert!(
            matches!(code, Code::ResourceExhausted | Code::DeadlineExceeded),
            "runaway answered {code:?}"
        );
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(
        peak < 256 * 1024,
        "service peak {peak} KiB over its ceiling"
    );
    // The service still answers afterwards.
    let mut after = client.clone();
    after
        .query(query_req("RETURN 2 AS two"))
        .await
        .expect("the service keeps serving");
}
