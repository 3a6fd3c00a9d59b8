//! The gateway's backend clients on real servers: the breaker around a graph service that is
//! killed and restarted, deadlines against a slow backend, which calls are retried, and
//! balancing over several endpoints.

mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use umcp_authz::permissions::Role;
use umcp_gateway::GatewayConfig;
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use umcp_proto::execution::v1::{
    ExecuteRequest, GenerateCodeRequest, LintRequest, RunTestsRequest,
};
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{GetMetricsRequest, QueryRequest};
use umcp_resilience::balance::{BalanceConfig, BalancedChannel, StaticResolver};
use umcp_testkit::issuer::TestIssuer;
use umcp_testkit::{Spawned, authed, eventually};

use fake::{Answer, Fake, Plan};

const GRAPH: &str = "umcp.graph.v1.GraphService";
const LINT: &str = "/umcp.execution.v1.ExecutionService/Lint";
const RUN_TESTS: &str = "/umcp.execution.v1.ExecutionService/RunTests";

/// A gateway with only the backends `configure` sets, no authentication of its own.
async fn gateway(configure: impl FnOnce(&mut GatewayConfig)) -> Spawned {
    let mut config = GatewayConfig::default();
    config.backends.auth = String::new();
    config.backends.graph = String::new();
    config.backends.execution = String::new();
    config.backends.audit = String::new();
    config.health_interval_ms = 100;
    configure(&mut config);
    Spawned::start(|listener, shutdown| {
        umcp_gateway::serve(
            listener,
            config,
            None,
            umcp_audit_client::Emitter::new(None, "gateway"),
            None,
            shutdown.wait(),
        )
    })
    .await
}

/// The real graph service on `127.0.0.1:port` (0: any), so it can come back on the same port.
async fn graph_on(port: u16, dir: &std::path::Path, issuer: &TestIssuer) -> Spawned {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = umcp_graph::GraphConfig {
        data_dir: dir.to_path_buf(),
        ..umcp_graph::GraphConfig::default()
    };
    let wiring = umcp_graph::Wiring::unaudited(issuer.verifier(), "graph");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        umcp_graph::serve(listener, config, wiring, async {
            let _ = rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    Spawned::adopt(addr, tx, handle)
}

async fn health(gateway: &Spawned, service: &str) -> Option<i32> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(Duration::from_secs(1));
    let response = HealthClient::new(gateway.channel()).check(request).await;
    response.ok().map(|r| r.into_inner().status)
}

fn plan(f: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Plan {
    Arc::new(f)
}

#[tokio::test]
async fn the_breaker_opens_when_graph_dies_and_closes_when_it_returns() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let graph = graph_on(0, dir.path(), &issuer).await;
    let port = graph.addr.port();
    let url = graph.url();
    let gw = gateway(|c| {
        c.backends.graph = url;
        c.upstream.breaker_window = 10;
        c.upstream.breaker_min_calls = 5;
        c.upstream.breaker_open_ms = 200;
        c.upstream.breaker_half_open_calls = 2;
    })
    .await;
    let admin = issuer.bearer("admin-1", &[Role::Admin]);
    let client = GraphServiceClient::new(authed(gw.channel(), admin));
    client
        .clone()
        .get_metrics(GetMetricsRequest {})
        .await
        .unwrap();

    // Load from four callers for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (mut client, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(GetMetricsRequest {});
                    request.set_timeout(Duration::from_secs(1));
                    let _ = client.get_metrics(request).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    graph.stop().await.unwrap();
    let refused = Arc::new(parking_lot::Mutex::new(None));
    let opened = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let refused = Arc::clone(&refused);
        async move {
            let started = Instant::now();
            let Err(status) = client.get_metrics(GetMetricsRequest {}).await else {
                return false;
            };
            let open = status.code() == Code::Unavailable
                && status.message().contains("circuit breaker open");
            if open {
                *refused.lock() = Some((status, started.elapsed()));
            }
            open
        }
    })
    .await;
    assert!(opened, "the breaker never refused a call");
    let (status, took) = refused.lock().take().unwrap();
    assert!(
        status.message().contains(GRAPH) && status.message().contains("backend `graph`"),
        "the refusal must name the dependency: {}",
        status.message()
    );
    assert!(
        status.message().contains("retry after"),
        "{}",
        status.message()
    );
    assert!(
        took < Duration::from_secs(1),
        "a refusal must not wait: {took:?}"
    );
    let down = eventually(Duration::from_secs(5), || async {
        health(&gw, GRAPH).await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    assert!(down, "health must show the graph service NOT_SERVING");

    let graph = graph_on(port, dir.path(), &issuer).await;
    let recovered = eventually(Duration::from_secs(10), || async {
        client
            .clone()
            .get_metrics(GetMetricsRequest {})
            .await
            .is_ok()
            && health(&gw, GRAPH).await == Some(ServingStatus::Serving as i32)
    })
    .await;
    assert!(recovered, "calls must succeed again once graph is back");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    drop(graph);
}

#[tokio::test]
async fn a_slow_backend_gets_the_callers_deadline_and_no_retry_storm() {
    let slow = Fake::start(0, plan(|_, _| Answer::Sleep(Duration::from_secs(10)))).await;
    let url = slow.url();
    let gw = gateway(|c| c.backends.graph = url).await;
    let client = GraphServiceClient::new(gw.channel());
    let offered = 20;
    let calls = (0..offered).map(|_| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(QueryRequest {
                cypher: "MATCH (n) RETURN n".into(),
                ..QueryRequest::default()
            });
            request.set_timeout(Duration::from_millis(300));
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(5), client.query(request))
                .await
                .expect("the gateway must answer at the caller's deadline, not hang");
            (result.map(|_| ()), started.elapsed())
        }
    });
    for (result, took) in futures::future::join_all(calls).await {
        let status = result.expect_err("the backend never answers in time");
        // tonic's client channel also enforces the `grpc-timeout` it sends (as CANCELLED) and
        // races the gateway's DEADLINE_EXCEEDED; either way the deadline was kept.
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "the deadline was not kept: {took:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Health checks reach the backend too; count only the calls offered.
    let upstream = slow.count("/umcp.graph.v1.GraphService/Query");
    assert!(
        upstream * 10 <= offered * 12,
        "{upstream} upstream requests for {offered} calls"
    );
}

#[tokio::test]
async fn only_deadlines_a_backend_should_meet_count_against_its_breaker() {
    let slow = Fake::start(0, plan(|_, _| Answer::Sleep(Duration::from_secs(10)))).await;
    let url = slow.url();
    let gw = gateway(|c| {
        c.backends.graph = url;
        c.upstream.breaker_window = 10;
        c.upstream.breaker_min_calls = 5;
        c.upstream.breaker_open_ms = 60_000;
        c.upstream.counted_deadline_min_ms = 500;
        c.upstream.retry_attempts = 1;
    })
    .await;
    let client = GraphServiceClient::new(gw.channel());
    let call = |deadline: Duration| {
        let mut client = client.clone();
        async move {
            let mut request = tonic::Request::new(QueryRequest {
                cypher: "MATCH (n) RETURN n".into(),
                ..QueryRequest::default()
            });
            request.set_timeout(deadline);
            tokio::time::timeout(Duration::from_secs(5), client.query(request))
                .await
                .expect("the gateway must answer at the caller's deadline")
                .expect_err("the backend never answers in time")
        }
    };
    let breaker_open = |status: &tonic::Status| status.message().contains("circuit breaker open");
    // Callers asking for 100 ms, below the 500 ms floor: their expiries are not the backend's
    // fault, so the breaker stays closed and every call still reaches the backend.
    for _ in 0..10 {
        let status = call(Duration::from_millis(100)).await;
        assert!(!breaker_open(&status), "{status:?}");
    }
    assert_eq!(slow.count("/umcp.graph.v1.GraphService/Query"), 10);
    // Budgets of 600 ms the backend misses count: the breaker opens (after the 5 calls it needs
    // to decide; a few more allowed, as the caller's own timer can end a call before the
    // gateway records it).
    let mut refused = None;
    for _ in 0..20 {
        let status = call(Duration::from_millis(600)).await;
        if breaker_open(&status) {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("600 ms deadlines the backend misses must open the breaker");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn safe_calls_are_retried_once_and_side_effecting_ones_never() {
    let backend = Fake::start(
        0,
        plan(|path, n| match path.rsplit('/').next() {
            Some("GenerateCode") => Answer::UnavailableAfterHeaders,
            Some("Execute") if n < 2 => Answer::Unavailable,
            _ if n == 0 => Answer::Unavailable,
            _ => Answer::Ok,
        }),
    )
    .await;
    let url = backend.url();
    let gw = gateway(|c| c.backends.execution = url).await;
    let mut client = ExecutionServiceClient::new(gw.channel());
    let path = |m: &str| format!("/umcp.execution.v1.ExecutionService/{m}");

    // Lint reads only: the UNAVAILABLE (before any response) is retried and succeeds.
    client.lint(LintRequest::default()).await.unwrap();
    assert_eq!(backend.count(&path("Lint")), 2);

    // RunTests acts every time: never retried.
    let status = client
        .run_tests(RunTestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(backend.count(&path("RunTests")), 1);

    // Execute is retried only with an idempotency key.
    let status = client.execute(ExecuteRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(backend.count(&path("Execute")), 1);
    let mut keyed = tonic::Request::new(ExecuteRequest {
        idempotency_key: "k-1".into(),
        ..ExecuteRequest::default()
    });
    keyed
        .metadata_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    client.execute(keyed).await.unwrap();
    assert_eq!(backend.count(&path("Execute")), 3);

    // An UNAVAILABLE after the response headers is committed: never retried.
    let status = client
        .generate_code(GenerateCodeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(backend.count(&path("GenerateCode")), 1);
}

#[tokio::test]
async fn a_safe_call_is_retried_across_a_backend_restart_and_an_unsafe_one_is_not() {
    let ok = || plan(|_, _| Answer::Ok);
    let (safe, unsafe_) = (Fake::start(0, ok()).await, Fake::start(0, ok()).await);
    let config = |url: String| {
        move |c: &mut GatewayConfig| {
            c.backends.execution = url;
            // One connection, so the call meets the restart; no health check takes it first.
            c.upstream.connections_per_endpoint = 1;
            c.upstream.retry_attempts = 3;
            c.health_interval_ms = 60_000;
        }
    };
    let gw_safe = gateway(config(safe.url())).await;
    let gw_unsafe = gateway(config(unsafe_.url())).await;
    let mut lint = ExecutionServiceClient::new(gw_safe.channel());
    let mut run = ExecutionServiceClient::new(gw_unsafe.channel());
    lint.lint(LintRequest::default()).await.unwrap();
    run.run_tests(RunTestsRequest::default()).await.unwrap();

    // Both backends restart on their ports; the first connection each accepts dies unanswered.
    let (safe_port, unsafe_port) = (safe.addr.port(), unsafe_.addr.port());
    safe.stop().await;
    unsafe_.stop().await;
    let safe = Fake::start_dropping(safe_port, ok(), 1).await;
    let unsafe_ = Fake::start_dropping(unsafe_port, ok(), 1).await;

    // Lint: the attempt on the dead connection fails before any answer; the retry reconnects
    // and is the only request the restarted backend sees.
    lint.lint(LintRequest::default()).await.unwrap();
    assert_eq!(safe.count(LINT), 1);

    // RunTests: the same failure is returned, not retried; the next call goes through.
    let status = run.run_tests(RunTestsRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(unsafe_.count(RUN_TESTS), 0);
    run.run_tests(RunTestsRequest::default()).await.unwrap();
    assert_eq!(unsafe_.count(RUN_TESTS), 1);
}

async fn lint_all(channel: &Channel, calls: usize) -> usize {
    let client = ExecutionServiceClient::new(channel.clone());
    let results = futures::future::join_all((0..calls).map(|_| {
        let mut client = client.clone();
        async move { client.lint(LintRequest::default()).await }
    }))
    .await;
    results.iter().filter(|r| r.is_err()).count()
}

#[tokio::test]
async fn calls_spread_over_every_endpoint_and_move_when_one_goes() {
    let a = Fake::start(0, plan(|_, _| Answer::Sleep(Duration::from_millis(5)))).await;
    let b = Fake::start(0, plan(|_, _| Answer::Sleep(Duration::from_millis(5)))).await;
    let resolver = StaticResolver::new(vec![a.addr, b.addr]);
    let pool = BalancedChannel::start_with_resolver(
        "http://execution.test:50054",
        BalanceConfig {
            connections_per_endpoint: 2,
            resolve_interval: Duration::from_millis(50),
        },
        Arc::new(|e| e),
        Arc::new(resolver.clone()),
    )
    .unwrap();
    let both = eventually(Duration::from_secs(5), || async {
        pool.endpoints().len() == 2
    })
    .await;
    assert!(both, "both endpoints must be resolved");
    let channel = pool.channel();
    assert_eq!(lint_all(&channel, 200).await, 0);
    assert!(
        a.total() > 0 && b.total() > 0,
        "a: {}, b: {}",
        a.total(),
        b.total()
    );
    assert_eq!(a.total() + b.total(), 200);

    // b leaves the name while calls are in flight: none fails, and traffic moves to a.
    let during = {
        let channel = channel.clone();
        tokio::spawn(async move { lint_all(&channel, 300).await })
    };
    resolver.set(vec![a.addr]);
    let moved = eventually(Duration::from_secs(5), || async {
        pool.endpoints() == vec![a.addr]
    })
    .await;
    assert!(moved, "b must be removed");
    assert_eq!(
        during.await.unwrap(),
        0,
        "removing an endpoint failed calls"
    );
    let before = b.total();
    assert_eq!(lint_all(&channel, 100).await, 0);
    assert_eq!(b.total(), before, "a removed endpoint still got calls");
    assert_eq!(a.total() + b.total(), 600);
}

#[tokio::test]
async fn a_backend_host_that_does_not_resolve_fails_fast_instead_of_hanging() {
    let gw = gateway(|c| c.backends.graph = "http://no-such-backend.invalid:50053".into()).await;
    let mut client = GraphServiceClient::new(gw.channel());
    let call = client.get_metrics(GetMetricsRequest {});
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call must not wait for an endpoint that never comes")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(GRAPH), "{}", status.message());
}
