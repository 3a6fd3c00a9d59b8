//! L1-hit and L2-hit latency of `TwoTier` against a real `redis-server` on loopback:
//! `cargo run --release -p umcp-cache --example latency`. Prints p50/p99/max in µs.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use umcp_cache::{CacheConfig, Loaded, TwoTier};
use umcp_redis::{Redis, RedisConfig};
use umcp_testkit::redis::RedisServer;

const L1_GETS: u64 = 200_000;
const L2_KEYS: u64 = 5_000;

fn value() -> Result<Loaded, Infallible> {
    Ok(Loaded::Found(Bytes::from(vec![7u8; 512])))
}

fn report(name: &str, h: &Histogram<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    eprintln!(
        "{name}: n={} p50={:.2} µs p99={:.2} µs p99.9={:.2} µs max={:.2} µs",
        h.len(),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    );
}

async fn connect(server: &RedisServer) -> Redis {
    let config = RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    };
    Redis::connect(&config)
        .await
        .expect("valid config")
        .expect("redis configured")
}

/// The hit path before quick_cache, rebuilt here so both are measured in one run: the
/// generation under a lock, `format!("{generation}:{key}")`, a moka `future::Cache` get (TTL
/// per entry, weigher) and the staleness check under the lock again.
async fn previous_hit_path() {
    struct Ttl;
    impl moka::Expiry<String, (Bytes, Instant)> for Ttl {
        fn expire_after_create(
            &self,
            _key: &String,
            _value: &(Bytes, Instant),
            _now: Instant,
        ) -> Option<Duration> {
            Some(Duration::from_secs(60))
        }
    }
    let moka: moka::future::Cache<String, (Bytes, Instant)> = moka::future::Cache::builder()
        .max_capacity(64 << 20)
        .weigher(|k: &String, v: &(Bytes, Instant)| {
            u32::try_from(k.len() + v.0.len() + 96).unwrap_or(u32::MAX)
        })
        .expire_after(Ttl)
        .build();
    let state = parking_lot::Mutex::new((0u64, Instant::now()));
    moka.insert(
        "0:hot".to_owned(),
        (Bytes::from(vec![7u8; 512]), Instant::now()),
    )
    .await;
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..L1_GETS {
        let started = Instant::now();
        let generation = state.lock().0;
        let key = format!("{generation}:{}", std::hint::black_box("hot"));
        let got = moka.get(&key).await.expect("hit");
        let fresh = state.lock().1.elapsed() <= Duration::from_secs(1)
            || got.1.elapsed() < Duration::from_millis(50);
        std::hint::black_box((got, fresh));
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        h.record(ns).expect("record");
    }
    report("l1 hit, previous path (moka)", &h);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = RedisServer::start();
    let a = TwoTier::new(
        "bench",
        CacheConfig::default(),
        Some(connect(&server).await),
    )
    .await;
    let b = TwoTier::new(
        "bench",
        CacheConfig::default(),
        Some(connect(&server).await),
    )
    .await;

    a.get_with("hot", || async { value() }).await.expect("load");
    let mut l1 = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..L1_GETS {
        let started = Instant::now();
        let got = a.get_with("hot", || async { value() }).await.expect("hit");
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        assert!(got.is_some());
        l1.record(ns).expect("record");
    }
    report("l1 hit (512 B)", &l1);
    previous_hit_path().await;

    for i in 0..L2_KEYS {
        a.get_with(&format!("k{i}"), || async { value() })
            .await
            .expect("load");
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // write-backs are in the background
    let mut l2 = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..L2_KEYS {
        let started = Instant::now();
        b.get_with(&format!("k{i}"), || async { value() })
            .await
            .expect("l2 hit");
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        l2.record(ns).expect("record");
    }
    report("l2 hit (512 B)", &l2);
    let stats = b.stats();
    eprintln!("b: {stats:?}");
    assert_eq!(stats.l2_hits, L2_KEYS, "every b read was an l2 hit");
}
