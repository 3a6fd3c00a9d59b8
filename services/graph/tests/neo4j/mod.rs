//! The graph service through real gRPC on Neo4j (`UMCP_NEO4J__URI`): a server on 127.0.0.1:0
//! over the Neo4j of `umcp_testkit::neo4j::shared()` (Neo4j's test harness, which runs WITHOUT
//! authentication; production always authenticates). Skipped, with the reason printed, where
//! Java or the launcher is missing.

use tonic::Code;
use umcp_graph::GraphConfig;
use umcp_proto::common::v1::value::Kind;
use umcp_proto::graph::v1::{GetMetricsRequest, UpsertRequest};
use umcp_store::neo4j::{Neo4jConfig, Neo4jStore};

use crate::support::{assert_status, int, node, query, query_req, rel, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_service_serves_from_neo4j_when_its_uri_is_set() {
    let Some(neo4j) = umcp_testkit::neo4j::shared() else {
        eprintln!("graph on neo4j SKIPPED (the reason is printed above)");
        return;
    };
    let neo4j_config = Neo4jConfig::for_uri(neo4j.uri(), "unused-by-the-harness");
    Neo4jStore::open(neo4j_config.clone())
        .await
        .expect("open")
        .wipe()
        .await
        .expect("wipe");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = GraphConfig {
        // Must stay unused: the data lives in Neo4j.
        data_dir: dir.path().join("unused"),
        neo4j: neo4j_config,
        ..GraphConfig::default()
    };
    let mut harness = start_with(dir, config).await;
    let client = &mut harness.client;

    let resp = client
        .upsert(UpsertRequest {
            nodes: vec![
                node("alice", &["Person"], &[("age", int(42))]),
                node("bob", &["Person"], &[]),
            ],
            relationships: vec![rel("alice", "KNOWS", "bob")],
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((resp.nodes_created, resp.relationships_created), (2, 1));
    let r = query(
        client,
        query_req("MATCH (a:Person {key: 'alice'})-[r:KNOWS]->(b) RETURN a, r, b.key AS bkey"),
    )
    .await;
    assert_eq!(r.columns, vec!["a", "r", "bkey"]);
    let Some(Kind::NodeValue(a)) = &r.rows[0].values[0].kind else {
        panic!("{r:?}")
    };
    assert_eq!(
        (a.key.as_str(), a.labels.clone()),
        ("alice", vec!["Person".to_string()])
    );
    let m = client
        .get_metrics(GetMetricsRequest {})
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!((m.node_count, m.relationship_count), (2, 1));
    assert_eq!(m.label_counts.get("Person"), Some(&2));
    assert!(
        !harness._dir.path().join("unused").exists(),
        "the embedded store was opened"
    );

    assert_status(
        client.query(query_req("MATCH (n) SET n.x = 1")).await,
        Code::PermissionDenied,
        "read-only",
        "a write in a query",
    );
    assert_status(
        client.query(query_req("RETURN 1 / 0 AS x")).await,
        Code::InvalidArgument,
        "/ by zero",
        "Neo4j's own message",
    );
}
