//! `umcp-redis` against real servers: a standalone `redis-server` and a 3 + 3 cluster.

use std::time::{Duration, Instant};

use umcp_redis::fred::interfaces::KeysInterface;
use umcp_redis::{Redis, RedisConfig, RedisError};
use umcp_testkit::redis::{RedisCluster, RedisServer, cluster, standalone};

async fn connect(config: RedisConfig) -> Redis {
    Redis::connect(&config)
        .await
        .expect("valid config")
        .expect("redis configured")
}

fn standalone_config(url: String) -> RedisConfig {
    RedisConfig {
        url,
        ..RedisConfig::default()
    }
}

#[tokio::test]
async fn not_configured_is_none() {
    assert!(
        Redis::connect(&RedisConfig::default())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn standalone_set_get_under_the_bounds() {
    let redis = connect(standalone_config(standalone().url())).await;
    assert!(!redis.is_clustered());
    assert!(redis.is_available());
    let key = redis.key("test:standalone");
    redis
        .call("set", |c| async move {
            c.set::<(), _, _>(&key, "v1", None, None, false).await
        })
        .await
        .unwrap();
    let key = redis.key("test:standalone");
    let value: Option<String> = redis
        .call("get", |c| async move { c.get(&key).await })
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("v1"));
}

#[tokio::test]
async fn cluster_spreads_keys_over_every_master() {
    let cluster = cluster();
    let redis = connect(RedisConfig {
        cluster_nodes: cluster.node_list(),
        ..RedisConfig::default()
    })
    .await;
    assert!(redis.is_clustered());
    for i in 0..60 {
        let key = redis.key(&format!("test:cluster:{i}"));
        redis
            .call("set", |c| async move {
                c.set::<(), _, _>(&key, i, None, None, false).await
            })
            .await
            .unwrap();
    }
    // Every master holds some of the keys: routing by slot works.
    for master in cluster.masters() {
        let count: usize = cluster.nodes[master]
            .cli(&["dbsize"])
            .trim()
            .parse()
            .unwrap();
        assert!(count > 0, "master {master} holds no key");
    }
    let key = redis.key("test:cluster:7");
    let value: Option<i64> = redis
        .call("get", |c| async move { c.get(&key).await })
        .await
        .unwrap();
    assert_eq!(value, Some(7));
}

#[tokio::test]
async fn a_wrong_command_is_refused_not_an_outage() {
    let redis = connect(standalone_config(standalone().url())).await;
    let key = redis.key("test:wrongtype");
    let k = key.clone();
    redis
        .call("set", |c| async move {
            c.set::<(), _, _>(&k, "text", None, None, false).await
        })
        .await
        .unwrap();
    let err = redis
        .call("incr", |c| async move { c.incr::<i64, _>(&key).await })
        .await
        .unwrap_err();
    assert!(
        matches!(err, RedisError::Refused { op: "incr", .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_opens_the_breaker() {
    let mut server = RedisServer::start();
    let redis = connect(RedisConfig {
        breaker_open_ms: 60_000,
        ..standalone_config(server.url())
    })
    .await;
    server.kill();
    let mut open_at = None;
    for i in 0..40 {
        let started = Instant::now();
        let key = redis.key("test:dead");
        let result: Result<Option<String>, _> = redis
            .call("get", |c| async move { c.get(&key).await })
            .await;
        let err = result.expect_err("redis is dead");
        // Bounded: the command timeout (50 ms) plus scheduling, never a hang.
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        if matches!(err, RedisError::BreakerOpen) {
            open_at = Some(i);
            break;
        }
    }
    assert!(open_at.is_some(), "the breaker never opened");
    assert!(!redis.is_available());
}

#[tokio::test]
async fn start_up_with_redis_down_does_not_fail() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let redis = connect(RedisConfig {
        connect_timeout_ms: 200,
        ..standalone_config(format!("redis://127.0.0.1:{port}"))
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!redis.is_connected());
    let key = redis.key("x");
    let result: Result<Option<String>, _> = redis
        .call("get", |c| async move { c.get(&key).await })
        .await;
    assert!(result.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_calls_recover() {
    let mut cluster = RedisCluster::start();
    let redis = connect(RedisConfig {
        cluster_nodes: cluster.node_list(),
        breaker_open_ms: 100,
        ..RedisConfig::default()
    })
    .await;
    let keys: Vec<String> = (0..30)
        .map(|i| redis.key(&format!("test:failover:{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let key = key.clone();
        redis
            .call("set", |c| async move {
                c.set::<(), _, _>(&key, i, None, None, false).await
            })
            .await
            .unwrap();
    }
    // Let the replicas catch up (replication is asynchronous), then crash one master.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let master = cluster.masters()[0];
    cluster.nodes[master].kill();
    let started = Instant::now();
    let mut recovered_after = None;
    while started.elapsed() < Duration::from_secs(30) {
        let mut all_ok = true;
        for (i, key) in keys.iter().enumerate() {
            let call_started = Instant::now();
            let key = key.clone();
            let value: Result<Option<usize>, _> = redis
                .call("get", |c| async move { c.get(&key).await })
                .await;
            // During the failover every call is bounded: an error, never a hang.
            assert!(call_started.elapsed() < Duration::from_secs(2));
            match value {
                Ok(found) => assert_eq!(found, Some(i), "key {i} after failover"),
                Err(error) => {
                    if started.elapsed() > Duration::from_secs(25) {
                        eprintln!("key {i}: {error}; masters {:?}", cluster.masters());
                    }
                    all_ok = false;
                }
            }
        }
        if all_ok {
            recovered_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_after = recovered_after.expect("calls recover after the replica takes over");
    // For the record (the replica is promoted after the 1 s node timeout; ~3.4 s here).
    eprintln!("all keys readable again {recovered_after:?} after the master was killed");
    assert_eq!(cluster.masters().len(), 3, "a replica was promoted");
}
