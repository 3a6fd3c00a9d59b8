//! Results persisted to a real graph service (in-process, its own issuer), and a graph outage
//! that never reaches the user: counted, logged, and the breaker opens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use umcp_authz::permissions::Role;
use umcp_execution::graph_sink::{GraphSink, GraphSinkOptions, StaticToken, mapping};
use umcp_execution::model::{Language, RunStatus};
use umcp_execution::service::ExecutionService;
use umcp_execution::sink::ResultSink;
use umcp_proto::common::v1::Value;
use umcp_proto::common::v1::value::Kind;
use umcp_proto::graph::v1::QueryRequest;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_resilience::breaker::{BreakerConfig, State};
use umcp_testkit::issuer::TestIssuer;
use umcp_testkit::{Spawned, authed, eventually};

fn graph_config(dir: &std::path::Path) -> umcp_graph::GraphConfig {
    umcp_graph::GraphConfig {
        data_dir: dir.join("graph"),
        ..umcp_graph::GraphConfig::default()
    }
}

async fn start_graph(issuer: &TestIssuer, dir: &std::path::Path) -> Spawned {
    let config = graph_config(dir);
    let verifier = issuer.verifier();
    Spawned::start(|listener, shutdown| {
        umcp_graph::serve(
            listener,
            config,
            umcp_graph::Wiring::unaudited(verifier, "graph"),
            shutdown.wait(),
        )
    })
    .await
}

/// The graph service again on `addr` with the data of `dir`; stops when the sender fires.
async fn restart_graph(
    issuer: &TestIssuer,
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the graph's port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(umcp_graph::serve(
        listener,
        graph_config(dir),
        umcp_graph::Wiring::unaudited(issuer.verifier(), "graph"),
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, task)
}

/// A sink with a small breaker window (an outage opens it after a few attempts), a short
/// open wait and a single half-open probe (recovery within the test's patience).
fn sink(url: String, issuer: &TestIssuer) -> Arc<GraphSink> {
    let options = GraphSinkOptions {
        url,
        queue_capacity: 64,
        batch: 100,
        attempt_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(2),
        retry: Default::default(),
        breaker: BreakerConfig {
            sliding_window_size: 4,
            minimum_number_of_calls: 4,
            wait_duration_in_open_state: Duration::from_secs(2),
            permitted_number_of_calls_in_half_open_state: 1,
            ..BreakerConfig::default()
        },
    };
    let token = issuer.token("execution-service", &[Role::Service]);
    let credentials = Arc::new(StaticToken::new(token.as_str()));
    Arc::new(GraphSink::start(options, credentials).expect("sink"))
}

async fn service_with_sink(sink: Arc<GraphSink>) -> Arc<ExecutionService> {
    let config = crate::config(2);
    let sandbox = umcp_execution::build_sandbox(&config).expect("sandbox");
    let sink: Arc<dyn ResultSink> = sink;
    Arc::new(
        ExecutionService::new(config, Arc::new(sandbox), Some(sink))
            .await
            .expect("service"),
    )
}

type Client = GraphServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        umcp_testkit::Bearer,
    >,
>;

/// Rows of `cypher` as strings (non-string values debug-printed); empty on any error.
async fn rows(client: &mut Client, cypher: &str) -> Vec<Vec<String>> {
    let request = QueryRequest {
        cypher: cypher.into(),
        ..Default::default()
    };
    let Ok(response) = client.query(request).await else {
        return Vec::new();
    };
    let text = |v: &Value| match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    };
    response
        .into_inner()
        .rows
        .iter()
        .map(|r| r.values.iter().map(text).collect())
        .collect()
}

/// Polls `queries` until together they return `want` rows (or 10 s pass); returns the rows.
async fn wait_rows(client: &mut Client, queries: &[&str], want: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut found = Vec::new();
        for q in queries {
            found.extend(rows(client, q).await);
        }
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_the_graph_and_a_graph_outage_never_reaches_the_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = TestIssuer::new();
    let graph = start_graph(&issuer, dir.path()).await;
    let sink = sink(graph.url(), &issuer);
    let svc = service_with_sink(Arc::clone(&sink)).await;
    let mut client: Client = GraphServiceClient::new(authed(
        graph.channel(),
        issuer.bearer("reader", &[Role::Viewer]),
    ));

    let run = svc
        .execute("carol", crate::py("print('hi')"))
        .await
        .expect("execute");
    assert_eq!(run.status, RunStatus::Ok);
    let lint = svc
        .lint("carol", Language::Python, "import os\n")
        .await
        .expect("lint");

    let user = mapping::user_key("carol");
    let executions = format!(
        "MATCH (u:User {{key: '{user}'}})-[:RAN]->(r:ExecutionResult) \
         RETURN r.id AS id, r.status AS status, r.language AS language, r.exit_code AS code, \
         r.stdout_excerpt AS out"
    );
    let lints = format!(
        "MATCH (u:User {{key: '{user}'}})-[:RAN]->(r:LintResult) RETURN r.id AS id, r.code_sha256 AS sha"
    );
    let found = wait_rows(&mut client, &[&executions, &lints], 2).await;
    assert_eq!(found.len(), 2, "both results in the graph: {found:?}");
    assert_eq!(
        found[0],
        [run.id.as_str(), "ok", "python", "0", "hi\n"],
        "execution node"
    );
    assert_eq!(found[1], [lint.id.as_str(), lint.code_sha256.as_str()]);
    // The graph answers after committing: the counter follows a moment later.
    let counted = eventually(Duration::from_secs(5), || {
        let s = sink.stats();
        async move { s.persisted == 2 }
    })
    .await;
    let stats = sink.stats();
    assert!(counted, "{stats:?}");
    assert_eq!(
        (stats.failed, stats.dropped, stats.breaker_rejected),
        (0, 0, 0)
    );

    // The graph goes away: every call still succeeds, quickly; the sink counts, the breaker
    // opens and results wait in the queue.
    let addr = graph.addr;
    graph.stop().await.expect("graph stopped");
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let started = Instant::now();
        let r = svc
            .execute("carol", crate::py("print(6 * 7)"))
            .await
            .expect("execute during the outage");
        slowest = slowest.max(started.elapsed());
        assert_eq!(crate::text(&r.stdout).trim(), "42", "run {i}");
        // One result at a time (lost or held back, not in flight), so the breaker sees
        // separate calls.
        let settled = eventually(Duration::from_secs(10), || {
            let s = sink.stats();
            async move { s.persisted + s.failed + s.queued == 3 + i }
        })
        .await;
        assert!(settled, "result {i}: {:?}", sink.stats());
    }
    let stats = sink.stats();
    eprintln!("graph outage: slowest execute {slowest:?}; {stats:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "the outage never slows a call: slowest {slowest:?}"
    );
    assert!(stats.failed >= 1, "the first failure is counted: {stats:?}");
    assert!(
        stats.breaker_rejected >= 1,
        "then the breaker holds results back: {stats:?}"
    );
    assert!(stats.queued >= 1, "{stats:?}");
    let breaker = sink.breaker().metrics();
    assert!(
        breaker.transitions >= 1 && breaker.not_permitted_calls >= 1,
        "{breaker:?}"
    );

    // The graph comes back on the same address: a probe closes the breaker and the held-back
    // results are written.
    let (stop, graph) = restart_graph(&issuer, dir.path(), addr).await;
    let flushed = eventually(Duration::from_secs(15), || {
        let s = sink.stats();
        async move { s.queued == 0 && s.persisted + s.failed + s.dropped == 8 }
    })
    .await;
    let stats = sink.stats();
    eprintln!("after the outage: {stats:?}");
    assert!(flushed, "{stats:?}");
    assert!(
        stats.persisted >= 6,
        "at most the first failure and one failed probe are lost: {stats:?}"
    );
    assert_eq!(sink.breaker().state(), State::Closed);
    let mut client: Client = GraphServiceClient::new(authed(
        umcp_testkit::channel(addr),
        issuer.bearer("reader", &[Role::Viewer]),
    ));
    let found = wait_rows(&mut client, &[&executions], stats.persisted as usize - 1).await;
    assert_eq!(
        found.len() as u64,
        stats.persisted - 1,
        "every persisted run is in the graph"
    );
    let _ = stop.send(());
    graph.await.expect("graph task").expect("graph stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_code_is_persisted_through_the_grpc_service() {
    use umcp_proto::execution::v1 as pb;
    use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = TestIssuer::new();
    let graph = start_graph(&issuer, dir.path()).await;
    let sink: Arc<dyn ResultSink> = sink(graph.url(), &issuer);
    let verifier = issuer.verifier();
    let config = crate::config(2);
    let server = Spawned::start(|listener, shutdown| {
        umcp_execution::serve(
            listener,
            config,
            umcp_execution::Wiring::unaudited(verifier, "execution"),
            Some(sink),
            shutdown.wait(),
        )
    })
    .await;
    let developer = issuer.bearer("dave", &[Role::Developer]);
    let mut exec = ExecutionServiceClient::new(authed(server.channel(), developer));
    let request = pb::GenerateCodeRequest {
        template: "def {{ name }}(): pass\n".into(),
        context_json: r#"{"name": "f"}"#.into(),
        language: pb::Language::Python as i32,
    };
    let mut generated = None;
    for _ in 0..100 {
        if let Ok(r) = exec.generate_code(request.clone()).await {
            generated = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let generated = generated.expect("server came up");
    let mut client: Client = GraphServiceClient::new(authed(
        graph.channel(),
        issuer.bearer("reader", &[Role::Viewer]),
    ));
    let cypher = "MATCH (u:User {key: 'user_dave'})-[:RAN]->(g:GeneratedCode) \
                  RETURN g.id AS id, g.language AS language, g.output_bytes AS bytes";
    let found = wait_rows(&mut client, &[cypher], 1).await;
    assert_eq!(found.len(), 1, "generated code in the graph");
    let bytes = generated.output.len().to_string();
    assert_eq!(found[0], [generated.id.as_str(), "python", bytes.as_str()]);
    server.stop().await.expect("execution stopped");
    graph.stop().await.expect("graph stopped");
}
