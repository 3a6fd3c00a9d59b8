//! Integration tests of the audit service on real servers: durability across SIGKILL of the
//! real binary, idempotency, input validation, permissions, queries, tails, and tamper
//! detection on files edited on disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use umcp_audit::AuditConfig;
use umcp_authz::permissions::Role;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::audit::v1::{
    Actor, AuditEvent, EventType, ExportCheckpointRequest, ExportCheckpointResponse, Outcome,
    OutcomeFilter, QueryRequest, RecordRequest, Severity, TailRequest, VerifyRequest,
    VerifyResponse,
};
use umcp_proto::common::v1::value::Kind;
use umcp_proto::common::v1::{PageRequest, Value};
use umcp_testkit::issuer::TestIssuer;
use umcp_testkit::{Bearer, Spawned, eventually};

type Client = AuditServiceClient<InterceptedService<Channel, Bearer>>;

struct Server {
    spawned: Spawned,
    issuer: TestIssuer,
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        data_dir: dir.to_path_buf(),
        tail_buffer: 16,
        ..AuditConfig::default()
    }
}

async fn start_with(issuer: &TestIssuer, config: AuditConfig) -> Server {
    let verifier = issuer.verifier();
    let spawned = Spawned::start(move |listener, shutdown| {
        umcp_audit::serve(listener, config, verifier, shutdown.wait())
    })
    .await;
    let server = Server {
        spawned,
        issuer: issuer.clone(),
    };
    // Serving starts once the log is open (recovered and verified).
    let admin = server.admin();
    let up = eventually(Duration::from_secs(20), || {
        let mut admin = admin.clone();
        async move {
            let probe = VerifyRequest {
                from_sequence: 1,
                to_sequence: 1,
            };
            admin.verify(probe).await.is_ok()
        }
    })
    .await;
    assert!(up, "the audit server did not come up");
    server
}

async fn start(dir: &Path) -> Server {
    start_with(&TestIssuer::new(), config(dir)).await
}

impl Server {
    fn client(&self, role: Role) -> Client {
        let bearer = self.issuer.bearer(&format!("{role}-1"), &[role]);
        AuditServiceClient::new(umcp_testkit::authed(self.spawned.channel(), bearer))
    }
    fn service(&self) -> Client {
        self.client(Role::Service)
    }
    fn admin(&self) -> Client {
        self.client(Role::Admin)
    }
    async fn stop(self) {
        self.spawned.stop().await.expect("server stopped cleanly");
    }
}

fn event(kind: EventType, user: &str, ok: bool, seconds: i64) -> AuditEvent {
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        timestamp: Some(Timestamp { seconds, nanos: 0 }),
        event_type: kind as i32,
        severity: Severity::Info as i32,
        service: "gateway".into(),
        actor: Some(Actor {
            user_id: user.into(),
            roles: vec!["developer".into()],
            auth_method: "password".into(),
        }),
        peer_address: "127.0.0.1:5000".into(),
        resource: "/umcp.graph.v1.GraphService/Upsert".into(),
        action: "upsert".into(),
        outcome: Some(Outcome {
            success: ok,
            grpc_code: if ok { 0 } else { 7 },
            reason: String::new(),
        }),
        duration_micros: 1200,
        correlation_id: format!("corr-{user}-{seconds}"),
        details: [(
            "code_sha256".to_owned(),
            Value {
                kind: Some(Kind::StringValue("ab".repeat(32))),
            },
        )]
        .into(),
        ..AuditEvent::default()
    }
}

fn simple(n: usize) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            event(
                EventType::DataWrite,
                "alice",
                true,
                1_700_000_000 + i as i64,
            )
        })
        .collect()
}

async fn record(
    client: &mut Client,
    events: Vec<AuditEvent>,
) -> Result<(u32, u32, u64), tonic::Status> {
    let r = client.record(RecordRequest { events }).await?.into_inner();
    Ok((r.accepted, r.duplicates, r.last_sequence))
}

async fn verify(client: &mut Client, from: u64, to: u64) -> VerifyResponse {
    client
        .verify(VerifyRequest {
            from_sequence: from,
            to_sequence: to,
        })
        .await
        .expect("verify answers")
        .into_inner()
}

#[tokio::test]
async fn record_is_sequenced_and_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let batch = simple(3);
    assert_eq!(record(&mut client, batch.clone()).await.unwrap(), (3, 0, 3));
    assert_eq!(record(&mut client, batch.clone()).await.unwrap(), (0, 3, 3));
    // Repeated within one call: stored once.
    let twice = vec![batch[0].clone(), simple(1)[0].clone(), simple(1)[0].clone()];
    let mut twice = twice;
    twice[2] = twice[1].clone();
    assert_eq!(record(&mut client, twice).await.unwrap(), (1, 2, 4));
    server.stop().await;

    let server = start_with(&TestIssuer::new(), config(dir.path())).await;
    let mut client = server.service();
    assert_eq!(record(&mut client, batch).await.unwrap(), (0, 3, 4));
    assert_eq!(record(&mut client, simple(2)).await.unwrap(), (2, 0, 6));
    let page = server
        .admin()
        .query(QueryRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, vec![6, 5, 4, 3, 2, 1], "newest first");
    assert!(page.events.iter().all(|e| e.chain_hash.len() == 64));
    let report = verify(&mut server.admin(), 0, 0).await;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events_checked, report.head_sequence), (6, 6));
    assert_eq!(report.head_hash, page.events[0].chain_hash);
    let range = verify(&mut server.admin(), 2, 4).await;
    assert!(range.ok && range.events_checked == 3, "{range:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_chain_key_refuses_to_start_instead_of_forking_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(2)).await.unwrap();
    server.stop().await;
    std::fs::remove_file(dir.path().join("chain.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let verifier = TestIssuer::new().verifier();
    let result = umcp_audit::serve(
        listener,
        config(dir.path()),
        verifier,
        std::future::pending(),
    )
    .await;
    let error = result
        .expect_err("must not start with a fresh key")
        .to_string();
    assert!(error.contains("chain key"), "{error}");
    assert!(
        !dir.path().join("chain.key").exists(),
        "no new key was created"
    );
}

fn with(f: impl FnOnce(&mut AuditEvent)) -> Vec<AuditEvent> {
    let mut e = simple(1).remove(0);
    f(&mut e);
    vec![e]
}

fn detail(key: &str, value: &str) -> Vec<AuditEvent> {
    with(|e| {
        e.details.insert(
            key.into(),
            Value {
                kind: Some(Kind::StringValue(value.into())),
            },
        );
    })
}

#[tokio::test]
async fn every_bad_input_gets_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVz";
    let cases: Vec<(&str, Vec<AuditEvent>, &str)> = vec![
        ("empty batch", vec![], "events"),
        ("1001 events", simple(1001), "events"),
        (
            "uuid v4",
            with(|e| e.event_id = uuid::Uuid::new_v4().to_string()),
            "events[0].event_id",
        ),
        ("no id", with(|e| e.event_id.clear()), "events[0].event_id"),
        (
            "sequence set",
            with(|e| e.sequence = 9),
            "events[0].sequence",
        ),
        (
            "chain hash set",
            with(|e| e.chain_hash = "ab".into()),
            "events[0].chain_hash",
        ),
        (
            "no timestamp",
            with(|e| e.timestamp = None),
            "events[0].timestamp",
        ),
        (
            "no type",
            with(|e| e.event_type = 0),
            "events[0].event_type",
        ),
        (
            "unknown type",
            with(|e| e.event_type = 18),
            "events[0].event_type",
        ),
        (
            "no severity",
            with(|e| e.severity = 0),
            "events[0].severity",
        ),
        (
            "no service",
            with(|e| e.service.clear()),
            "events[0].service",
        ),
        (
            "auth method",
            with(|e| e.actor.as_mut().unwrap().auth_method = "magic".into()),
            "events[0].actor.auth_method",
        ),
        (
            "grpc code",
            with(|e| e.outcome.as_mut().unwrap().grpc_code = 99),
            "events[0].outcome.grpc_code",
        ),
        (
            "password key",
            detail("password", "hunter2"),
            "events[0].details[\"password\"]",
        ),
        (
            "token key",
            detail("access_token", "x"),
            "events[0].details[\"access_token\"]",
        ),
        (
            "secret key",
            detail("client_secret", "x"),
            "events[0].details[\"client_secret\"]",
        ),
        (
            "api key key",
            detail("apiKey", "x"),
            "events[0].details[\"apiKey\"]",
        ),
        (
            "authorization key",
            detail("Authorization", "x"),
            "events[0].details[\"Authorization\"]",
        ),
        (
            "code key",
            detail("code", "print(1)"),
            "events[0].details[\"code\"]",
        ),
        (
            "jwt value",
            detail("note", &format!("Bearer {jwt}")),
            "events[0].details[\"note\"]",
        ),
        (
            "api key value",
            detail("note", "umcp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdef12"),
            "events[0].details[\"note\"]",
        ),
        (
            "jwt in user agent",
            with(|e| e.user_agent = jwt.into()),
            "events[0].user_agent",
        ),
        (
            "too many details",
            with(|e| {
                for i in 0..65 {
                    e.details.insert(format!("k{i}"), Value::default());
                }
            }),
            "events[0].details",
        ),
    ];
    for (name, events, field) in cases {
        let status = record(&mut client, events).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{name}: {}",
            status.message()
        );
    }
    // Nothing was stored by any of them.
    assert_eq!(verify(&mut server.admin(), 0, 0).await.head_sequence, 0);

    let mut admin = server.admin();
    let bad_queries = [
        QueryRequest {
            page: Some(PageRequest {
                page_size: 1001,
                page_token: String::new(),
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            page: Some(PageRequest {
                page_size: 10,
                page_token: "garbage".into(),
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            event_types: vec![0],
            ..QueryRequest::default()
        },
        QueryRequest {
            since: Some(Timestamp {
                seconds: 20,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            outcome: 3,
            ..QueryRequest::default()
        },
        // The deprecated alias cannot contradict the field that replaces it.
        QueryRequest {
            failures_only: true,
            outcome: OutcomeFilter::Success as i32,
            ..QueryRequest::default()
        },
    ];
    for q in bad_queries {
        let status = admin.query(q.clone()).await.expect_err("bad query");
        assert_eq!(status.code(), Code::InvalidArgument, "{q:?}: {status:?}");
    }
    let status = admin
        .verify(VerifyRequest {
            from_sequence: 5,
            to_sequence: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for bad in [
        TailRequest {
            event_types: vec![42],
            ..TailRequest::default()
        },
        TailRequest {
            outcome: 7,
            ..TailRequest::default()
        },
    ] {
        let status = admin.tail(bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn callers_without_the_permission_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    for role in [Role::Admin, Role::Developer, Role::Viewer] {
        let status = record(&mut server.client(role), simple(1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let status = server
        .service()
        .query(QueryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = server
        .service()
        .verify(VerifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    for role in [Role::Service, Role::Developer, Role::Viewer] {
        let status = server
            .client(role)
            .export_checkpoint(ExportCheckpointRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let mut anonymous = AuditServiceClient::new(server.spawned.channel());
    let status = anonymous
        .record(RecordRequest { events: simple(1) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn query_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let mut events = Vec::new();
    for i in 0..30i64 {
        let user = ["alice", "bob", "carol"][(i % 3) as usize];
        let kind = if i % 2 == 0 {
            EventType::GraphQuery
        } else {
            EventType::AuthFailure
        };
        let mut e = event(kind, user, i % 5 != 0, 1_000 + i);
        if i % 4 == 0 {
            e.resource = "/umcp.graph.v1.GraphService/Query".into();
        }
        events.push(e);
    }
    // No outcome at all: neither a success nor a failure.
    events[29].outcome = None;
    record(&mut client, events).await.unwrap();
    let mut admin = server.admin();
    let reader = admin.clone();
    let query = |q: QueryRequest| {
        let mut admin = reader.clone();
        async move {
            let r = admin.query(q).await.unwrap().into_inner();
            r.events
                .iter()
                .map(|e| e.timestamp.unwrap().seconds - 1_000)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        query(QueryRequest {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await,
        vec![28, 25, 22, 19, 16, 13, 10, 7, 4, 1]
    );
    let failures = vec![25, 20, 15, 10, 5, 0];
    assert_eq!(
        query(QueryRequest {
            outcome: OutcomeFilter::Failure as i32,
            ..Default::default()
        })
        .await,
        failures
    );
    // The deprecated alias selects the same, alone or with the field it stands for.
    for outcome in [OutcomeFilter::Unspecified, OutcomeFilter::Failure] {
        let q = QueryRequest {
            failures_only: true,
            outcome: outcome as i32,
            ..Default::default()
        };
        assert_eq!(query(q).await, failures);
    }
    let successes = query(QueryRequest {
        outcome: OutcomeFilter::Success as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(successes.len(), 30 - 6 - 1);
    assert!(!successes.contains(&29) && !successes.contains(&25));
    assert_eq!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService/Query".into(),
            ..Default::default()
        })
        .await,
        vec![28, 24, 20, 16, 12, 8, 4, 0]
    );
    assert_eq!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService/Query".into(),
            outcome: OutcomeFilter::Success as i32,
            user_id: "bob".into(),
            ..Default::default()
        })
        .await,
        vec![28, 16, 4]
    );
    assert!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService".into(),
            ..Default::default()
        })
        .await
        .is_empty(),
        "resource is an exact match"
    );
    assert_eq!(
        query(QueryRequest {
            event_types: vec![EventType::AuthFailure as i32],
            failures_only: true,
            ..Default::default()
        })
        .await,
        vec![25, 15, 5]
    );
    assert_eq!(
        query(QueryRequest {
            correlation_id: "corr-carol-1008".into(),
            ..Default::default()
        })
        .await,
        vec![8]
    );
    assert_eq!(
        query(QueryRequest {
            since: Some(Timestamp {
                seconds: 1_010,
                nanos: 0
            }),
            until: Some(Timestamp {
                seconds: 1_013,
                nanos: 0
            }),
            ..Default::default()
        })
        .await,
        vec![12, 11, 10]
    );
    assert!(
        query(QueryRequest {
            user_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Paging: 30 events in pages of 7, newest first, each exactly once; an event committed
    // while paging does not disturb the cursor.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = QueryRequest {
            page: Some(PageRequest {
                page_size: 7,
                page_token: token.clone(),
            }),
            ..Default::default()
        };
        let r = admin.query(page).await.unwrap().into_inner();
        seen.extend(r.events.iter().map(|e| e.sequence));
        token = r.page.unwrap().next_page_token;
        if seen.len() == 7 {
            record(&mut client, simple(1)).await.unwrap();
        }
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<u64>>());
    // A page that ends exactly at the oldest match has no next page.
    let bob = |token: String| QueryRequest {
        user_id: "bob".into(),
        page: Some(PageRequest {
            page_size: 5,
            page_token: token,
        }),
        ..Default::default()
    };
    let first = admin.query(bob(String::new())).await.unwrap().into_inner();
    let second = admin
        .query(bob(first.page.unwrap().next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.events.len(), 5);
    assert_eq!(second.page.unwrap().next_page_token, "");
    // A cursor is bound to its filters, and must be one the service made.
    let first = admin
        .query(QueryRequest {
            page: Some(PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cursor = first.page.unwrap().next_page_token;
    for (failures_only, token) in [
        (true, cursor.clone()),
        (false, format!("{:016x}{}", 1_000_000u64, &cursor[16..])),
        (false, format!("{:016x}{}", 0u64, &cursor[16..])),
        (false, "garbage".into()),
    ] {
        let other = QueryRequest {
            failures_only,
            page: Some(PageRequest {
                page_size: 2,
                page_token: token.clone(),
            }),
            ..Default::default()
        };
        let status = admin.query(other).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}: {status:?}");
        assert!(
            status.message().starts_with("page.page_token: "),
            "{status:?}"
        );
    }
    // Default page size is 100.
    record(&mut client, simple(150)).await.unwrap();
    assert_eq!(query(QueryRequest::default()).await.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn tail_replays_history_then_follows_live_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    record(&mut client, simple(5)).await.unwrap();
    let mut admin = server.admin();
    let mut from_two = admin
        .tail(TailRequest {
            after_sequence: 2,
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut only_new = admin
        .tail(TailRequest {
            after_sequence: 0,
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut denials = admin
        .tail(TailRequest {
            after_sequence: 0,
            event_types: vec![EventType::AuthzDenied as i32],
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = async |s: &mut tonic::Streaming<umcp_proto::audit::v1::TailResponse>| {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("tail delivers")
            .unwrap()
            .unwrap()
            .event
            .unwrap()
    };
    for want in 3..=5 {
        assert_eq!(next(&mut from_two).await.sequence, want);
    }
    // No pause needed: a tail is subscribed once its call returned.
    let mut live = simple(2);
    live[1].event_type = EventType::AuthzDenied as i32;
    record(&mut client, live).await.unwrap();
    assert_eq!(next(&mut from_two).await.sequence, 6);
    assert_eq!(next(&mut from_two).await.sequence, 7);
    assert_eq!(next(&mut only_new).await.sequence, 6);
    assert_eq!(next(&mut only_new).await.sequence, 7);
    let denial = next(&mut denials).await;
    assert_eq!(
        (denial.sequence, denial.event_type),
        (7, EventType::AuthzDenied as i32)
    );
    server.stop().await;
}

type TailStream = tonic::Streaming<umcp_proto::audit::v1::TailResponse>;

async fn next_event(stream: &mut TailStream) -> AuditEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("tail delivers")
        .expect("stream open")
        .expect("event")
        .event
        .expect("event set")
}

#[tokio::test]
async fn tail_filters_like_query_and_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let admin = server.admin();
    // Sequences 1..=12: users alternate, every third fails, every fourth is on another
    // resource, 12 has a correlation id of its own.
    let batch = |from: i64| {
        (from..from + 12)
            .map(|i| {
                let mut e = event(
                    EventType::DataWrite,
                    ["alice", "bob"][(i % 2) as usize],
                    i % 3 != 0,
                    i,
                );
                if i % 4 == 0 {
                    e.resource = "/umcp.auth.v1.AuthService/Login".into();
                }
                e
            })
            .collect::<Vec<_>>()
    };
    let mut history = batch(1);
    history[11].correlation_id = "corr-wanted".into();
    record(&mut client, history).await.unwrap();
    let tail = |request: TailRequest| {
        let mut admin = admin.clone();
        async move { admin.tail(request).await.unwrap().into_inner() }
    };
    let seconds = |e: &AuditEvent| e.timestamp.unwrap().seconds;
    // Replay of history through the filters, then live events through the same filters.
    let mut bob_failures = tail(TailRequest {
        after_sequence: 1,
        user_id: "bob".into(),
        outcome: OutcomeFilter::Failure as i32,
        ..TailRequest::default()
    })
    .await;
    let mut login_successes = tail(TailRequest {
        after_sequence: 1,
        resource: "/umcp.auth.v1.AuthService/Login".into(),
        outcome: OutcomeFilter::Success as i32,
        ..TailRequest::default()
    })
    .await;
    let mut correlated = tail(TailRequest {
        after_sequence: 1,
        correlation_id: "corr-wanted".into(),
        ..TailRequest::default()
    })
    .await;
    for want in [3, 9] {
        assert_eq!(seconds(&next_event(&mut bob_failures).await), want);
    }
    for want in [4, 8] {
        assert_eq!(seconds(&next_event(&mut login_successes).await), want);
    }
    assert_eq!(next_event(&mut correlated).await.sequence, 12);
    record(&mut client, batch(13)).await.unwrap();
    for want in [15, 21] {
        assert_eq!(seconds(&next_event(&mut bob_failures).await), want);
    }
    for want in [16, 20] {
        assert_eq!(seconds(&next_event(&mut login_successes).await), want);
    }
    // Resuming from the last sequence received: nothing repeated, nothing skipped.
    drop(bob_failures);
    record(&mut client, batch(25)).await.unwrap();
    let mut resumed = tail(TailRequest {
        after_sequence: 21,
        user_id: "bob".into(),
        outcome: OutcomeFilter::Failure as i32,
        ..TailRequest::default()
    })
    .await;
    for want in [27, 33] {
        assert_eq!(seconds(&next_event(&mut resumed).await), want);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), resumed.next()).await;
    assert!(quiet.is_err(), "only matching events: {quiet:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tail_never_blocks_commits_and_is_ended_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let mut stalled = server
        .admin()
        .tail(TailRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        record(&mut client, simple(1000)).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "commits were held up"
    );
    let mut received = 0u64;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("stream answers")
        {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("stream ended without a status after {received} events"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("after_sequence="),
        "{}",
        status.message()
    );
    assert!(received < 20_000);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tamper detection: edit the files on disk, restart, Verify.

/// Byte ranges of the records in the log file.
fn records(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 16;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize + 8;
        out.push(at..at + len);
        at += len;
    }
    out
}

fn fix_crc(record: &mut [u8]) {
    let crc = crc32fast::hash(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Ten events committed one per call, the server stopped; returns the log path.
async fn ten_events(dir: &Path) -> PathBuf {
    let server = start(dir).await;
    let mut client = server.service();
    for i in 0..10 {
        record(
            &mut client,
            vec![event(EventType::DataRead, "alice", true, 1_000 + i)],
        )
        .await
        .unwrap();
    }
    server.stop().await;
    dir.join("audit.log")
}

async fn verify_after_restart(dir: &Path) -> VerifyResponse {
    let server = start(dir).await;
    let report = verify(&mut server.admin(), 0, 0).await;
    // A damaged log refuses writes, so the evidence stays as it is.
    if !report.ok {
        let status = record(&mut server.service(), simple(1)).await.unwrap_err();
        assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    }
    server.stop().await;
    report
}

async fn tampered(edit: impl FnOnce(&Path, Vec<u8>)) -> VerifyResponse {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_events(dir.path()).await;
    let bytes = std::fs::read(&log).unwrap();
    edit(dir.path(), bytes);
    verify_after_restart(dir.path()).await
}

fn assert_problem(report: &VerifyResponse, first_bad: u64, kind: &str) {
    assert!(!report.ok, "tampering not detected: {report:?}");
    assert_eq!(report.first_bad_sequence, first_bad, "{report:?}");
    assert!(
        report.problem.starts_with(kind),
        "expected `{kind}`: {report:?}"
    );
}

fn write(dir: &Path, parts: &[&[u8]]) {
    std::fs::write(dir.join("audit.log"), parts.concat()).unwrap();
}

#[tokio::test]
async fn verify_detects_every_single_record_edit() {
    // Every record, a byte in the middle of its event: checksum mismatch.
    for target in 0..10usize {
        let report = tampered(|dir, mut bytes| {
            let r = records(&bytes)[target].clone();
            bytes[r.start + 8 + 40 + 5] ^= 0x01;
            write(dir, &[&bytes]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "edited");
    }
    // A record wiped with zeros (its length prefix with it).
    let report = tampered(|dir, mut bytes| {
        let r = records(&bytes)[4].clone();
        bytes[r].fill(0);
        write(dir, &[&bytes]);
    })
    .await;
    assert_problem(&report, 5, "edited");
    // An edit with the checksum recomputed: only the keyed chain can tell.
    for target in [0usize, 4, 9] {
        let report = tampered(|dir, mut bytes| {
            let r = records(&bytes)[target].clone();
            let rec = &mut bytes[r.clone()];
            let at = rec.windows(5).position(|w| w == b"alice").unwrap();
            rec[at..at + 5].copy_from_slice(b"mallo");
            fix_crc(rec);
            write(dir, &[&bytes]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "edited");
    }
}

#[tokio::test]
async fn verify_detects_deletions_insertions_and_reorderings() {
    for target in [0usize, 4, 8] {
        let report = tampered(|dir, bytes| {
            let r = records(&bytes)[target].clone();
            write(dir, &[&bytes[..r.start], &bytes[r.end..]]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "missing");
    }
    // A replayed copy of record 3 right after it.
    let report = tampered(|dir, bytes| {
        let r = records(&bytes)[2].clone();
        write(dir, &[&bytes[..r.end], &bytes[r.clone()], &bytes[r.end..]]);
    })
    .await;
    assert_problem(&report, 4, "inserted");
    // A forged record (a copy of 5 with another user, checksum fixed) before the genuine 5.
    let report = tampered(|dir, bytes| {
        let r = records(&bytes)[4].clone();
        let mut forged = bytes[r.clone()].to_vec();
        let at = forged.windows(5).position(|w| w == b"alice").unwrap();
        forged[at..at + 5].copy_from_slice(b"eve__");
        fix_crc(&mut forged);
        write(dir, &[&bytes[..r.start], &forged, &bytes[r.start..]]);
    })
    .await;
    assert_problem(&report, 5, "inserted");
    // Swaps of neighbours and of distant records.
    for (a, b) in [(3usize, 4usize), (0, 9), (8, 9)] {
        let report = tampered(|dir, bytes| {
            let rs = records(&bytes);
            let (ra, rb) = (rs[a].clone(), rs[b].clone());
            write(
                dir,
                &[
                    &bytes[..ra.start],
                    &bytes[rb.clone()],
                    &bytes[ra.end..rb.start],
                    &bytes[ra.clone()],
                    &bytes[rb.end..],
                ],
            );
        })
        .await;
        assert_problem(&report, a as u64 + 1, "reordered");
    }
}

#[tokio::test]
async fn verify_detects_tail_truncations_and_checkpoint_tampering() {
    // Whole records cut off the end: the chain is intact, the signed checkpoint is not met.
    for keep in [9usize, 5, 0] {
        let report = tampered(|dir, bytes| {
            let end = if keep == 0 {
                16
            } else {
                records(&bytes)[keep - 1].end
            };
            write(dir, &[&bytes[..end]]);
        })
        .await;
        assert_problem(&report, keep as u64 + 1, "truncated");
    }
    // An acknowledged record cut in the middle is never "repaired" away.
    let dir = tempfile::tempdir().unwrap();
    let log = ten_events(dir.path()).await;
    let bytes = std::fs::read(&log).unwrap();
    let last = records(&bytes)[9].clone();
    write(dir.path(), &[&bytes[..last.start + 20]]);
    let report = verify_after_restart(dir.path()).await;
    assert_problem(&report, 10, "truncated");
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        last.start as u64 + 20,
        "evidence kept"
    );
    // The log deleted entirely.
    let report = tampered(|dir, _| std::fs::remove_file(dir.join("audit.log")).unwrap()).await;
    assert_problem(&report, 1, "truncated");
    // Truncation plus a deleted checkpoint, and a forged checkpoint.
    let report = tampered(|dir, bytes| {
        write(dir, &[&bytes[..records(&bytes)[8].end]]);
        std::fs::remove_file(dir.join("checkpoint")).unwrap();
    })
    .await;
    assert_problem(&report, 10, "checkpoint");
    let report = tampered(|dir, _| {
        let path = dir.join("checkpoint");
        let mut cp = std::fs::read(&path).unwrap();
        cp[8] ^= 0x10;
        cp[80 + 8] ^= 0x10;
        std::fs::write(&path, cp).unwrap();
    })
    .await;
    assert_problem(&report, 11, "checkpoint");
}

#[tokio::test]
async fn a_torn_unacknowledged_write_is_removed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_events(dir.path()).await;
    let mut bytes = std::fs::read(&log).unwrap();
    let clean_len = bytes.len();
    // What a crash in the middle of appending record 11 leaves behind.
    let copy = bytes[records(&bytes)[9].clone()].to_vec();
    bytes.extend_from_slice(&copy[..copy.len() / 2]);
    std::fs::write(&log, &bytes).unwrap();
    let server = start(dir.path()).await;
    assert_eq!(std::fs::metadata(&log).unwrap().len(), clean_len as u64);
    let report = verify(&mut server.admin(), 0, 0).await;
    assert!(report.ok && report.head_sequence == 10, "{report:?}");
    assert_eq!(
        record(&mut server.service(), simple(1)).await.unwrap().2,
        11
    );
    assert!(verify(&mut server.admin(), 0, 0).await.ok);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Ed25519-signed checkpoints.

/// What an auditor does offline with an export: rebuild the signed message from the fields
/// and check it with the public key, nothing else.
fn verify_offline(cp: &ExportCheckpointResponse) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::{Signature, VerifyingKey};
    let Ok(public) = URL_SAFE_NO_PAD.decode(&cp.public_key) else {
        return false;
    };
    let Some(public) = public
        .try_into()
        .ok()
        .and_then(|b: [u8; 32]| VerifyingKey::from_bytes(&b).ok())
    else {
        return false;
    };
    let (Ok(hash), Ok(signature), Some(time)) = (
        hex::decode(&cp.hash),
        URL_SAFE_NO_PAD.decode(&cp.signature),
        cp.time,
    ) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&signature) else {
        return false;
    };
    let mut message = b"umcp-audit-checkpoint-ed25519-v1".to_vec();
    message.extend_from_slice(&cp.sequence.to_be_bytes());
    message.extend_from_slice(&hash);
    message.extend_from_slice(&time.seconds.to_be_bytes());
    message.extend_from_slice(&(time.nanos as u32).to_be_bytes());
    hash.len() == 32
        && umcp_audit::signed::key_id(&public) == cp.key_id
        && public.verify_strict(&message, &signature).is_ok()
}

async fn export(client: &mut Client) -> ExportCheckpointResponse {
    client
        .export_checkpoint(ExportCheckpointRequest {})
        .await
        .expect("export answers")
        .into_inner()
}

#[tokio::test]
async fn signed_checkpoints_follow_commits_and_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        sign_every_events: 5,
        sign_interval_ms: 3_600_000,
        ..config(dir.path())
    };
    let server = start_with(&TestIssuer::new(), cfg).await;
    let mut admin = server.admin();
    let mut client = server.service();
    // The empty log is signed at start.
    let genesis = export(&mut admin).await;
    assert_eq!(
        (genesis.sequence, genesis.hash.as_str()),
        (0, "0".repeat(64).as_str())
    );
    assert!(verify_offline(&genesis), "{genesis:?}");
    // Below the count (and long before the interval): not re-signed.
    record(&mut client, simple(4)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(export(&mut admin).await.sequence, 0);
    record(&mut client, simple(1)).await.unwrap();
    let signed = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { export(&mut admin).await.sequence == 5 }
    })
    .await;
    assert!(signed, "signed after 5 events");
    let cp = export(&mut admin).await;
    assert!(verify_offline(&cp), "{cp:?}");
    assert_eq!(cp.key_id, genesis.key_id);
    // The export pins the history: the log still carries that hash at that sequence.
    assert_eq!(verify(&mut admin, 0, cp.sequence).await.head_hash, cp.hash);
    // Edited fields do not verify.
    for forged in [
        ExportCheckpointResponse {
            sequence: 6,
            ..cp.clone()
        },
        ExportCheckpointResponse {
            hash: "ab".repeat(32),
            ..cp.clone()
        },
        ExportCheckpointResponse {
            time: Some(Timestamp {
                seconds: cp.time.unwrap().seconds + 1,
                nanos: cp.time.unwrap().nanos,
            }),
            ..cp.clone()
        },
        ExportCheckpointResponse {
            signature: genesis.signature.clone(),
            ..cp.clone()
        },
    ] {
        assert!(!verify_offline(&forged), "{forged:?}");
    }
    // The final head is signed at shutdown, with the same key after a restart.
    record(&mut client, simple(2)).await.unwrap();
    server.stop().await;
    let server = start(dir.path()).await;
    let after = export(&mut server.admin()).await;
    assert_eq!((after.sequence, &after.key_id), (7, &cp.key_id));
    assert!(verify_offline(&after));
    server.stop().await;

    // By time: one event, far below the count.
    let cfg = AuditConfig {
        sign_interval_ms: 100,
        ..config(dir.path())
    };
    let server = start_with(&TestIssuer::new(), cfg).await;
    record(&mut server.service(), simple(1)).await.unwrap();
    let admin = server.admin();
    let signed = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { export(&mut admin).await.sequence == 8 }
    })
    .await;
    assert!(signed, "signed within the interval");
    server.stop().await;
}

#[tokio::test]
async fn a_log_rolled_back_behind_its_signed_checkpoint_is_truncated() {
    // The attack the MAC'd checkpoint alone cannot see: an older log restored together with
    // the MAC'd checkpoint of that time.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(5)).await.unwrap();
    server.stop().await;
    let old_log = std::fs::read(dir.path().join("audit.log")).unwrap();
    let old_checkpoint = std::fs::read(dir.path().join("checkpoint")).unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(5)).await.unwrap();
    server.stop().await;
    std::fs::write(dir.path().join("audit.log"), &old_log).unwrap();
    std::fs::write(dir.path().join("checkpoint"), &old_checkpoint).unwrap();
    let report = verify_after_restart(dir.path()).await;
    assert_problem(&report, 6, "truncated");
    assert!(report.problem.contains("Ed25519"), "{report:?}");
}

#[tokio::test]
async fn an_edited_or_deleted_signed_checkpoint_is_detected() {
    // Any edited byte, on disk while stopped.
    for at in [8usize, 30, 50, 100] {
        let report = tampered(|dir, _| {
            let path = dir.join("signed_checkpoint");
            let mut cp = std::fs::read(&path).unwrap();
            cp[at] ^= 0x04;
            std::fs::write(&path, cp).unwrap();
        })
        .await;
        assert_problem(&report, 11, "checkpoint");
    }
    // Deleted under the running service.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(3)).await.unwrap();
    std::fs::remove_file(dir.path().join("signed_checkpoint")).unwrap();
    let report = verify(&mut server.admin(), 0, 0).await;
    assert_problem(&report, 4, "checkpoint");
    server.stop().await;
    // A lost signing key is not silently replaced while a checkpoint it signed exists.
    std::fs::remove_file(dir.path().join("signing.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let verifier = TestIssuer::new().verifier();
    let result = umcp_audit::serve(
        listener,
        config(dir.path()),
        verifier,
        std::future::pending(),
    )
    .await;
    let error = result
        .expect_err("must not start with a fresh key")
        .to_string();
    assert!(error.contains("signing key"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Durability of the real binary under SIGKILL.

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real binary; it trusts the keys in `jwks_file`, the mechanism every service
/// supports for verifying tokens without an auth service.
fn spawn_binary(data_dir: &Path, port: u16, jwks_file: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_umcp-audit"))
            .env_clear()
            .env("UMCP_LISTEN", format!("127.0.0.1:{port}"))
            .env("UMCP_DATA_DIR", data_dir)
            .env("UMCP_AUTH__JWKS_FILE", jwks_file)
            .env("UMCP_LOG__FILTER", "warn")
            .env("UMCP_SIGN_INTERVAL_MS", "50")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn umcp-audit"),
    )
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_of_the_binary() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let data = dir.path().join("audit");
    let port = umcp_testkit::free_port();
    let channel = umcp_testkit::channel(([127, 0, 0, 1], port).into());
    let mut service = AuditServiceClient::new(umcp_testkit::authed(
        channel.clone(),
        issuer.bearer("svc", &[Role::Service]),
    ));
    let mut admin = AuditServiceClient::new(umcp_testkit::authed(
        channel,
        issuer.bearer("svc", &[Role::Admin]),
    ));

    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let child = spawn_binary(&data, port, &jwks);
        let up = eventually(Duration::from_secs(20), || {
            let mut c = admin.clone();
            async move { c.verify(VerifyRequest::default()).await.is_ok() }
        })
        .await;
        assert!(up, "umcp-audit did not come up (round {round})");
        // Writers racing the kill: whatever was acknowledged must be there after restart.
        let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for _ in 0..4 {
            let mut c = service.clone();
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                loop {
                    let batch = simple(5);
                    let ids: Vec<String> = batch.iter().map(|e| e.event_id.clone()).collect();
                    match c.record(RecordRequest { events: batch }).await {
                        Ok(_) => acked.lock().extend(ids),
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(child); // SIGKILL
        for w in writers {
            w.await.unwrap();
        }
        acknowledged.extend(acked.lock().drain(..));
    }
    let _child = spawn_binary(&data, port, &jwks);
    let up = eventually(Duration::from_secs(20), || {
        let mut c = admin.clone();
        async move { c.verify(VerifyRequest::default()).await.is_ok() }
    })
    .await;
    assert!(up);
    let report = admin
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    let mut stored = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let page = QueryRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: token,
            }),
            ..Default::default()
        };
        let r = admin.query(page).await.unwrap().into_inner();
        stored.extend(r.events.into_iter().map(|e| e.event_id));
        token = r.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(!acknowledged.is_empty());
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost",
        lost.len(),
        acknowledged.len()
    );
    assert_eq!(
        report.head_sequence as usize,
        stored.len(),
        "sequence numbers have no gaps"
    );
    // The signed checkpoints written between the kills still pin this log.
    let cp = export(&mut admin).await;
    assert!(verify_offline(&cp), "{cp:?}");
    assert!(
        cp.sequence > 0 && cp.sequence <= report.head_sequence,
        "{cp:?}"
    );
    assert_eq!(verify(&mut admin, 0, cp.sequence).await.head_hash, cp.hash);
    // Still accepting writes after all that.
    assert!(
        service
            .record(RecordRequest { events: simple(1) })
            .await
            .is_ok()
    );
}
