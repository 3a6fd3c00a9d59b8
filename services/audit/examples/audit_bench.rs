//! Audit service benchmark: durable append latency (every acknowledgement is after fsync) at a
//! sustained offered rate and at the maximum rate, and query latency on a million events.
//!
//! Run: `cargo run --release -p umcp-audit --example audit_bench -- [seconds] [events]`
//! (defaults 10 s per append phase, 1 000 000 events for the query phase). The server runs
//! in-process over real loopback gRPC with token verification, writing to a temporary
//! directory on the same disk as /tmp.
//!
//! Targets: append p99 ≤ 5 ms at ≥ 1 000 events/s; filtered query p99 ≤ 100 ms on 1 M events.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost_types::Timestamp;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use umcp_audit::chain::ChainKey;
use umcp_audit::signed::CheckpointKey;
use umcp_audit::{AuditGrpc, AuditLog, FileLog, LogOptions};
use umcp_authz::permissions::Role;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::audit::v1::audit_service_server::AuditServiceServer;
use umcp_proto::audit::v1::{
    Actor, AuditEvent, Outcome, OutcomeFilter, QueryRequest, RecordRequest, Severity, VerifyRequest,
};
use umcp_proto::common::v1::PageRequest;
use umcp_testkit::Bearer;
use umcp_testkit::issuer::TestIssuer;

type Client = AuditServiceClient<InterceptedService<Channel, Bearer>>;
/// Builds the i-th request of a query case.
type MakeQuery = Box<dyn Fn(usize) -> QueryRequest>;

const BASE_SECONDS: i64 = 1_700_000_000;
/// Events generated so far: drives users, types, outcomes, correlation ids and timestamps
/// (100 events per second of event time), so later time-range queries know what exists.
static GENERATED: AtomicU64 = AtomicU64::new(0);

fn event() -> AuditEvent {
    let n = GENERATED.fetch_add(1, Ordering::Relaxed);
    let user = format!("user-{}", n % 1000);
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        timestamp: Some(Timestamp {
            seconds: BASE_SECONDS + (n / 100) as i64,
            nanos: 0,
        }),
        event_type: 1 + (n % 17) as i32,
        severity: Severity::Info as i32,
        service: "gateway".into(),
        actor: Some(Actor {
            user_id: user,
            roles: vec!["developer".into()],
            auth_method: "password".into(),
        }),
        peer_address: "10.0.0.7:51234".into(),
        user_agent: "grpc-python/1.66".into(),
        // About as many RPCs as the mesh has (21: coprime with the failure period of 10, so
        // every resource has successes and failures).
        resource: format!("/umcp.graph.v1.GraphService/Method{}", n % 21),
        action: "upsert".into(),
        outcome: Some(Outcome {
            success: !n.is_multiple_of(10),
            grpc_code: if n.is_multiple_of(10) { 7 } else { 0 },
            reason: String::new(),
        }),
        duration_micros: 1500,
        correlation_id: format!("corr-{n}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        ..AuditEvent::default()
    }
}

fn row(name: &str, h: &Histogram<u64>, extra: &str) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "| {name:<42} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} | {extra:<22} |",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "| {:<42} | {:>8} | {:>8} | {:>8} | {:>8} | {:<22} |",
        "case", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "throughput"
    );
    println!(
        "|{:-<44}|{:-<10}|{:-<10}|{:-<10}|{:-<10}|{:-<24}|",
        "", "", "", "", "", ""
    );
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Open loop: one single-event `Record` every `1/rate` s, latency measured from the scheduled
/// start (no coordinated omission). A thread paces with `std::thread::sleep`, which is precise
/// to tens of microseconds (Tokio timers round up to whole milliseconds).
async fn paced(client: &Client, rate: u64, seconds: u64) -> (Histogram<u64>, f64) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = rate * seconds;
    let runtime = tokio::runtime::Handle::current();
    let client = client.clone();
    let start = Instant::now();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut c = client.clone();
            let tx = tx.clone();
            runtime.spawn(async move {
                c.record(RecordRequest {
                    events: vec![event()],
                })
                .await
                .expect("record");
                let _ = tx.send(due.elapsed().as_micros() as u64);
            });
        }
    });
    let mut h = histogram();
    while let Some(v) = rx.recv().await {
        h.record(v.max(1)).expect("record latency");
    }
    pacer.join().expect("pacer");
    (h, total as f64 / start.elapsed().as_secs_f64())
}

/// Closed loop: `callers` concurrent callers, each sending `batch` events per call.
async fn saturate(
    client: &Client,
    callers: usize,
    batch: usize,
    seconds: u64,
) -> (Histogram<u64>, f64) {
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut calls = 0u64;
            while Instant::now() < stop {
                let batch: Vec<AuditEvent> = (0..batch).map(|_| event()).collect();
                let began = Instant::now();
                c.record(RecordRequest { events: batch })
                    .await
                    .expect("record");
                h.record((began.elapsed().as_micros() as u64).max(1))
                    .expect("latency");
                calls += 1;
            }
            (h, calls)
        }));
    }
    let mut h = histogram();
    let mut calls = 0u64;
    for t in tasks {
        let (th, tc) = t.await.expect("caller");
        h.add(th).expect("merge");
        calls += tc;
    }
    (
        h,
        (calls * batch as u64) as f64 / start.elapsed().as_secs_f64(),
    )
}

async fn query_case(
    client: &Client,
    runs: usize,
    make: impl Fn(usize) -> QueryRequest,
) -> (Histogram<u64>, usize) {
    let mut h = histogram();
    let mut returned = 0;
    for i in 0..runs {
        let mut c = client.clone();
        let began = Instant::now();
        let r = c.query(make(i)).await.expect("query").into_inner();
        h.record((began.elapsed().as_micros() as u64).max(1))
            .expect("latency");
        returned = r.events.len();
    }
    (h, returned)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(10);
    let million = args.get(1).copied().unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("randomness");
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("randomness");
    let options = LogOptions {
        dir: dir.path().join("audit"),
        key: ChainKey::from_bytes(key),
        sync_checkpoint: false,
        tail_buffer: 4096,
        queue: 4096,
        // The service's defaults, so their cost is part of the measurement.
        signing_key: CheckpointKey::from_seed(seed),
        sign_every_events: 1000,
        sign_interval: Duration::from_secs(10),
    };
    let log = Arc::new(FileLog::open(options.clone()).expect("open log"));
    let issuer = TestIssuer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = AuditServiceServer::new(AuditGrpc::new(Arc::clone(&log) as Arc<dyn AuditLog>));
    let server = umcp_rpc::Server::new("audit")
        .auth(issuer.verifier())
        .add_service(svc);
    tokio::spawn(server.serve(listener, std::future::pending()));
    let channel = umcp_testkit::channel(addr);
    let service: Client = AuditServiceClient::new(umcp_testkit::authed(
        channel.clone(),
        issuer.bearer("svc", &[Role::Service]),
    ));
    let admin: Client = AuditServiceClient::new(umcp_testkit::authed(
        channel,
        issuer.bearer("admin", &[Role::Admin]),
    ));
    // Warm up the connection and the file.
    saturate(&service, 4, 1, 1).await;

    header(&format!(
        "Durable append over gRPC (fsync before every ack), {seconds} s per case"
    ));
    for rate in [1000u64, 2000] {
        let (before, _) = log.stats().snapshot();
        let (h, eps) = paced(&service, rate, seconds).await;
        let (after, _) = log.stats().snapshot();
        let per = (rate * seconds) as f64 / (after - before).max(1) as f64;
        row(
            &format!("1 event/call, offered {rate}/s"),
            &h,
            &format!("{eps:.0} ev/s, {per:.1} ev/fsync"),
        );
    }
    for (callers, batch) in [(64usize, 1usize), (16, 100)] {
        let (before, _) = log.stats().snapshot();
        let (h, eps) = saturate(&service, callers, batch, seconds).await;
        let (after, _) = log.stats().snapshot();
        let fsyncs = (after - before).max(1);
        row(
            &format!("max rate: {callers} callers x {batch} ev/call"),
            &h,
            &format!(
                "{eps:.0} ev/s, {:.0} fsync/s",
                fsyncs as f64 / seconds as f64
            ),
        );
    }

    // Fill up to a million events through the domain API (same writer, no gRPC overhead).
    let have = log.head();
    let fill = Instant::now();
    let mut pending = Vec::new();
    let mut left = million.saturating_sub(have);
    while left > 0 {
        while pending.len() < 4 && left > 0 {
            let size = left.min(1000);
            let batch: Vec<AuditEvent> = (0..size).map(|_| event()).collect();
            left -= size;
            let log = Arc::clone(&log);
            pending.push(tokio::spawn(async move {
                log.record(batch).await.expect("fill")
            }));
        }
        pending.remove(0).await.expect("fill task");
    }
    for p in pending {
        p.await.expect("fill task");
    }
    let total = log.head();
    if total > have {
        println!(
            "\nfilled {} events in {:.1} s",
            total - have,
            fill.elapsed().as_secs_f64()
        );
    }
    let disk = std::fs::metadata(log.path())
        .map(|m| m.len() >> 20)
        .unwrap_or(0);
    println!("\nlog: {total} events, {disk} MiB on disk");

    header(&format!(
        "Query over gRPC on {total} events (200 runs each)"
    ));
    let generated = GENERATED.load(Ordering::Relaxed);
    let span = (generated / 100) as i64;
    let page = |size: u32| {
        Some(PageRequest {
            page_size: size,
            page_token: String::new(),
        })
    };
    let cases: Vec<(&str, MakeQuery)> = vec![
        (
            "first page, no filter (100)",
            Box::new(move |_| QueryRequest {
                page: page(0),
                ..Default::default()
            }),
        ),
        (
            "user filter (~1000 matches, page 100)",
            Box::new(move |i| QueryRequest {
                user_id: format!("user-{}", i % 1000),
                page: page(100),
                ..Default::default()
            }),
        ),
        (
            "type + failures (page 1000)",
            Box::new(move |i| QueryRequest {
                event_types: vec![1 + (i % 17) as i32],
                outcome: OutcomeFilter::Failure as i32,
                page: page(1000),
                ..Default::default()
            }),
        ),
        (
            "resource + successes (page 100)",
            Box::new(move |i| QueryRequest {
                resource: format!("/umcp.graph.v1.GraphService/Method{}", i % 21),
                outcome: OutcomeFilter::Success as i32,
                page: page(100),
                ..Default::default()
            }),
        ),
        (
            "correlation id (1 match, full scan)",
            Box::new(move |i| QueryRequest {
                correlation_id: format!("corr-{}", (i as u64 * 4999) % generated),
                ..Default::default()
            }),
        ),
        (
            "time range 1 min + user",
            Box::new(move |i| QueryRequest {
                since: Some(Timestamp {
                    seconds: BASE_SECONDS + (i as i64 * 37) % span,
                    nanos: 0,
                }),
                until: Some(Timestamp {
                    seconds: BASE_SECONDS + (i as i64 * 37) % span + 60,
                    nanos: 0,
                }),
                user_id: format!("user-{}", i % 1000),
                ..Default::default()
            }),
        ),
        (
            "no match (user unknown)",
            Box::new(move |_| QueryRequest {
                user_id: "nobody".into(),
                ..Default::default()
            }),
        ),
        (
            "failures in the last 100 s (page 1000)",
            Box::new(move |_| QueryRequest {
                outcome: OutcomeFilter::Failure as i32,
                since: Some(Timestamp {
                    seconds: BASE_SECONDS + span - 100,
                    nanos: 0,
                }),
                page: page(1000),
                ..Default::default()
            }),
        ),
    ];
    for (name, make) in cases {
        let (h, returned) = query_case(&admin, 200, make).await;
        row(name, &h, &format!("{returned} events/page"));
    }

    header("Verification and recovery");
    let began = Instant::now();
    let report = admin
        .clone()
        .verify(VerifyRequest::default())
        .await
        .expect("verify")
        .into_inner();
    let mut h = histogram();
    h.record(began.elapsed().as_micros() as u64)
        .expect("latency");
    row(
        &format!(
            "Verify whole chain ({} events, ok={})",
            report.events_checked, report.ok
        ),
        &h,
        "",
    );
    log.close();
    drop(log);
    let began = Instant::now();
    let reopened = tokio::task::spawn_blocking(move || FileLog::open(options))
        .await
        .expect("task")
        .expect("reopen");
    let mut h = histogram();
    h.record(began.elapsed().as_micros() as u64)
        .expect("latency");
    row(
        &format!(
            "restart: rebuild index + verify ({} events)",
            reopened.head()
        ),
        &h,
        "",
    );
}
