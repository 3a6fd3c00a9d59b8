//! `TwoTier` against real `redis-server`s: one test binary.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use umcp_cache::{CacheConfig, Loaded, TwoTier};
use umcp_redis::{Redis, RedisConfig};
use umcp_testkit::eventually;
use umcp_testkit::redis::{RedisServer, standalone};

/// Generous bound for "eventually" checks: long enough that a loaded machine cannot flake.
const PATIENCE: Duration = Duration::from_secs(5);

async fn redis_at(url: String) -> Redis {
    let config = RedisConfig {
        url,
        ..RedisConfig::default()
    };
    Redis::connect(&config)
        .await
        .expect("valid redis config")
        .expect("redis configured")
}

fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loader that counts its calls and answers `value`.
async fn load_counted(
    calls: &AtomicU64,
    value: &'static str,
    delay: Duration,
) -> Result<Loaded, Infallible> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    Ok(Loaded::Found(Bytes::from_static(value.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_miss_and_single_flight() {
    let redis = redis_at(standalone().url()).await;
    let cache = TwoTier::new(&unique("flight"), CacheConfig::default(), Some(redis)).await;
    let calls = Arc::new(AtomicU64::new(0));
    let gets = (0..200).map(|_| {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            cache
                .get_with("k", || {
                    load_counted(&calls, "v", Duration::from_millis(100))
                })
                .await
        })
    });
    for get in futures_join(gets).await {
        assert_eq!(get.expect("no error"), Some(Bytes::from_static(b"v")));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "200 concurrent misses, one load"
    );
    let again = cache
        .get_with("k", || load_counted(&calls, "other", Duration::ZERO))
        .await
        .expect("hit");
    assert_eq!(again, Some(Bytes::from_static(b"v")));
    // older than the staleness bound, still served: the generation is confirmed every 25 ms
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = cache
        .get_with("k", || load_counted(&calls, "other", Duration::ZERO))
        .await
        .expect("hit");
    assert_eq!(later, Some(Bytes::from_static(b"v")));
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.misses), (1, 1), "{stats:?}");
    assert_eq!(stats.l1_hits, 201, "{stats:?}");
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_entries_expire_and_errors_are_not_cached() {
    let redis = redis_at(standalone().url()).await;
    let config = CacheConfig {
        negative_ttl_ms: 150,
        ..CacheConfig::default()
    };
    let cache = TwoTier::new(&unique("negative"), config, Some(redis)).await;
    let calls = AtomicU64::new(0);
    let missing = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(Loaded::Missing)
    };
    assert_eq!(cache.get_with("gone", missing).await.expect("ok"), None);
    assert_eq!(cache.get_with("gone", missing).await.expect("ok"), None);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the negative answer is cached"
    );
    let found = eventually(PATIENCE, || async {
        let got = cache
            .get_with("gone", || async {
                Ok::<_, Infallible>(Loaded::Found(Bytes::from_static(b"now")))
            })
            .await
            .expect("ok");
        got.is_some()
    })
    .await;
    assert!(found, "the negative entry expired (L1 and L2)");

    let failing = || async { Err::<Loaded, _>("store down") };
    let err = cache
        .get_with("err", failing)
        .await
        .expect_err("loader error");
    assert_eq!(*err, "store down");
    let ok = cache
        .get_with("err", || async {
            Ok::<_, &str>(Loaded::Found(Bytes::from_static(b"back")))
        })
        .await
        .expect("the error was not cached");
    assert_eq!(ok, Some(Bytes::from_static(b"back")));
    assert_eq!(cache.stats().load_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_is_shared_and_invalidation_reaches_the_other_instance() {
    let ns = unique("shared");
    let a = TwoTier::new(
        &ns,
        CacheConfig::default(),
        Some(redis_at(standalone().url()).await),
    )
    .await;
    let b = TwoTier::new(
        &ns,
        CacheConfig::default(),
        Some(redis_at(standalone().url()).await),
    )
    .await;
    let calls = AtomicU64::new(0);
    let got = a
        .get_with("k", || load_counted(&calls, "v1", Duration::ZERO))
        .await
        .expect("ok");
    assert_eq!(got, Some(Bytes::from_static(b"v1")));
    let l2_key = a.l2_key("k").expect("redis");
    let written = eventually(PATIENCE, || async {
        !standalone().cli(&["get", &l2_key]).trim().is_empty()
    })
    .await;
    assert!(written, "a's load was written back to L2 ({l2_key})");
    let from_b = b
        .get_with("k", || load_counted(&calls, "b-loaded", Duration::ZERO))
        .await
        .expect("ok");
    assert_eq!(
        from_b,
        Some(Bytes::from_static(b"v1")),
        "b answered from L2"
    );
    assert_eq!((b.stats().l2_hits, b.stats().loads), (1, 0));

    a.invalidate_all().await;
    assert_eq!(a.stats().generation, b.stats().generation.max(1));
    let fresh = eventually(PATIENCE, || async {
        let got = b
            .get_with("k", || load_counted(&calls, "v2", Duration::ZERO))
            .await
            .expect("ok");
        got == Some(Bytes::from_static(b"v2"))
    })
    .await;
    assert!(fresh, "b dropped the old generation");
    assert_eq!(a.stats().generation, b.stats().generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_midway_keeps_answering() {
    let mut server = RedisServer::start();
    let cache = TwoTier::new(
        &unique("killed"),
        CacheConfig::default(),
        Some(redis_at(server.url()).await),
    )
    .await;
    let calls = AtomicU64::new(0);
    for i in 0..5 {
        let key = format!("k{i}");
        let got = cache
            .get_with(&key, || load_counted(&calls, "v", Duration::ZERO))
            .await
            .expect("ok");
        assert!(got.is_some());
    }
    server.kill();
    // The generation cannot be confirmed any more: entries older than the bound are not served.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reloaded = cache
        .get_with("k0", || load_counted(&calls, "fresh", Duration::ZERO))
        .await
        .expect("never an error without redis");
    assert_eq!(
        reloaded,
        Some(Bytes::from_static(b"fresh")),
        "no stale L1 answer"
    );
    let bounded = tokio::time::timeout(Duration::from_secs(10), async {
        for round in 0..40 {
            let key = format!("k{}", round % 10);
            let got = cache
                .get_with(&key, || load_counted(&calls, "v", Duration::ZERO))
                .await
                .expect("never an error without redis");
            assert!(got.is_some());
            if round % 10 == 0 {
                cache.invalidate_all().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(bounded.is_ok(), "calls stayed bounded with redis down");
    let stats = cache.stats();
    assert!(stats.redis_errors > 0, "{stats:?}");
    assert!(stats.loads > 5, "answers came from the loader: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_generation_is_local() {
    let cache = TwoTier::new("local", CacheConfig::default(), None).await;
    let calls = AtomicU64::new(0);
    for _ in 0..3 {
        cache
            .get_with("k", || load_counted(&calls, "v", Duration::ZERO))
            .await
            .expect("ok");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    cache.invalidate_all().await;
    cache
        .get_with("k", || load_counted(&calls, "v", Duration::ZERO))
        .await
        .expect("ok");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_generation_stays_confirmed() {
    let config = RedisConfig {
        cluster_nodes: umcp_testkit::redis::cluster().node_list(),
        ..RedisConfig::default()
    };
    let redis = Redis::connect(&config)
        .await
        .expect("config")
        .expect("redis");
    let cache = TwoTier::new(&unique("cluster"), CacheConfig::default(), Some(redis)).await;
    let calls = AtomicU64::new(0);
    for _ in 0..2 {
        cache
            .get_with("k", || load_counted(&calls, "v", Duration::ZERO))
            .await
            .expect("ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.l1_hits), (1, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_resets_the_generation_everywhere() {
    let server = RedisServer::start();
    let ns = unique("flush");
    let a = TwoTier::new(
        &ns,
        CacheConfig::default(),
        Some(redis_at(server.url()).await),
    )
    .await;
    let b = TwoTier::new(
        &ns,
        CacheConfig::default(),
        Some(redis_at(server.url()).await),
    )
    .await;
    for _ in 0..3 {
        a.invalidate_all().await;
    }
    let calls = AtomicU64::new(0);
    let synced = eventually(PATIENCE, || async { b.stats().generation == 3 }).await;
    assert!(synced, "b follows a's bumps");
    b.get_with("k", || load_counted(&calls, "old", Duration::ZERO))
        .await
        .expect("ok");
    assert_eq!(server.cli(&["flushall"]).trim(), "OK");
    // Redis lost the counter: b takes the smaller generation and drops what it had.
    let reset = eventually(PATIENCE, || async { b.stats().generation == 0 }).await;
    assert!(reset, "b adopted the reset generation: {:?}", b.stats());
    let got = b
        .get_with("k", || load_counted(&calls, "new", Duration::ZERO))
        .await
        .expect("ok");
    assert_eq!(got, Some(Bytes::from_static(b"new")));
}

/// A master of a fresh 3 + 3 cluster is killed while two replicas of one cache serve reads
/// and one of them keeps writing: no read errors or hangs, and after every acknowledged write
/// the other replica answers the new value once the staleness bound has passed — during the
/// failover too (a replica that cannot confirm its generation stops trusting old entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_under_load_keeps_the_bound_and_recovers() {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    let mut cluster = umcp_testkit::redis::RedisCluster::start();
    let connect = || async {
        let config = RedisConfig {
            cluster_nodes: cluster.node_list(),
            breaker_open_ms: 200,
            ..RedisConfig::default()
        };
        Redis::connect(&config)
            .await
            .expect("valid")
            .expect("configured")
    };
    let namespace = unique("failover");
    let writer = TwoTier::new(&namespace, CacheConfig::default(), Some(connect().await)).await;
    let reader = TwoTier::new(&namespace, CacheConfig::default(), Some(connect().await)).await;
    let version = Arc::new(AtomicU64::new(1));
    let keys: Vec<String> = (0..12).map(|i| format!("key-{i}")).collect();
    let get = |cache: &TwoTier, key: String, version: Arc<AtomicU64>| {
        let cache = cache.clone();
        async move {
            let started = Instant::now();
            let got = cache
                .get_with(&key, || async move {
                    let v = version.load(Ordering::SeqCst).to_string();
                    Ok::<_, Infallible>(Loaded::Found(Bytes::from(v)))
                })
                .await
                .expect("a cache read never fails");
            assert!(started.elapsed() < Duration::from_secs(2), "a read hung");
            String::from_utf8(got.expect("found").to_vec()).expect("utf-8")
        }
    };
    // Background readers on both replicas, over keys on every master.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = [writer.clone(), reader.clone()]
        .into_iter()
        .map(|cache| {
            let (stop, keys, version) = (Arc::clone(&stop), keys.clone(), Arc::clone(&version));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for key in &keys {
                        get(&cache, key.clone(), Arc::clone(&version)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let mut killed_at = None;
    let mut stale = Vec::new();
    let started = Instant::now();
    let mut errors_seen = 0;
    while started.elapsed() < Duration::from_secs(12) {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            let master = cluster.masters()[0];
            cluster.nodes[master].kill();
            killed_at = Some(Instant::now());
        }
        // A write: the store changed (new version), then the cache is told, then acknowledged.
        let now = version.fetch_add(1, Ordering::SeqCst) + 1;
        writer.invalidate_all().await;
        // Past the 50 ms bound (plus the 25 ms poll), the other replica must answer `now`.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for key in &keys {
            let seen = get(&reader, key.clone(), Arc::clone(&version)).await;
            if seen.parse::<u64>().expect("a version") < now {
                stale.push((started.elapsed(), key.clone(), seen, now));
            }
        }
        errors_seen = reader.stats().redis_errors + writer.stats().redis_errors;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a reader panicked");
    }
    assert!(stale.is_empty(), "stale answers past the bound: {stale:?}");
    assert!(errors_seen > 0, "the failover was never noticed");
    // Recovered: after a write, what the writer loaded reaches the reader through Redis for
    // every key (L2 hits), i.e. every slot has a master again.
    let recovered = eventually(Duration::from_secs(20), || async {
        writer.invalidate_all().await;
        for key in &keys {
            get(&writer, key.clone(), Arc::clone(&version)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = reader.stats().l2_hits;
        for key in &keys {
            get(&reader, key.clone(), Arc::clone(&version)).await;
        }
        reader.stats().l2_hits == before + keys.len() as u64
    })
    .await;
    assert!(
        recovered,
        "L2 never served every key again: {:?}",
        reader.stats()
    );
    eprintln!(
        "failover: {errors_seen} redis errors answered without redis, no stale read; L2 serving every key again (checked {:?} after the kill)",
        killed_at.map(|k| k.elapsed())
    );
}
