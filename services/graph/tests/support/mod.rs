//! Shared helpers of the graph integration tests: an in-process server, the real binary, and
//! request builders.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use umcp_authz::permissions::Role;
use umcp_graph::GraphConfig;
use umcp_proto::common::v1::Value;
use umcp_proto::common::v1::value::Kind;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{
    GetMetricsRequest, NodeInput, QueryRequest, QueryResponse, RelationshipInput,
};
use umcp_testkit::issuer::TestIssuer;
use umcp_testkit::{Bearer, Spawned, authed, eventually};

/// A client that sends an admin token on every call (tests of the token checks themselves
/// build their own clients).
pub(crate) type Client = GraphServiceClient<InterceptedService<Channel, Bearer>>;

pub(crate) struct Harness {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) server: Spawned,
    pub(crate) issuer: TestIssuer,
    pub(crate) client: Client,
}

pub(crate) async fn start() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = GraphConfig {
        data_dir: dir.path().join("graph"),
        ..GraphConfig::default()
    };
    start_with(dir, config).await
}

/// A server with `config` (whose data lives in `dir` or elsewhere, e.g. Neo4j).
pub(crate) async fn start_with(dir: tempfile::TempDir, config: GraphConfig) -> Harness {
    let issuer = TestIssuer::new();
    let verifier = issuer.verifier();
    let server = Spawned::start(|listener, shutdown| {
        umcp_graph::serve(
            listener,
            config,
            umcp_graph::Wiring::unaudited(verifier, "graph"),
            shutdown.wait(),
        )
    })
    .await;
    let client = admin_client(server.channel(), &issuer);
    Harness {
        _dir: dir,
        server,
        issuer,
        client,
    }
}

pub(crate) fn admin_client(channel: Channel, issuer: &TestIssuer) -> Client {
    caller_client(channel, issuer, "admin-1")
}

/// A client whose admin token has the subject `sub` (a distinct caller for admission).
pub(crate) fn caller_client(channel: Channel, issuer: &TestIssuer, sub: &str) -> Client {
    GraphServiceClient::new(authed(channel, issuer.bearer(sub, &[Role::Admin])))
}

pub(crate) fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}
pub(crate) fn int(i: i64) -> Value {
    v(Kind::IntValue(i))
}
pub(crate) fn string(s: &str) -> Value {
    v(Kind::StringValue(s.into()))
}

pub(crate) fn node(key: &str, labels: &[&str], props: &[(&str, Value)]) -> NodeInput {
    NodeInput {
        key: key.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

pub(crate) fn rel(start: &str, t: &str, end: &str) -> RelationshipInput {
    RelationshipInput {
        start_key: start.into(),
        r#type: t.into(),
        end_key: end.into(),
        properties: HashMap::new(),
    }
}

pub(crate) fn query_req(cypher: &str) -> QueryRequest {
    QueryRequest {
        cypher: cypher.into(),
        parameters: HashMap::new(),
        row_limit: 0,
    }
}

pub(crate) async fn query(client: &mut Client, req: QueryRequest) -> QueryResponse {
    client.query(req).await.expect("query").into_inner()
}

pub(crate) fn assert_status<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needle: &str,
    what: &str,
) {
    match r {
        Ok(ok) => panic!("{what}: expected {code:?}, got {ok:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert!(
                status.message().contains(needle),
                "{what}: {:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}

/// The `umcp-graph` child process, killed (SIGKILL) and reaped when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real binary; it trusts the keys in `jwks_file` (no auth service needed).
pub(crate) fn spawn_binary(
    data_dir: &std::path::Path,
    port: u16,
    jwks_file: &std::path::Path,
) -> KillOnDrop {
    spawn_binary_with(data_dir, port, jwks_file, &[])
}

/// [`spawn_binary`] with more (or overriding) environment variables.
pub(crate) fn spawn_binary_with(
    data_dir: &std::path::Path,
    port: u16,
    jwks_file: &std::path::Path,
    env: &[(&str, &str)],
) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_umcp-graph"))
            .env_clear()
            .env("UMCP_LISTEN", format!("127.0.0.1:{port}"))
            // No operations port: its fixed default is taken by any other instance on this machine.
            .env("UMCP_HTTP__LISTEN", "")
            .env("UMCP_DATA_DIR", data_dir)
            .env("UMCP_AUTH__JWKS_FILE", jwks_file)
            .env("UMCP_LOG__FILTER", "warn")
            .env("UMCP_CHECKPOINT_INTERVAL_MS", "200")
            .env("UMCP_MEMORY_CEILING_MB", "256")
            .env("UMCP_MAX_QUERY_TIME_MS", "3000")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn umcp-graph"),
    )
}

pub(crate) async fn wait_ready(port: u16, issuer: &TestIssuer) -> Client {
    let client = admin_client(umcp_testkit::channel(([127, 0, 0, 1], port).into()), issuer);
    let ready = eventually(Duration::from_secs(20), || {
        let mut c = client.clone();
        async move { c.get_metrics(GetMetricsRequest {}).await.is_ok() }
    })
    .await;
    assert!(ready, "umcp-graph did not become ready on port {port}");
    client
}
