//! Decision latency of the limiter: in process, through a real standalone `redis-server`,
//! and with that Redis killed (`failure_mode=local`), sequential checks of rotating keys.
//!
//! `cargo run --release -p umcp-ratelimit --example decision_latency -- [checks]`

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use umcp_ratelimit::{FailureMode, RateLimitConfig, RateLimiter, Rule, Source, Verdict};
use umcp_redis::{Redis, RedisConfig};
use umcp_testkit::redis::RedisServer;

async fn measure(name: &str, limiter: &RateLimiter, checks: u64) {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let mut sources = [0u64; 3];
    for i in 0..checks {
        let principal = format!("user-{}", i % 1000);
        let started = Instant::now();
        let verdict = limiter.check("query", &principal).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.record(micros.max(1)).expect("in range");
        if let Verdict::Checked { source, .. } = verdict {
            sources[match source {
                Source::Redis => 0,
                Source::Local => 1,
                Source::FailOpen => 2,
            }] += 1;
        }
    }
    #[allow(clippy::print_stdout)] // the report is the point of this example
    {
        println!(
            "{name:<22} checks {checks:>6}  p50 {:>6} µs  p99 {:>6} µs  max {:>6} µs  (redis {}, local {}, open {})",
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.max(),
            sources[0],
            sources[1],
            sources[2]
        );
    }
}

#[tokio::main]
async fn main() {
    let checks: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let config = RateLimitConfig {
        failure_mode: FailureMode::Local,
        ..RateLimitConfig::default()
    }
    .with_rule("query", Some(Rule::per_minute(1_000_000)));

    let local = RateLimiter::new(config.clone(), None);
    measure("in process", &local, checks).await;

    let mut server = RedisServer::start();
    let redis = Redis::connect(&RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    })
    .await
    .expect("valid config")
    .expect("configured");
    let remote = RateLimiter::new(config, Some(redis));
    measure("redis (standalone)", &remote, checks).await;

    server.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    measure("redis killed → local", &remote, checks).await;
}
