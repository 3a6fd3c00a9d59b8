//! The Redis limiter against real servers (a standalone `redis-server` and a 3 + 3 cluster):
//! exactness under concurrency, independent keys, retry hints, script reloads and the
//! failure modes when Redis dies.

use std::time::Duration;

use umcp_ratelimit::{FailureMode, RateLimitConfig, RateLimiter, Rule, Source, Verdict};
use umcp_redis::{Redis, RedisConfig};
use umcp_testkit::redis::{RedisServer, cluster, standalone};

/// Generous bounds: these tests check what is decided, not how fast (a debug build on a
/// shared 2-core machine can miss the production 15 ms budget under 200 concurrent calls,
/// which would turn Redis decisions into local ones).
const PATIENT_MS: u64 = 2000;

async fn connect(config: RedisConfig) -> Redis {
    let config = RedisConfig {
        command_timeout_ms: PATIENT_MS,
        ..config
    };
    Redis::connect(&config)
        .await
        .expect("valid redis config")
        .expect("redis configured")
}

async fn standalone_redis() -> Redis {
    connect(RedisConfig {
        url: standalone().url(),
        ..RedisConfig::default()
    })
    .await
}

async fn cluster_redis() -> Redis {
    connect(RedisConfig {
        cluster_nodes: cluster().node_list(),
        ..RedisConfig::default()
    })
    .await
}

fn config(limit: u32, failure_mode: FailureMode) -> RateLimitConfig {
    RateLimitConfig {
        failure_mode,
        redis_timeout_ms: PATIENT_MS,
        ..RateLimitConfig::default()
    }
    .with_rule("execute", Some(Rule::per_minute(limit)))
}

/// `attempts` concurrent checks of one key; how many were admitted (all decided by Redis).
async fn admitted(limiter: &RateLimiter, principal: &str, attempts: usize) -> usize {
    let checks = (0..attempts).map(|_| {
        let limiter = limiter.clone();
        let principal = principal.to_owned();
        tokio::spawn(async move { limiter.check("execute", &principal).await })
    });
    let mut allowed = 0;
    for verdict in futures::future::join_all(checks).await {
        match verdict.expect("check task") {
            Verdict::Checked {
                outcome, source, ..
            } => {
                assert_eq!(source, Source::Redis, "decided by redis");
                allowed += usize::from(outcome.allowed);
            }
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_admits_exactly_the_limit_under_concurrency() {
    let limiter = RateLimiter::new(
        config(25, FailureMode::Closed),
        Some(standalone_redis().await),
    );
    assert_eq!(admitted(&limiter, "exact-standalone", 200).await, 25);
    let [allowed, limited, ..] = limiter.stats().snapshot();
    assert_eq!((allowed, limited), (25, 175));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admits_exactly_the_limit_under_concurrency() {
    let redis = cluster_redis().await;
    // Two limiters on one cluster stand for two gateway replicas.
    let a = RateLimiter::new(config(30, FailureMode::Closed), Some(redis.clone()));
    let b = RateLimiter::new(config(30, FailureMode::Closed), Some(redis));
    let (x, y) = tokio::join!(
        admitted(&a, "exact-cluster", 100),
        admitted(&b, "exact-cluster", 100)
    );
    assert_eq!(x + y, 30);
}

#[tokio::test]
async fn keys_are_independent_per_principal_and_class() {
    for redis in [standalone_redis().await, cluster_redis().await] {
        let clustered = redis.is_clustered();
        let limiter = RateLimiter::new(config(3, FailureMode::Closed), Some(redis));
        let principal = format!("independent-{clustered}");
        assert_eq!(admitted(&limiter, &principal, 10).await, 3);
        assert_eq!(
            admitted(&limiter, &format!("{principal}-other"), 10).await,
            3
        );
        // Another class of the same principal has its own budget.
        match limiter.check("query", &principal).await {
            Verdict::Checked { outcome, rule, .. } => {
                assert!(outcome.allowed);
                assert_eq!(outcome.remaining, u64::from(rule.limit) - 1);
            }
            other => panic!("unexpected verdict {other:?}"),
        }
        // A class without a rule is not counted at all.
        assert_eq!(
            limiter.check("internal", &principal).await,
            Verdict::Unlimited
        );
    }
}

/// Concurrent decisions leave in batches (one EVALSHA for many keys, repeats included): each
/// key still gets exactly its budget, and its admitted calls see every `remaining` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_decisions_stay_exact_per_key() {
    for redis in [standalone_redis().await, cluster_redis().await] {
        let clustered = redis.is_clustered();
        let limiter = RateLimiter::new(config(7, FailureMode::Closed), Some(redis));
        let checks = (0..20).flat_map(|p| (0..30).map(move |_| p)).map(|p| {
            let limiter = limiter.clone();
            let principal = format!("batched-{clustered}-{p}");
            tokio::spawn(async move { (p, limiter.check("execute", &principal).await) })
        });
        let mut remaining: Vec<Vec<u64>> = vec![Vec::new(); 20];
        for joined in futures::future::join_all(checks).await {
            let (p, verdict) = joined.expect("check task");
            let Verdict::Checked {
                outcome, source, ..
            } = verdict
            else {
                panic!("unexpected verdict {verdict:?}");
            };
            assert_eq!(source, Source::Redis, "decided by redis");
            if outcome.allowed {
                remaining[p].push(outcome.remaining);
            }
        }
        for mut seen in remaining {
            seen.sort_unstable();
            assert_eq!(seen, (0..7).collect::<Vec<u64>>(), "clustered={clustered}");
        }
    }
}

#[tokio::test]
async fn refusals_say_when_to_retry() {
    let limiter = RateLimiter::new(
        config(10, FailureMode::Closed),
        Some(standalone_redis().await),
    );
    assert_eq!(admitted(&limiter, "retry-hint", 10).await, 10);
    let Verdict::Checked { outcome, .. } = limiter.check("execute", "retry-hint").await else {
        panic!("checked");
    };
    assert!(!outcome.allowed);
    assert_eq!(outcome.remaining, 0);
    // 10 per minute: the next slot opens 6 s after the burst started.
    assert!(outcome.retry_after > Duration::from_secs(4), "{outcome:?}");
    assert!(outcome.retry_after <= Duration::from_secs(6), "{outcome:?}");
    assert!(outcome.reset_after > Duration::from_secs(58), "{outcome:?}");
    assert!(
        outcome.reset_after <= Duration::from_secs(60),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_script_is_reloaded_after_script_flush() {
    let redis = standalone_redis().await;
    let limiter = RateLimiter::new(config(5, FailureMode::Closed), Some(redis));
    assert_eq!(admitted(&limiter, "reload-standalone", 2).await, 2);
    assert!(standalone().cli(&["script", "flush"]).contains("OK"));
    assert_eq!(admitted(&limiter, "reload-standalone", 5).await, 3);

    let limiter = RateLimiter::new(config(5, FailureMode::Closed), Some(cluster_redis().await));
    assert_eq!(admitted(&limiter, "reload-cluster", 2).await, 2);
    for node in &cluster().nodes {
        assert!(node.cli(&["script", "flush"]).contains("OK"));
    }
    assert_eq!(admitted(&limiter, "reload-cluster", 5).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_falls_back_as_configured() {
    let mut server = RedisServer::start();
    let redis = connect(RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    })
    .await;
    let limiter = |mode| {
        let mut config = config(2, mode);
        // Production bounds once Redis is gone: the decision must not wait for it.
        config.redis_timeout_ms = 15;
        RateLimiter::new(config, Some(redis.clone()))
    };
    let (local, open, closed) = (
        limiter(FailureMode::Local),
        limiter(FailureMode::Open),
        limiter(FailureMode::Closed),
    );
    for l in [&local, &open, &closed] {
        assert!(matches!(
            l.check("execute", "before").await,
            Verdict::Checked {
                source: Source::Redis,
                ..
            }
        ));
    }
    server.kill();

    // Local: the in-process budget of this replica (2), then refusals.
    let mut sources = Vec::new();
    for _ in 0..4 {
        if let Verdict::Checked {
            outcome, source, ..
        } = local.check("execute", "after").await
        {
            sources.push((source, outcome.allowed));
        }
    }
    assert_eq!(
        sources,
        [
            (Source::Local, true),
            (Source::Local, true),
            (Source::Local, false),
            (Source::Local, false)
        ]
    );
    assert_eq!(local.stats().snapshot()[3], 4, "fallback_local counted");

    // Open: everything admitted unchecked.
    for _ in 0..4 {
        assert!(matches!(
            open.check("execute", "after").await,
            Verdict::Checked { source: Source::FailOpen, outcome, .. } if outcome.allowed
        ));
    }
    assert_eq!(open.stats().snapshot()[4], 4, "fallback_open counted");

    // Closed: refused as unavailable.
    for _ in 0..4 {
        assert!(matches!(
            closed.check("execute", "after").await,
            Verdict::Unavailable { .. }
        ));
    }
    assert_eq!(closed.stats().snapshot()[5], 4, "fallback_closed counted");
}

#[tokio::test]
async fn without_redis_the_local_limiter_decides() {
    let limiter = RateLimiter::new(config(4, FailureMode::Closed), None);
    let mut allowed = 0;
    for _ in 0..10 {
        match limiter.check("execute", "no-redis").await {
            Verdict::Checked {
                outcome, source, ..
            } => {
                assert_eq!(source, Source::Local);
                allowed += usize::from(outcome.allowed);
            }
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    assert_eq!(allowed, 4);
    // No Redis configured is not a failure: nothing counted as a fallback.
    assert_eq!(limiter.stats().snapshot()[3..], [0, 0, 0]);
}

#[tokio::test]
async fn disabled_limits_check_nothing() {
    let config = RateLimitConfig {
        enabled: false,
        ..config(1, FailureMode::Closed)
    };
    let limiter = RateLimiter::new(config, None);
    for _ in 0..5 {
        assert_eq!(limiter.check("execute", "off").await, Verdict::Unlimited);
    }
}

mod layer {
    //! The tower layer around a stand-in inner service: what a caller sees.

    use std::convert::Infallible;

    use http::{Request, Response};
    use tonic::body::Body;
    use tonic::transport::server::TcpConnectInfo;
    use tower::{Service, ServiceExt};
    use umcp_audit_client::Emitter;
    use umcp_ratelimit::{FailureMode, RateLimitConfig, RateLimitLayer, RateLimiter, Rule};

    const LOGIN: &str = "/umcp.auth.v1.AuthService/Login";

    type Inner = tower::util::BoxCloneService<Request<Body>, Response<Body>, Infallible>;

    fn inner() -> Inner {
        tower::util::BoxCloneService::new(tower::service_fn(|_request: Request<Body>| async {
            Ok::<_, Infallible>(tonic::Status::ok("").into_http::<Body>())
        }))
    }

    fn service(
        config: RateLimitConfig,
        redis: Option<umcp_redis::Redis>,
    ) -> umcp_ratelimit::RateLimit<Inner> {
        let layer =
            RateLimitLayer::new(RateLimiter::new(config, redis), Emitter::new(None, "test"));
        tower::Layer::layer(&layer, inner())
    }

    fn request(path: &str, peer: &str) -> Request<Body> {
        let mut request = Request::builder().uri(path).body(Body::empty()).unwrap();
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().unwrap()),
        });
        request
    }

    async fn call(
        service: &mut umcp_ratelimit::RateLimit<Inner>,
        path: &str,
        peer: &str,
    ) -> Response<Body> {
        service
            .ready()
            .await
            .unwrap()
            .call(request(path, peer))
            .await
            .unwrap()
    }

    fn header(response: &Response<Body>, name: &str) -> Option<String> {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The decoded `grpc-message`.
    fn message(response: &Response<Body>) -> String {
        tonic::Status::from_header_map(response.headers())
            .map(|s| s.message().to_owned())
            .unwrap_or_default()
    }

    fn sign_in(limit: u32, shadow: bool) -> RateLimitConfig {
        RateLimitConfig::default().with_rule(
            "sign_in",
            Some(Rule {
                limit,
                period_secs: 60,
                shadow,
            }),
        )
    }

    #[tokio::test]
    async fn over_the_limit_is_resource_exhausted_with_metadata() {
        let mut service = service(sign_in(2, false), None);
        for remaining in ["1", "0"] {
            let admitted = call(&mut service, LOGIN, "192.0.2.1:1000").await;
            assert_eq!(header(&admitted, "grpc-status").as_deref(), Some("0"));
            assert_eq!(header(&admitted, "x-ratelimit-limit").as_deref(), Some("2"));
            assert_eq!(
                header(&admitted, "x-ratelimit-remaining").as_deref(),
                Some(remaining)
            );
        }
        // Another port of the same address is the same client.
        let refused = call(&mut service, LOGIN, "192.0.2.1:2000").await;
        assert_eq!(
            header(&refused, "grpc-status").as_deref(),
            Some("8"),
            "RESOURCE_EXHAUSTED"
        );
        let message = message(&refused);
        assert!(
            message.contains("sign_in") && message.contains("2 per 60 s"),
            "{message}"
        );
        assert_eq!(header(&refused, "retry-after").as_deref(), Some("30"));
        assert_eq!(
            header(&refused, "x-ratelimit-remaining").as_deref(),
            Some("0")
        );
        assert_eq!(header(&refused, "x-ratelimit-reset").as_deref(), Some("60"));
        // Another address has its own budget; infrastructure paths are never limited.
        let other = call(&mut service, LOGIN, "192.0.2.2:1000").await;
        assert_eq!(header(&other, "grpc-status").as_deref(), Some("0"));
        for _ in 0..5 {
            let health = call(
                &mut service,
                "/grpc.health.v1.Health/Check",
                "192.0.2.1:1000",
            )
            .await;
            assert_eq!(header(&health, "x-ratelimit-limit"), None);
        }
    }

    #[tokio::test]
    async fn a_shadow_rule_admits_and_counts() {
        let config = sign_in(1, true);
        let limiter = RateLimiter::new(config, None);
        let layer = RateLimitLayer::new(limiter.clone(), Emitter::new(None, "test"));
        let mut service = tower::Layer::layer(&layer, inner());
        for _ in 0..3 {
            let response = call(&mut service, LOGIN, "192.0.2.3:1000").await;
            assert_eq!(header(&response, "grpc-status").as_deref(), Some("0"));
        }
        let [allowed, limited, shadow_limited, ..] = limiter.stats().snapshot();
        assert_eq!((allowed, limited, shadow_limited), (1, 0, 2));
    }

    #[tokio::test]
    async fn closed_with_redis_down_is_unavailable_naming_the_limiter() {
        let mut server = umcp_testkit::redis::RedisServer::start();
        let redis = umcp_redis::Redis::connect(&umcp_redis::RedisConfig {
            url: server.url(),
            ..umcp_redis::RedisConfig::default()
        })
        .await
        .unwrap()
        .unwrap();
        server.kill();
        let config = RateLimitConfig {
            failure_mode: FailureMode::Closed,
            ..sign_in(5, false)
        };
        let mut service = service(config, Some(redis));
        let refused = call(&mut service, LOGIN, "192.0.2.4:1000").await;
        assert_eq!(
            header(&refused, "grpc-status").as_deref(),
            Some("14"),
            "UNAVAILABLE"
        );
        let message = message(&refused);
        assert!(message.contains("rate limiter"), "{message}");
    }
}

/// A master of a fresh 3 + 3 cluster is killed while four callers check keys on every slot:
/// every check is still answered (locally while the slot has no master), none waits longer
/// than the budget allows, and Redis decides every key again once the replica took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_under_load_keeps_deciding_and_recovers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let mut cluster = umcp_testkit::redis::RedisCluster::start();
    let redis = connect(RedisConfig {
        cluster_nodes: cluster.node_list(),
        breaker_open_ms: 200,
        ..RedisConfig::default()
    })
    .await;
    // A budget a debug build meets while Redis is healthy; the decision never waits longer.
    let mut config = config(1_000_000, FailureMode::Local);
    config.redis_timeout_ms = 200;
    let limiter = RateLimiter::new(config, Some(redis));
    let principals: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // (when decided, how long it took, who, by whom)
    type Log = Vec<(Instant, Duration, String, Source)>;
    let log: Arc<parking_lot::Mutex<Log>> = Arc::default();
    let callers: Vec<_> = (0..4)
        .map(|n| {
            let (limiter, stop, log) = (limiter.clone(), Arc::clone(&stop), Arc::clone(&log));
            let mine: Vec<String> = principals.iter().skip(n).step_by(4).cloned().collect();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for principal in &mine {
                        let call = Instant::now();
                        let verdict = limiter.check("execute", principal).await;
                        let Verdict::Checked {
                            source, outcome, ..
                        } = verdict
                        else {
                            panic!("local mode must always decide: {verdict:?}");
                        };
                        assert!(outcome.allowed, "far below the limit");
                        let entry = (Instant::now(), call.elapsed(), principal.clone(), source);
                        log.lock().push(entry);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let master = cluster.masters()[0];
    let killed_at = Instant::now();
    cluster.nodes[master].kill();
    // Recovered: after the last local decision, every key was decided by Redis again.
    let recovered = umcp_testkit::eventually(Duration::from_secs(30), || {
        let (log, principals) = (Arc::clone(&log), principals.clone());
        async move {
            let log = log.lock();
            let Some(last_local) = log.iter().rev().find(|e| e.3 == Source::Local) else {
                return false;
            };
            principals.iter().all(|p| {
                log.iter()
                    .any(|e| e.0 > last_local.0 && &e.2 == p && e.3 == Source::Redis)
            })
        }
    })
    .await;
    let recovered_after = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("a caller panicked");
    }
    assert!(
        recovered,
        "redis never decided every key again after the failover"
    );
    let log = log.lock();
    let local = log.iter().filter(|e| e.3 == Source::Local).count();
    let slowest = log.iter().map(|e| e.1).max().unwrap_or_default();
    eprintln!(
        "{} decisions, {local} local during the failover, slowest {slowest:?}, every key on redis again within {recovered_after:?} of the kill",
        log.len()
    );
    // Bounded: the 200 ms budget plus scheduling on a busy machine, never a hang.
    assert!(
        slowest < Duration::from_secs(2),
        "a decision waited {slowest:?}"
    );
}
