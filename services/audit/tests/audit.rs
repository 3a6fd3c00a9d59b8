//! Integration tests of the audit service on real servers: durability across SIGKILL of the
//! real binary, idempotency, input validation, permissions, queries, tails, and tamper
//! detection on files edited on disk.

#[path = "audit/reading.rs"]
mod reading;
#[path = "audit/recording.rs"]
mod recording;
#[path = "audit/tampering.rs"]
mod tampering;

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
            // No operations port: its fixed default is taken by any other instance on this machine.
            .env("UMCP_HTTP__LISTEN", "")
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
