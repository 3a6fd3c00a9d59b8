//! Integration tests of the audit client against a real audit server: delivery, spooling
//! across an outage and across a producer restart (in order, exactly once), fail-closed when
//! the spool is full, and rejection of invalid events.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use umcp_audit::AuditConfig;
use umcp_audit_client::{AuditClient, AuditClientConfig, AuditClientError, StaticToken};
use umcp_authz::permissions::Role;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::audit::v1::{Actor, AuditEvent, EventType, Outcome, QueryRequest, Severity};
use umcp_proto::common::v1::value::Kind;
use umcp_proto::common::v1::{PageRequest, Value};
use umcp_testkit::eventually;
use umcp_testkit::issuer::TestIssuer;

/// An audit server that can be stopped and started again on the same address.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_on(addr: SocketAddr, dir: &Path, issuer: &TestIssuer) -> Server {
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the audit address");
    let config = AuditConfig {
        data_dir: dir.to_path_buf(),
        ..AuditConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let verifier = issuer.verifier();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        umcp_audit::serve(listener, config, verifier, shutdown)
            .await
            .expect("audit server runs");
    });
    Server { stop, task }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task");
    }
}

fn free_addr() -> SocketAddr {
    ([127, 0, 0, 1], umcp_testkit::free_port()).into()
}

fn event(n: i64) -> AuditEvent {
    AuditEvent {
        timestamp: Some(Timestamp {
            seconds: 1_700_000_000 + n,
            nanos: 0,
        }),
        event_type: EventType::DataWrite as i32,
        severity: Severity::Info as i32,
        service: "graph".into(),
        actor: Some(Actor {
            user_id: "alice".into(),
            roles: vec!["admin".into()],
            auth_method: "password".into(),
        }),
        resource: "/umcp.graph.v1.GraphService/Upsert".into(),
        action: "upsert".into(),
        outcome: Some(Outcome {
            success: true,
            grpc_code: 0,
            reason: String::new(),
        }),
        correlation_id: format!("c-{n}"),
        ..AuditEvent::default()
    }
}

fn client_config(addr: SocketAddr, spool: &Path) -> AuditClientConfig {
    AuditClientConfig {
        url: format!("http://{addr}"),
        spool_dir: spool.to_path_buf(),
        retry_base_ms: 20,
        retry_max_ms: 300,
        connect_timeout_ms: 200,
        request_timeout_ms: 2000,
        ..AuditClientConfig::default()
    }
}

fn start_client(config: AuditClientConfig, issuer: &TestIssuer) -> AuditClient {
    let token = StaticToken::new(issuer.token("graph-service", &[Role::Service]));
    AuditClient::start(config, Arc::new(token)).expect("client starts")
}

/// Every stored event's correlation id, in sequence order (whatever order `Query` pages in).
async fn stored(addr: SocketAddr, issuer: &TestIssuer) -> Vec<String> {
    let mut events = stored_events(addr, issuer).await;
    events.sort_by_key(|e| e.sequence);
    events.into_iter().map(|e| e.correlation_id).collect()
}

async fn stored_events(addr: SocketAddr, issuer: &TestIssuer) -> Vec<AuditEvent> {
    let bearer = issuer.bearer("admin", &[Role::Admin]);
    let channel = umcp_testkit::channel(addr);
    let mut admin = AuditServiceClient::new(umcp_testkit::authed(channel, bearer));
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let request = QueryRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: token,
            }),
            ..QueryRequest::default()
        };
        let Ok(page) = admin.query(request).await else {
            return Vec::new();
        };
        let page = page.into_inner();
        out.extend(page.events);
        token = page.page.unwrap_or_default().next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

async fn wait_for_stored(addr: SocketAddr, issuer: &TestIssuer, want: &[String]) {
    let arrived = eventually(Duration::from_secs(20), || async {
        stored(addr, issuer).await.len() >= want.len()
    })
    .await;
    let got = stored(addr, issuer).await;
    assert!(
        arrived,
        "only {} of {} events arrived",
        got.len(),
        want.len()
    );
    assert_eq!(got, want, "events arrive in order, exactly once");
}

fn ids(range: std::ops::Range<i64>) -> Vec<String> {
    range.map(|n| format!("c-{n}")).collect()
}

#[tokio::test]
async fn events_are_batched_and_delivered() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let issuer = TestIssuer::new();
    let addr = free_addr();
    let server = start_on(addr, dir.path(), &issuer).await;
    let client = start_client(client_config(addr, spool.path()), &issuer);
    for n in 0..2000 {
        client.record(event(n));
    }
    client.record_required(event(2000)).await.unwrap();
    client.flush().await.unwrap();
    let metrics = client.metrics();
    assert_eq!(
        (metrics.sent, metrics.spooled, metrics.dropped),
        (2001, 0, 0)
    );
    assert_eq!(metrics.queued, 0);
    wait_for_stored(addr, &issuer, &ids(0..2001)).await;
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn an_outage_loses_nothing_and_keeps_order() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let issuer = TestIssuer::new();
    let addr = free_addr();
    let server = start_on(addr, dir.path(), &issuer).await;
    let client = start_client(client_config(addr, spool.path()), &issuer);
    for n in 0..10 {
        client.record(event(n));
    }
    client.flush().await.unwrap();
    server.stop().await;

    // The service is down: required events return once they are durably spooled.
    for n in 10..30 {
        client.record_required(event(n)).await.expect("spooled");
    }
    for n in 30..60 {
        client.record(event(n));
    }
    client.flush().await.unwrap();
    let metrics = client.metrics();
    assert_eq!(metrics.spooled, 50, "{metrics:?}");
    assert!(metrics.spool_bytes > 0);

    let server = start_on(addr, dir.path(), &issuer).await;
    for n in 60..70 {
        client.record(event(n));
    }
    wait_for_stored(addr, &issuer, &ids(0..70)).await;
    let drained = eventually(Duration::from_secs(5), || async {
        client.metrics().spool_bytes == 0
    })
    .await;
    assert!(drained, "{:?}", client.metrics());
    let metrics = client.metrics();
    assert_eq!((metrics.sent, metrics.dropped), (70, 0), "{metrics:?}");
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_spool_survives_a_producer_restart() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let issuer = TestIssuer::new();
    let addr = free_addr();
    // Nothing listens yet.
    let first = start_client(client_config(addr, spool.path()), &issuer);
    for n in 0..25 {
        first.record_required(event(n)).await.expect("spooled");
    }
    assert_eq!(first.metrics().spooled, 25);
    first.close().await;

    let server = start_on(addr, dir.path(), &issuer).await;
    let second = start_client(client_config(addr, spool.path()), &issuer);
    assert!(second.metrics().spool_bytes > 0, "the spool was kept");
    second.record(event(25));
    wait_for_stored(addr, &issuer, &ids(0..26)).await;
    second.close().await;
    server.stop().await;
}

#[tokio::test]
async fn required_events_fail_closed_when_the_spool_is_full() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let issuer = TestIssuer::new();
    let addr = free_addr();
    let config = AuditClientConfig {
        spool_max_bytes: 4096,
        ..client_config(addr, spool.path())
    };
    let client = start_client(config, &issuer);
    let mut accepted = 0;
    let refusal = loop {
        match client.record_required(event(accepted)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "the spool limit is not enforced");
    };
    assert_eq!(refusal, AuditClientError::SpoolFull);
    assert_eq!(
        tonic::Status::from(refusal).code(),
        tonic::Code::Unavailable
    );
    assert!(accepted > 5, "only {accepted} events fit in 4 KiB");
    assert!(client.metrics().spool_bytes <= 4096);

    // Once the service is back the spool drains and writes succeed again.
    let server = start_on(addr, dir.path(), &issuer).await;
    wait_for_stored(addr, &issuer, &ids(0..accepted)).await;
    let drained = eventually(Duration::from_secs(5), || async {
        client.metrics().spool_bytes == 0
    })
    .await;
    assert!(drained);
    client.record_required(event(accepted)).await.unwrap();
    assert_eq!(client.metrics().dropped, 0);
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_events_are_rejected_without_holding_up_the_rest() {
    let (dir, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let issuer = TestIssuer::new();
    let addr = free_addr();
    let server = start_on(addr, dir.path(), &issuer).await;
    let client = start_client(client_config(addr, spool.path()), &issuer);
    client.record(event(0));
    let mut bad = event(1);
    bad.details.insert(
        "password".into(),
        Value {
            kind: Some(Kind::StringValue("hunter2".into())),
        },
    );
    let result = client.record_required(bad).await;
    assert!(
        matches!(&result, Err(AuditClientError::Rejected(m)) if m.contains("password")),
        "{result:?}"
    );
    // Far too large for any valid event: refused before it could clog the spool.
    let mut huge = event(3);
    huge.user_agent = "x".repeat(70_000);
    let result = client.record_required(huge).await;
    assert!(
        matches!(&result, Err(AuditClientError::Rejected(_))),
        "{result:?}"
    );
    client.record(event(2));
    client.flush().await.unwrap();
    wait_for_stored(addr, &issuer, &["c-0".to_owned(), "c-2".to_owned()]).await;
    let metrics = client.metrics();
    assert_eq!((metrics.rejected, metrics.sent, metrics.dropped), (2, 2, 0));
    client.close().await;
    server.stop().await;
}

/// A crash of the audit service (its task aborted mid-traffic, like SIGKILL: no graceful
/// shutdown, only what reached the file survives) while a producer keeps recording; after a
/// restart on the same address every event is stored exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_sustained_traffic_loses_nothing_and_duplicates_nothing() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = start_on(addr, &dir.path().join("audit"), &issuer).await;
    let client = start_client(client_config(addr, &dir.path().join("spool")), &issuer);
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0..600 {
                client.record(event(n));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.task.abort();
    let _ = server.task.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_on(addr, &dir.path().join("audit"), &issuer).await;
    producer.await.unwrap();
    wait_for_stored(addr, &issuer, &ids(0..600)).await;
    let metrics = client.metrics();
    assert_eq!(metrics.dropped, 0);
    assert!(
        metrics.spooled > 0,
        "the crash should have made the client spool: {metrics:?}"
    );
    server.stop().await;
}

/// A flood of rate-limit rejections becomes one event at once and one summary per window.
#[tokio::test]
async fn rate_limit_rejections_are_aggregated_per_principal_and_window() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = start_on(addr, &dir.path().join("audit"), &issuer).await;
    let client = start_client(client_config(addr, &dir.path().join("spool")), &issuer);
    let emitter = umcp_audit_client::Emitter::new(Some(client), "gateway");
    let window = Duration::from_millis(300);
    let reporter = umcp_audit_client::RateLimitReporter::start(emitter.clone(), window);
    let path = "/umcp.execution.v1.ExecutionService/Execute";
    for _ in 0..500 {
        for who in ["alice", "bob"] {
            let event = emitter
                .event(EventType::RateLimitExceeded, path, "rate_limit")
                .detail("principal", who);
            reporter.exceeded(who, "execute", event);
        }
    }
    let want = 4; // per principal: the first rejection, then one summary of the other 499
    let arrived = eventually(Duration::from_secs(10), || async {
        stored_events(addr, &issuer).await.len() >= want
    })
    .await;
    tokio::time::sleep(window * 2).await;
    let events = stored_events(addr, &issuer).await;
    assert!(arrived, "{} events", events.len());
    assert_eq!(events.len(), want, "a flood must not flood the log");
    let suppressed: i64 = events
        .iter()
        .filter_map(
            |e| match e.details.get("suppressed_in_window")?.kind.as_ref()? {
                Kind::IntValue(n) => Some(*n),
                _ => None,
            },
        )
        .sum();
    assert_eq!(suppressed, 2 * 499);
    assert!(
        events
            .iter()
            .all(|e| e.event_type == EventType::RateLimitExceeded as i32)
    );
    server.stop().await;
}

/// With fail-closed off (`UMCP_AUDIT__FAIL_CLOSED=false`), a required event with audit down and
/// the spool full does not refuse the operation.
#[tokio::test]
async fn fail_open_configuration_lets_required_events_through() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = client_config(free_addr(), &dir.path().join("spool"));
    config.spool_max_bytes = 4096;
    config.fail_closed = false;
    let client = start_client(config.clone(), &issuer);
    let open = umcp_audit_client::Emitter::new(Some(client.clone()), "graph").fail_closed(false);
    let closed = umcp_audit_client::Emitter::new(Some(client), "graph");
    let make = |e: &umcp_audit_client::Emitter| e.event(EventType::DataWrite, "/x/Y", "write");
    let mut refused = false;
    for _ in 0..200 {
        if closed.emit_required(make(&closed)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the fail-closed emitter must refuse once the spool is full"
    );
    for _ in 0..20 {
        open.emit_required(make(&open))
            .await
            .expect("fail-open never refuses");
    }
}
