//! Decisions per second and CPU per decision of the limiter against a real `redis-server`,
//! with many decisions in flight at once (as in a busy gateway), for several pool sizes; the
//! CPU of this process and of `redis-server` is read from `/proc` (clock ticks), so the cost a
//! decision puts on a shared machine shows on both sides.
//!
//! `cargo run --release -p umcp-ratelimit --example decision_throughput -- [seconds] [in flight]`
//! Each round runs twice: every task its own principal, then all on one (the gateway bench's
//! single user).

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use umcp_ratelimit::{RateLimitConfig, RateLimiter, Rule, Source, Verdict};
use umcp_redis::{Redis, RedisConfig};
use umcp_testkit::redis::RedisServer;

/// utime + stime of `pid` ("self" for this process), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // state is field 3 of the file, index 0 here: utime is 14 → 11, stime 15 → 12.
    (ticks(11) + ticks(12)) / 100.0
}

async fn round(
    limiter: &RateLimiter,
    seconds: u64,
    in_flight: usize,
    principals: usize,
    redis_pid: &str,
) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let not_redis = Arc::new(AtomicU64::new(0));
    let (cpu0, rcpu0, t0) = (cpu_seconds("self"), cpu_seconds(redis_pid), Instant::now());
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| {
            let (limiter, stop, done, not_redis) = (
                limiter.clone(),
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&not_redis),
            );
            tokio::spawn(async move {
                let principal = format!("user-{}", i % principals);
                while !stop.load(Ordering::Relaxed) {
                    let verdict = limiter.check("query", &principal).await;
                    if !matches!(
                        verdict,
                        Verdict::Checked {
                            source: Source::Redis,
                            ..
                        }
                    ) {
                        not_redis.fetch_add(1, Ordering::Relaxed);
                        // a local decision never yields: let the timer and the others run
                        tokio::task::yield_now().await;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed) as f64;
    let cpu = cpu_seconds("self") - cpu0;
    let rcpu = cpu_seconds(redis_pid) - rcpu0;
    format!(
        "{:>8.0} decisions/s  client {:>5.1} µs CPU/decision  redis-server {:>5.1} µs CPU/decision  (not from redis: {})",
        n / elapsed,
        cpu * 1e6 / n,
        rcpu * 1e6 / n,
        not_redis.load(Ordering::Relaxed)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(3);
    let in_flight = usize::try_from(args.get(1).copied().unwrap_or(64)).unwrap_or(64);
    let config = RateLimitConfig::default().with_rule("query", Some(Rule::per_minute(100_000_000)));
    let server = RedisServer::start();
    let redis_pid = server.pid.to_string();
    println!("{in_flight} decisions in flight, {seconds} s per round, runtime of 2 threads");
    let mut limiters = Vec::new();
    for pool_size in [1, 4] {
        let redis = Redis::connect(&RedisConfig {
            url: server.url(),
            pool_size,
            ..RedisConfig::default()
        })
        .await
        .expect("valid config")
        .expect("configured");
        limiters.push((pool_size, RateLimiter::new(config.clone(), Some(redis))));
    }
    for r in 1..=2 {
        for (pool_size, limiter) in &limiters {
            for principals in [in_flight, 1] {
                let line = round(limiter, seconds, in_flight, principals, &redis_pid).await;
                println!("pool {pool_size} principals {principals:>3} round {r}: {line}");
            }
        }
    }
}
