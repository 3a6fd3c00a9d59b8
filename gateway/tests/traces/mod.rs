//! One request across the real mesh binaries, traced: auth, audit, graph and the gateway run as
//! separate processes exporting over OTLP to a collector in this test (a tonic
//! `TraceService`). An `Upsert` through the gateway must produce spans from at least three
//! processes sharing one trace id, each hop the child of the one that called it, and its audit
//! events and log lines must carry the same correlation id and trace id.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use parking_lot::Mutex;
use tonic::Request;
use umcp_proto::audit::v1::QueryRequest;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{NodeInput, UpsertRequest};
use umcp_testkit::{eventually, free_port};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    /// OTLP span kind: 2 server, 3 client.
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Span>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The mesh's binaries: beside the gateway's (cargo builds every workspace binary before it
/// runs tests with `--workspace --all-targets`); built here when this package was tested alone.
fn bin_dir() -> PathBuf {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_umcp-gateway"));
    let dir = gateway.parent().expect("bin dir").to_path_buf();
    let wanted = ["umcp-auth", "umcp-audit", "umcp-graph"];
    if wanted.iter().any(|b| !dir.join(b).exists()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--bins"]);
        for b in wanted {
            build.args(["-p", b]);
        }
        assert!(build.status().expect("run cargo build").success());
    }
    dir
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM, so each process flushes its last spans, as in production.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &Path, name: &str, work: &Path, env: &[(&str, String)]) -> Process {
    let log = std::fs::File::create(work.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(bin.join(format!("umcp-{name}")))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn umcp-{name}: {e}"));
    Process(child)
}

async fn listening(port: u16) -> bool {
    eventually(Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_gateway_graph_and_audit() {
    let collector = Collector::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr: SocketAddr = otlp.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );

    let bin = bin_dir();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let [auth, audit, graph, gw] = [(); 4].map(|()| free_port());
    let key_file = data.join("service-api-key.txt");
    let common = |listen: u16| {
        vec![
            ("UMCP_LISTEN", format!("127.0.0.1:{listen}")),
            ("UMCP_HTTP__LISTEN", String::new()),
            ("UMCP_AUTH__URL", format!("http://127.0.0.1:{auth}")),
            ("UMCP_AUTH__API_KEY_FILE", key_file.display().to_string()),
            ("UMCP_AUDIT__URL", format!("http://127.0.0.1:{audit}")),
            ("UMCP_LOG__FORMAT", "json".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}")),
            // Export within 100 ms instead of 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ]
    };
    let mut env = common(auth);
    env.extend([
        ("UMCP_DATA_ROOT", data.display().to_string()),
        (
            "UMCP_BOOTSTRAP_SERVICE_KEY_FILE",
            key_file.display().to_string(),
        ),
        (
            "UMCP_AUDIT__SPOOL_DIR",
            data.join("spool/auth").display().to_string(),
        ),
    ]);
    let _auth = spawn(&bin, "auth", work.path(), &env);
    assert!(listening(auth).await, "auth did not start");
    assert!(
        eventually(Duration::from_secs(20), || {
            let key_file = key_file.clone();
            async move { key_file.metadata().is_ok_and(|m| m.len() > 0) }
        })
        .await
    );
    let mut env = common(audit);
    env.push(("UMCP_DATA_DIR", data.join("audit").display().to_string()));
    let _audit = spawn(&bin, "audit", work.path(), &env);
    assert!(listening(audit).await, "audit did not start");
    let mut env = common(graph);
    env.extend([
        ("UMCP_DATA_DIR", data.join("graph").display().to_string()),
        (
            "UMCP_AUDIT__SPOOL_DIR",
            data.join("spool/graph").display().to_string(),
        ),
    ]);
    let _graph = spawn(&bin, "graph", work.path(), &env);
    assert!(listening(graph).await, "graph did not start");
    let mut env = common(gw);
    env.extend([
        ("UMCP_BACKENDS__AUTH", format!("http://127.0.0.1:{auth}")),
        ("UMCP_BACKENDS__GRAPH", format!("http://127.0.0.1:{graph}")),
        ("UMCP_BACKENDS__AUDIT", format!("http://127.0.0.1:{audit}")),
        ("UMCP_BACKENDS__EXECUTION", String::new()),
        (
            "UMCP_AUDIT__SPOOL_DIR",
            data.join("spool/gateway").display().to_string(),
        ),
    ]);
    let gateway = spawn(&bin, "gateway", work.path(), &env);
    assert!(listening(gw).await, "gateway did not start");

    let admin_file = data.join("bootstrap-admin.txt");
    assert!(
        eventually(Duration::from_secs(20), || {
            let f = admin_file.clone();
            async move { f.metadata().is_ok_and(|m| m.len() > 0) }
        })
        .await
    );
    let admin_text = std::fs::read_to_string(&admin_file).unwrap();
    let password = admin_text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("bootstrap password line");
    let channel = umcp_testkit::channel(SocketAddr::from(([127, 0, 0, 1], gw)));
    let mut token = None;
    for _ in 0..200 {
        let answer = AuthServiceClient::new(channel.clone())
            .login(pb::LoginRequest {
                username: "admin".into(),
                password: password.into(),
            })
            .await;
        if let Ok(r) = answer {
            token = r.into_inner().tokens.map(|t| t.access_token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token.expect("admin login through the gateway");

    let correlation = "trace-test-upsert-1";
    let mut upsert = bearer(
        UpsertRequest {
            nodes: vec![NodeInput {
                key: "traced".into(),
                labels: vec!["Module".into()],
                ..NodeInput::default()
            }],
            ..UpsertRequest::default()
        },
        &token,
    );
    upsert
        .metadata_mut()
        .insert("x-correlation-id", correlation.parse().unwrap());
    GraphServiceClient::new(channel.clone())
        .upsert(upsert)
        .await
        .expect("upsert through the gateway");

    // The gateway's server span of the Upsert names the trace.
    let find = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| {
                s.service == "umcp-gateway"
                    && s.kind == SERVER
                    && s.name == "umcp.graph.v1.GraphService/Upsert"
            })
            .cloned()
    };
    let complete = |spans: &[Span]| {
        let root = find(spans)?;
        spans
            .iter()
            .any(|s| s.trace_id == root.trace_id && s.service == "umcp-audit")
            .then_some(root)
    };
    let mut root = None;
    for _ in 0..200 {
        root = complete(&collector.0.lock());
        if root.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(root) = root else {
        panic!(
            "no spans of the upsert from the gateway and the audit service: {:#?}",
            collector.0.lock()
        );
    };
    let trace: Vec<Span> = collector
        .0
        .lock()
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    assert!(
        ["umcp-gateway", "umcp-graph", "umcp-audit"]
            .iter()
            .all(|s| services.contains(s)),
        "{trace:#?}"
    );
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_of = |span: &Span| by_id.get(span.parent.as_str()).copied();
    // gateway server → gateway client (to graph) → graph server → graph store.
    let graph_server = trace
        .iter()
        .find(|s| {
            s.service == "umcp-graph"
                && s.kind == SERVER
                && s.name == "umcp.graph.v1.GraphService/Upsert"
        })
        .expect("graph server span");
    let client = parent_of(graph_server).expect("graph server span's parent is in the trace");
    assert_eq!(
        (client.service.as_str(), client.kind, client.name.as_str()),
        ("umcp-gateway", CLIENT, "umcp.graph.v1.GraphService/Upsert")
    );
    assert_eq!(
        parent_of(client).map(|s| &s.span_id),
        Some(&root.span_id),
        "{trace:#?}"
    );
    assert!(
        root.parent.is_empty(),
        "the gateway started the trace: {root:?}"
    );
    assert!(
        trace
            .iter()
            .any(|s| s.name == "store.upsert" && s.parent == graph_server.span_id),
        "{trace:#?}"
    );
    // Each audit commit is the child of the hop that recorded the event.
    let commits: Vec<&Span> = trace.iter().filter(|s| s.service == "umcp-audit").collect();
    assert!(commits.iter().all(|c| {
        let parent = parent_of(c).map(|p| p.span_id.as_str());
        parent == Some(root.span_id.as_str()) || parent == Some(graph_server.span_id.as_str())
    }));

    // The request's audit events carry its correlation id and trace id.
    let events = AuditServiceClient::new(channel.clone())
        .query(bearer(
            QueryRequest {
                correlation_id: correlation.into(),
                ..QueryRequest::default()
            },
            &token,
        ))
        .await
        .expect("audit query")
        .into_inner()
        .events;
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e.trace_id == root.trace_id),
        "{events:#?}"
    );
    drop(gateway);
    // And so do the log lines of that request, in every process that handled it.
    for name in ["gateway", "graph"] {
        let log = std::fs::read_to_string(work.path().join(format!("{name}.log"))).unwrap();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(correlation)).collect();
        assert!(!lines.is_empty(), "{name}: no line names {correlation}");
        for line in lines {
            let json: serde_json::Value = serde_json::from_str(line).expect("json log line");
            assert_eq!(
                json["span"]["trace_id"].as_str(),
                Some(root.trace_id.as_str()),
                "{name}: {line}"
            );
        }
    }
    server.abort();
}
