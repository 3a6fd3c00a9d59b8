//! The graph service through real gRPC: a server on 127.0.0.1:0 in-process, and the real
//! `umcp-graph` binary for the crash-durability test. One test binary; helpers in `support/`.

mod cache;
mod limits;
mod neo4j;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::Code;
use umcp_proto::common::v1::value::Kind;
use umcp_proto::common::v1::{ListValue, MapValue};
use umcp_proto::graph::v1::{
    DeleteRequest, GetMetricsRequest, NodeInput, RelationshipRef, UpsertRequest,
};
use umcp_testkit::{eventually, free_port};

use support::{
    assert_status, int, node, query, query_req, rel, spawn_binary, start, string, v, wait_ready,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_query_metrics_delete_round_trip() {
    let mut h = start().await;
    let resp = h
        .client
        .upsert(UpsertRequest {
            nodes: vec![
                node(
                    "alice",
                    &["Person"],
                    &[
                        ("age", int(42)),
                        (
                            "tags",
                            v(Kind::ListValue(ListValue {
                                values: vec![string("a"), string("b")],
                            })),
                        ),
                    ],
                ),
                node("bob", &["Person", "Admin"], &[]),
            ],
            relationships: vec![rel("alice", "KNOWS", "bob")],
        })
        .await
        .expect("upsert")
        .into_inner();
    assert_eq!((resp.nodes_created, resp.relationships_created), (2, 1));
    let again = h
        .client
        .upsert(UpsertRequest {
            nodes: vec![node("alice", &[], &[("age", int(43))])],
            relationships: vec![rel("alice", "KNOWS", "bob")],
        })
        .await
        .expect("merge")
        .into_inner();
    assert_eq!(
        (
            again.nodes_created,
            again.nodes_updated,
            again.relationships_updated
        ),
        (0, 1, 1)
    );

    let r = query(&mut h.client, query_req("MATCH (a:Person {key: 'alice'})-[r:KNOWS]->(b) RETURN a, r, b.key AS bkey, a.age AS age")).await;
    assert_eq!(r.columns, vec!["a", "r", "bkey", "age"]);
    let row = &r.rows[0].values;
    let Some(Kind::NodeValue(a)) = &row[0].kind else {
        panic!("{row:?}")
    };
    assert_eq!(
        (a.key.as_str(), a.labels.clone()),
        ("alice", vec!["Person".to_string()])
    );
    assert!(!a.properties.contains_key("key"));
    assert_eq!(a.properties["age"], int(43));
    let Some(Kind::RelationshipValue(r0)) = &row[1].kind else {
        panic!("{row:?}")
    };
    assert_eq!(
        (
            r0.start_key.as_str(),
            r0.r#type.as_str(),
            r0.end_key.as_str()
        ),
        ("alice", "KNOWS", "bob")
    );
    assert_eq!(row[2], string("bob"));
    assert_eq!(row[3], int(43), "ints stay ints");

    let m = h
        .client
        .get_metrics(GetMetricsRequest {})
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!((m.node_count, m.relationship_count), (2, 1));
    assert_eq!(m.label_counts["Person"], 2);
    assert_eq!(m.relationship_type_counts["KNOWS"], 1);
    assert!((m.average_degree - 1.0).abs() < 1e-9);

    let d = h
        .client
        .delete(DeleteRequest {
            node_keys: vec!["alice".into(), "ghost".into()],
            relationships: vec![],
            detach: true,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(
        (d.nodes_deleted, d.relationships_deleted, d.not_found),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upserts_are_refused_with_precise_codes() {
    let mut h = start().await;
    let big = "x".repeat(64 * 1024 + 1);
    let map = v(Kind::MapValue(MapValue {
        fields: HashMap::from([("a".to_string(), int(1))]),
    }));
    let mixed = v(Kind::ListValue(ListValue {
        values: vec![int(1), string("a")],
    }));
    let nodes = |n: Vec<NodeInput>| UpsertRequest {
        nodes: n,
        relationships: vec![],
    };
    let one = |n: NodeInput| nodes(vec![n]);
    let labels17: Vec<String> = (0..17).map(|i| format!("L{i}")).collect();
    let props65 = (0..65).map(|i| (format!("p{i}"), int(i))).collect();
    let inv = Code::InvalidArgument;
    let cases: Vec<(&str, UpsertRequest, Code, &str)> = vec![
        ("empty", UpsertRequest::default(), inv, "at least one"),
        ("bad key", one(node("a-b", &[], &[])), inv, "nodes[0].key"),
        (
            "empty key",
            nodes(vec![node("ok", &[], &[]), node("", &[], &[])]),
            inv,
            "nodes[1].key",
        ),
        (
            "bad label",
            one(node("a", &["Has Space"], &[])),
            inv,
            "nodes[0].labels[0]",
        ),
        (
            "17 labels",
            one(NodeInput {
                key: "a".into(),
                labels: labels17,
                properties: HashMap::new(),
            }),
            inv,
            "at most 16",
        ),
        (
            "reserved key",
            one(node("a", &[], &[("key", string("x"))])),
            inv,
            "nodes[0].properties.key",
        ),
        (
            "map property",
            one(node("a", &[], &[("m", map)])),
            inv,
            "nodes[0].properties.m",
        ),
        (
            "NaN",
            one(node("a", &[], &[("f", v(Kind::DoubleValue(f64::NAN)))])),
            inv,
            "not finite",
        ),
        (
            "mixed list",
            one(node("a", &[], &[("l", mixed)])),
            inv,
            "homogeneous",
        ),
        (
            "huge value",
            one(node("a", &[], &[("s", string(&big))])),
            inv,
            "65536",
        ),
        (
            "65 properties",
            one(NodeInput {
                key: "a".into(),
                labels: vec![],
                properties: props65,
            }),
            inv,
            "at most 64",
        ),
        (
            "1001 nodes",
            nodes(
                (0..1001)
                    .map(|i| node(&format!("n{i}"), &[], &[]))
                    .collect(),
            ),
            inv,
            "at most 1000",
        ),
        (
            "5001 rels",
            UpsertRequest {
                nodes: vec![],
                relationships: vec![rel("a", "R", "b"); 5001],
            },
            inv,
            "at most 5000",
        ),
        (
            "bad rel type",
            UpsertRequest {
                nodes: vec![node("a", &[], &[])],
                relationships: vec![rel("a", "DEPENDS-ON", "a")],
            },
            inv,
            "relationships[0].type",
        ),
        (
            "missing endpoint",
            UpsertRequest {
                nodes: vec![node("a", &[], &[])],
                relationships: vec![rel("a", "R", "ghost")],
            },
            Code::NotFound,
            "ghost",
        ),
    ];
    for (what, req, code, needle) in cases {
        assert_status(h.client.upsert(req).await, code, needle, what);
    }
    let m = h
        .client
        .get_metrics(GetMetricsRequest {})
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!(m.node_count, 0, "no refused request wrote anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_and_deletes_are_refused_with_precise_codes() {
    let mut h = start().await;
    h.client
        .upsert(UpsertRequest {
            nodes: vec![node("a", &[], &[]), node("b", &[], &[])],
            relationships: vec![rel("a", "R", "b")],
        })
        .await
        .expect("seed");
    for cypher in [
        "CREATE (n {key: 'x'})",
        "match (n) merge (n)-[:R]->(:X)",
        "MATCH (n) SET n.x = 1",
        "MATCH (n) DETACH DELETE n",
        "MATCH (n) /* c */ REMOVE n.x",
        "MATCH (n) CALL { WITH n DELETE n } RETURN n",
        "MATCH (n) FOREACH (x IN [1] | SET n.x = x)",
        "LOAD CSV FROM '/etc/passwd' AS row RETURN row",
        "CALL db.labels()",
        "DROP INDEX idx",
    ] {
        assert_status(
            h.client.query(query_req(cypher)).await,
            Code::PermissionDenied,
            "not allowed",
            cypher,
        );
    }
    assert_status(
        h.client.query(query_req("MATCH (n\nRETURN n")).await,
        Code::InvalidArgument,
        "line 2",
        "syntax",
    );
    assert_status(
        h.client.query(query_req("   ")).await,
        Code::InvalidArgument,
        "cypher",
        "empty",
    );
    assert_status(
        h.client
            .query(query_req(&format!("RETURN 1 // {}", "x".repeat(64 * 1024))))
            .await,
        Code::InvalidArgument,
        "65536",
        "long cypher",
    );
    let mut limit = query_req("RETURN 1");
    limit.row_limit = 10_001;
    assert_status(
        h.client.query(limit).await,
        Code::InvalidArgument,
        "row_limit",
        "row limit",
    );
    let mut many = query_req("RETURN 1");
    many.parameters = (0..257).map(|i| (format!("p{i}"), int(i))).collect();
    assert_status(
        h.client.query(many).await,
        Code::InvalidArgument,
        "at most 256",
        "params",
    );
    let mut bad_name = query_req("RETURN 1");
    bad_name.parameters = HashMap::from([("a-b".to_string(), int(1))]);
    assert_status(
        h.client.query(bad_name).await,
        Code::InvalidArgument,
        "parameters.a-b",
        "param name",
    );
    let mut node_param = query_req("RETURN $n");
    node_param.parameters =
        HashMap::from([("n".to_string(), v(Kind::NodeValue(Default::default())))]);
    assert_status(
        h.client.query(node_param).await,
        Code::InvalidArgument,
        "parameters.n",
        "node param",
    );

    assert_status(
        h.client
            .delete(DeleteRequest {
                node_keys: vec!["a".into()],
                relationships: vec![],
                detach: false,
            })
            .await,
        Code::FailedPrecondition,
        "`a`",
        "delete with relationships",
    );
    assert_status(
        h.client.delete(DeleteRequest::default()).await,
        Code::InvalidArgument,
        "node_keys",
        "empty delete",
    );
    assert_status(
        h.client
            .delete(DeleteRequest {
                node_keys: vec!["bad key".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "node_keys[0]",
        "bad delete key",
    );
    // the same request deleting the relationship first may delete the node
    let d = h
        .client
        .delete(DeleteRequest {
            node_keys: vec!["a".into()],
            relationships: vec![RelationshipRef {
                start_key: "a".into(),
                r#type: "R".into(),
                end_key: "b".into(),
            }],
            detach: false,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!((d.nodes_deleted, d.relationships_deleted), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_parameters_and_row_limit() {
    let mut h = start().await;
    let nodes = (0..25)
        .map(|i| node(&format!("n{i}"), &["N"], &[("i", int(i))]))
        .collect();
    h.client
        .upsert(UpsertRequest {
            nodes,
            relationships: vec![],
        })
        .await
        .expect("seed");
    let mut req = query_req("MATCH (n:N) WHERE n.i >= $min RETURN n.i AS i ORDER BY i");
    req.parameters = HashMap::from([("min".to_string(), int(5))]);
    req.row_limit = 10;
    let r = query(&mut h.client, req).await;
    assert_eq!(r.rows.len(), 10);
    assert!(r.truncated);
    assert_eq!(r.rows[0].values[0], int(5));
    let mut req = query_req("MATCH (n:N) WHERE n.i >= $min RETURN n.i AS i");
    req.parameters = HashMap::from([("min".to_string(), int(5))]);
    req.row_limit = 20;
    let r = query(&mut h.client, req).await;
    assert_eq!((r.rows.len(), r.truncated), (20, false));
    let mut req = query_req("RETURN $s AS s, $f AS f, $b AS b, $t AS t");
    let ts = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 5_000,
    };
    req.parameters = HashMap::from([
        ("s".to_string(), string("x")),
        ("f".to_string(), v(Kind::DoubleValue(1.5))),
        ("b".to_string(), v(Kind::BoolValue(true))),
        ("t".to_string(), v(Kind::TimestampValue(ts))),
    ]);
    let r = query(&mut h.client, req).await;
    assert_eq!(
        r.rows[0].values,
        vec![
            string("x"),
            v(Kind::DoubleValue(1.5)),
            v(Kind::BoolValue(true)),
            v(Kind::TimestampValue(ts))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_hits_the_callers_deadline() {
    let mut h = start().await;
    // 160³ ≈ 4M combinations for C(160, 3) ≈ 670k matches: several seconds, and the engine cannot
    // interrupt the aggregate, so only the caller's deadline answers in time.
    let nodes = (0..160)
        .map(|i| node(&format!("n{i}"), &["N"], &[]))
        .collect();
    h.client
        .upsert(UpsertRequest {
            nodes,
            relationships: vec![],
        })
        .await
        .expect("seed");
    let mut req = tonic::Request::new(query_req(
        "MATCH (a:N), (b:N), (c:N) WHERE a.key < b.key AND b.key < c.key RETURN count(*)",
    ));
    req.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    assert_status(
        h.client.query(req).await,
        Code::DeadlineExceeded,
        "deadline",
        "slow query",
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_upserts_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("graph");
    let issuer = umcp_testkit::issuer::TestIssuer::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).expect("write jwks");
    let port = free_port();
    let mut child = spawn_binary(&data, port, &jwks);
    let mut client = wait_ready(port, &issuer).await;
    let db_file = data.join("graph.grafeo");
    let file_len = || db_file.metadata().map(|m| m.len()).unwrap_or(0);
    let empty_len = file_len();
    for i in 0..5 {
        if i == 3 {
            // a checkpoint folds the first writes into the database file
            let folded = eventually(Duration::from_secs(5), || {
                let grown = file_len() > empty_len;
                async move { grown }
            })
            .await;
            assert!(folded, "no checkpoint was written");
        }
        client
            .upsert(UpsertRequest {
                nodes: vec![node(&format!("k{i}"), &["Durable"], &[("i", int(i))])],
                relationships: if i > 0 {
                    vec![rel(&format!("k{}", i - 1), "NEXT", &format!("k{i}"))]
                } else {
                    vec![]
                },
            })
            .await
            .expect("upsert acknowledged");
    }
    // SIGKILL: no shutdown checkpoint; the last writes exist only in the write-ahead log.
    child.0.kill().expect("sigkill");
    child.0.wait().expect("reap");

    let port = free_port();
    let _child = spawn_binary(&data, port, &jwks);
    let mut client = wait_ready(port, &issuer).await;
    let m = client
        .get_metrics(GetMetricsRequest {})
        .await
        .expect("metrics")
        .into_inner();
    assert_eq!((m.node_count, m.relationship_count), (5, 4));
    let r = query(
        &mut client,
        query_req("MATCH (n:Durable {key: 'k4'}) RETURN n.i"),
    )
    .await;
    assert_eq!(r.rows[0].values[0], int(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let h = start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.server.channel());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "umcp.graph.v1.GraphService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_enforces_tokens_and_permissions_on_its_own_port() {
    use umcp_authz::permissions::Role;
    use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
    use umcp_testkit::authed;

    let h = start().await;
    let anonymous = GraphServiceClient::new(h.server.channel())
        .get_metrics(GetMetricsRequest {})
        .await;
    assert_status(anonymous, Code::Unauthenticated, "bearer", "no token");

    let viewer = h.issuer.bearer("viewer-1", &[Role::Viewer]);
    let mut as_viewer = GraphServiceClient::new(authed(h.server.channel(), viewer));
    as_viewer
        .get_metrics(GetMetricsRequest {})
        .await
        .expect("viewers may read metrics");
    let denied = as_viewer
        .upsert(UpsertRequest {
            nodes: vec![node("a", &[], &[])],
            relationships: vec![],
        })
        .await;
    assert_status(
        denied,
        Code::PermissionDenied,
        "graph:upsert",
        "viewer upsert",
    );
    let denied = as_viewer
        .delete(DeleteRequest {
            node_keys: vec!["a".into()],
            relationships: vec![],
            detach: false,
        })
        .await;
    assert_status(
        denied,
        Code::PermissionDenied,
        "graph:delete",
        "viewer delete",
    );

    let developer = h.issuer.bearer("dev-1", &[Role::Developer]);
    let denied = GraphServiceClient::new(authed(h.server.channel(), developer))
        .upsert(UpsertRequest {
            nodes: vec![node("a", &[], &[])],
            relationships: vec![],
        })
        .await;
    assert_status(
        denied,
        Code::PermissionDenied,
        "graph:upsert",
        "developer upsert",
    );
}
