//! Backend-independent conformance cases. Each takes an EMPTY store; a backend's test file runs
//! every case against a fresh instance (see `tests/store/grafeo.rs` and `tests/store/neo4j.rs`).

use std::collections::BTreeMap;

use umcp_store::{
    DeleteBatch, GraphStore, Node, NodeInput, QueryResult, ReadQuery, RelInput, RelRef, StoreError,
    Timestamp, UpsertBatch, UpsertCounts, Value,
};

pub(crate) fn props(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub(crate) fn node(key: &str, labels: &[&str], properties: &[(&str, Value)]) -> NodeInput {
    NodeInput {
        key: key.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        properties: props(properties),
    }
}

pub(crate) fn rel(
    start: &str,
    rel_type: &str,
    end: &str,
    properties: &[(&str, Value)],
) -> RelInput {
    RelInput {
        start_key: start.into(),
        rel_type: rel_type.into(),
        end_key: end.into(),
        properties: props(properties),
    }
}

pub(crate) async fn upsert(
    store: &dyn GraphStore,
    nodes: Vec<NodeInput>,
    rels: Vec<RelInput>,
) -> UpsertCounts {
    store
        .upsert(UpsertBatch { nodes, rels })
        .await
        .expect("upsert succeeds")
}

pub(crate) async fn query_with(
    store: &dyn GraphStore,
    cypher: &str,
    params: BTreeMap<String, Value>,
    row_limit: u32,
) -> Result<QueryResult, StoreError> {
    store
        .query(ReadQuery {
            cypher: cypher.into(),
            params,
            row_limit,
            deadline: None,
            caller: None,
        })
        .await
}

pub(crate) async fn query(store: &dyn GraphStore, cypher: &str) -> QueryResult {
    query_with(store, cypher, BTreeMap::new(), 1000)
        .await
        .unwrap_or_else(|e| panic!("{cypher}: {e:?}"))
}

pub(crate) async fn count_nodes(store: &dyn GraphStore) -> u64 {
    store.metrics().await.expect("metrics").node_count
}

fn single(r: &QueryResult) -> &Value {
    assert_eq!(r.rows.len(), 1, "{r:?}");
    &r.rows[0][0]
}

fn as_node(v: &Value) -> &Node {
    match v {
        Value::Node(n) => n,
        other => panic!("expected a node, got {other:?}"),
    }
}

pub(crate) async fn upsert_merges_nodes_by_key(store: &dyn GraphStore) {
    let c = upsert(
        store,
        vec![node(
            "a",
            &["A"],
            &[("x", Value::Int(1)), ("y", Value::Int(2))],
        )],
        vec![],
    )
    .await;
    assert_eq!((c.nodes_created, c.nodes_updated), (1, 0));
    let c = upsert(
        store,
        vec![node(
            "a",
            &["B", "A"],
            &[
                ("x", Value::Int(10)),
                ("y", Value::Null),
                ("z", Value::Bool(true)),
            ],
        )],
        vec![],
    )
    .await;
    assert_eq!((c.nodes_created, c.nodes_updated), (0, 1));
    let r = query(store, "MATCH (n {key: 'a'}) RETURN n").await;
    let n = as_node(single(&r));
    assert_eq!(n.key, "a");
    assert_eq!(n.labels, vec!["A", "B"]);
    assert_eq!(
        n.properties,
        props(&[("x", Value::Int(10)), ("z", Value::Bool(true))])
    );
    assert_eq!(count_nodes(store).await, 1);

    // a re-upsert that changes nothing is still an acknowledged merge
    let c = upsert(store, vec![node("a", &[], &[])], vec![]).await;
    assert_eq!((c.nodes_created, c.nodes_updated), (0, 1));

    // the same key twice in one request is one node
    let c = upsert(
        store,
        vec![node("d", &[], &[]), node("d", &["D"], &[])],
        vec![],
    )
    .await;
    assert_eq!((c.nodes_created, c.nodes_updated), (1, 1));
    assert_eq!(count_nodes(store).await, 2);
}

pub(crate) async fn upsert_merges_relationships_per_type_and_ordered_pair(store: &dyn GraphStore) {
    let c = upsert(
        store,
        vec![node("a", &[], &[]), node("b", &[], &[])],
        vec![rel(
            "a",
            "R",
            "b",
            &[("w", Value::Int(1)), ("v", Value::Int(0))],
        )],
    )
    .await;
    assert_eq!(
        c,
        UpsertCounts {
            nodes_created: 2,
            nodes_updated: 0,
            rels_created: 1,
            rels_updated: 0
        }
    );
    // endpoints that only exist in the store are fine
    let c = upsert(
        store,
        vec![],
        vec![
            rel("a", "R", "b", &[("w", Value::Int(2)), ("v", Value::Null)]),
            rel("a", "S", "b", &[]),
            rel("b", "R", "a", &[]),
        ],
    )
    .await;
    assert_eq!((c.rels_created, c.rels_updated), (2, 1));
    let m = store.metrics().await.expect("metrics");
    assert_eq!(m.rel_count, 3);
    let r = query(store, "MATCH ({key: 'a'})-[r:R]->({key: 'b'}) RETURN r").await;
    match single(&r) {
        Value::Relationship(rel) => {
            assert_eq!(
                (
                    rel.start_key.as_str(),
                    rel.rel_type.as_str(),
                    rel.end_key.as_str()
                ),
                ("a", "R", "b")
            );
            assert_eq!(rel.properties, props(&[("w", Value::Int(2))]));
        }
        other => panic!("expected a relationship, got {other:?}"),
    }
}

pub(crate) async fn missing_endpoint_fails_the_whole_request(store: &dyn GraphStore) {
    let err = store
        .upsert(UpsertBatch {
            nodes: vec![node("x", &["X"], &[]), node("y", &[], &[])],
            rels: vec![rel("x", "R", "y", &[]), rel("x", "R", "ghost", &[])],
        })
        .await
        .expect_err("missing endpoint");
    assert_eq!(
        err,
        StoreError::MissingEndpoint {
            field: "relationships[1].end_key".into(),
            key: "ghost".into()
        }
    );
    assert_eq!(
        count_nodes(store).await,
        0,
        "nothing of the failed request was written"
    );
    assert_eq!(store.metrics().await.expect("metrics").rel_count, 0);
}

pub(crate) async fn invalid_input_writes_nothing(store: &dyn GraphStore) {
    let err = store
        .upsert(UpsertBatch {
            nodes: vec![node("ok", &[], &[]), node("not ok", &[], &[])],
            rels: vec![],
        })
        .await
        .expect_err("invalid key");
    assert!(
        matches!(&err, StoreError::InvalidInput { field, .. } if field == "nodes[1].key"),
        "{err:?}"
    );
    let err = store
        .upsert(UpsertBatch {
            nodes: vec![node("ok", &[], &[("m", Value::Map(BTreeMap::new()))])],
            rels: vec![],
        })
        .await
        .expect_err("map property");
    assert!(
        matches!(&err, StoreError::InvalidInput { field, .. } if field == "nodes[0].properties.m"),
        "{err:?}"
    );
    assert_eq!(count_nodes(store).await, 0);
}

pub(crate) async fn query_values_keep_their_types(store: &dyn GraphStore) {
    let ts = Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_456_000,
    };
    upsert(
        store,
        vec![node(
            "t",
            &["T"],
            &[
                ("i", Value::Int(9_007_199_254_740_993)),
                ("f", Value::Float(2.5)),
                ("s", Value::String("hé".into())),
                ("b", Value::Bool(false)),
                ("by", Value::Bytes(vec![0, 255])),
                ("ts", Value::Timestamp(ts)),
                ("l", Value::List(vec![Value::Int(1), Value::Int(2)])),
            ],
        )],
        vec![],
    )
    .await;
    let r = query(store, "MATCH (n {key: 't'}) RETURN n.i AS i, n.f AS f, n.s AS s, n.b AS b, n.by AS by, n.ts AS ts, n.l AS l").await;
    assert_eq!(r.columns, vec!["i", "f", "s", "b", "by", "ts", "l"]);
    assert_eq!(
        r.rows,
        vec![vec![
            Value::Int(9_007_199_254_740_993),
            Value::Float(2.5),
            Value::String("hé".into()),
            Value::Bool(false),
            Value::Bytes(vec![0, 255]),
            Value::Timestamp(ts),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
        ]]
    );
    let params = props(&[
        ("i", Value::Int(7)),
        (
            "l",
            Value::List(vec![Value::String("a".into()), Value::Int(1)]),
        ),
        ("m", Value::Map(props(&[("k", Value::Float(0.5))]))),
        ("n", Value::Null),
    ]);
    // Lists and maps are used inside expressions (Grafeo 0.5.44 cannot project a bare list,
    // map or bytes parameter; see `bare_list_parameters_are_refused_not_mangled`).
    let r = query_with(
        store,
        "RETURN $i AS i, size($l) AS n, $m.k AS k, $n AS z, $i + 1 AS j",
        params.clone(),
        10,
    )
    .await
    .expect("params query");
    assert_eq!(
        r.rows[0],
        vec![
            Value::Int(7),
            Value::Int(2),
            Value::Float(0.5),
            Value::Null,
            Value::Int(8)
        ]
    );
    let r = query_with(store, "UNWIND $l AS x RETURN x", params.clone(), 10)
        .await
        .expect("unwind list param");
    assert_eq!(
        r.rows,
        vec![vec![Value::String("a".into())], vec![Value::Int(1)]]
    );
    let r = query_with(
        store,
        "MATCH (n:T) WHERE n.i = $i RETURN n.key",
        props(&[("i", Value::Int(9_007_199_254_740_993))]),
        10,
    )
    .await
    .expect("filter by int param");
    assert_eq!(r.rows, vec![vec![Value::String("t".into())]]);
}

pub(crate) async fn query_returns_nodes_relationships_and_paths(store: &dyn GraphStore) {
    upsert(
        store,
        vec![
            node("a", &["Z", "A"], &[("n", Value::Int(1))]),
            node("b", &["B"], &[]),
        ],
        vec![rel("a", "KNOWS", "b", &[("since", Value::Int(2020))])],
    )
    .await;
    let r = query(
        store,
        "MATCH p = (a {key: 'a'})-[r:KNOWS]->(b) RETURN a, r, p",
    )
    .await;
    assert_eq!(r.columns, vec!["a", "r", "p"]);
    let row = &r.rows[0];
    let a = as_node(&row[0]);
    assert_eq!(
        (a.key.as_str(), a.labels.clone()),
        ("a", vec!["A".to_string(), "Z".to_string()])
    );
    assert_eq!(a.properties, props(&[("n", Value::Int(1))]));
    let Value::Relationship(rel) = &row[1] else {
        panic!("{:?}", row[1])
    };
    assert_eq!(
        (
            rel.start_key.as_str(),
            rel.rel_type.as_str(),
            rel.end_key.as_str()
        ),
        ("a", "KNOWS", "b")
    );
    assert_eq!(rel.properties, props(&[("since", Value::Int(2020))]));
    let Value::Path(path) = &row[2] else {
        panic!("{:?}", row[2])
    };
    let keys: Vec<&str> = path.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, vec!["a", "b"]);
    assert_eq!(path.relationships.len(), 1);
    assert_eq!(path.relationships[0].rel_type, "KNOWS");
}

pub(crate) async fn row_limit_truncates(store: &dyn GraphStore) {
    let nodes = (0..5)
        .map(|i| node(&format!("n{i}"), &["N"], &[("i", Value::Int(i))]))
        .collect();
    upsert(store, nodes, vec![]).await;
    let r = query_with(
        store,
        "MATCH (n:N) RETURN n.i ORDER BY n.i",
        BTreeMap::new(),
        3,
    )
    .await
    .expect("query");
    assert_eq!(
        r.rows,
        vec![
            vec![Value::Int(0)],
            vec![Value::Int(1)],
            vec![Value::Int(2)]
        ]
    );
    assert!(r.truncated);
    let r = query_with(store, "MATCH (n:N) RETURN n.i", BTreeMap::new(), 5)
        .await
        .expect("query");
    assert_eq!(r.rows.len(), 5);
    assert!(!r.truncated);
}

pub(crate) async fn writes_in_queries_are_refused(store: &dyn GraphStore) {
    upsert(store, vec![node("a", &[], &[])], vec![]).await;
    for cypher in [
        "CREATE (n {key: 'evil'})",
        "match (n) detach delete n",
        "MATCH (n) /* x */ SET n.x = 1 RETURN n",
        "MATCH (n) CALL { WITH n SET n.y = 1 } RETURN n",
        "LOAD CSV FROM '/etc/passwd' AS row RETURN row",
        "UNWIND [1] AS x FOREACH (y IN [1] | CREATE ())",
    ] {
        let err = query_with(store, cypher, BTreeMap::new(), 10)
            .await
            .expect_err(cypher);
        assert!(
            matches!(err, StoreError::WriteInReadOnlyQuery { .. }),
            "{cypher}: {err:?}"
        );
    }
    assert_eq!(count_nodes(store).await, 1);
    let r = query(store, "MATCH (n) RETURN n").await;
    assert_eq!(as_node(single(&r)).properties, BTreeMap::new());
}

pub(crate) async fn syntax_errors_name_the_position(store: &dyn GraphStore) {
    let err = query_with(store, "MATCH (n\nRETURN n", BTreeMap::new(), 10)
        .await
        .expect_err("syntax");
    match err {
        StoreError::Syntax { line, column, .. } => {
            assert_eq!(line, Some(2));
            assert!(column.is_some());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

pub(crate) async fn delete_semantics(store: &dyn GraphStore) {
    upsert(
        store,
        vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[], &[]),
        ],
        vec![rel("a", "R", "b", &[]), rel("c", "R", "c", &[])],
    )
    .await;
    let del = |node_keys: &[&str], rels: &[(&str, &str, &str)], detach: bool| DeleteBatch {
        node_keys: node_keys.iter().map(|k| k.to_string()).collect(),
        rels: rels
            .iter()
            .map(|(s, t, e)| RelRef {
                start_key: s.to_string(),
                rel_type: t.to_string(),
                end_key: e.to_string(),
            })
            .collect(),
        detach,
    };
    let err = store
        .delete(del(&["c", "a"], &[], false))
        .await
        .expect_err("has relationships");
    assert_eq!(
        err,
        StoreError::NodeHasRelationships {
            key: "c".into(),
            count: 1
        }
    );
    assert_eq!(
        count_nodes(store).await,
        3,
        "a refused delete removes nothing"
    );

    // the relationship deleted by the same request does not count
    let c = store
        .delete(del(&["a"], &[("a", "R", "b"), ("a", "R", "ghost")], false))
        .await
        .expect("delete");
    assert_eq!((c.nodes_deleted, c.rels_deleted, c.not_found), (1, 1, 1));

    let c = store
        .delete(del(&["c", "ghost", "b"], &[], true))
        .await
        .expect("detach delete");
    assert_eq!((c.nodes_deleted, c.rels_deleted, c.not_found), (2, 1, 1));
    let m = store.metrics().await.expect("metrics");
    assert_eq!((m.node_count, m.rel_count), (0, 0));

    // a deleted key is free again, and keys are case-sensitive
    let c = upsert(
        store,
        vec![node("a", &[], &[]), node("A", &[], &[])],
        vec![],
    )
    .await;
    assert_eq!((c.nodes_created, c.nodes_updated), (2, 0));
    assert_eq!(count_nodes(store).await, 2);
}

pub(crate) async fn metrics_count_everything(store: &dyn GraphStore) {
    let m = store.metrics().await.expect("metrics");
    assert_eq!((m.node_count, m.rel_count, m.average_degree), (0, 0, 0.0));
    assert!(m.label_counts.is_empty() && m.type_counts.is_empty());
    upsert(
        store,
        vec![node("a", &["A", "B"], &[]), node("b", &["A"], &[])],
        vec![rel("a", "R", "b", &[]), rel("b", "S", "a", &[])],
    )
    .await;
    let m = store.metrics().await.expect("metrics");
    assert_eq!((m.node_count, m.rel_count), (2, 2));
    assert_eq!(
        m.label_counts,
        BTreeMap::from([("A".to_string(), 2), ("B".to_string(), 1)])
    );
    assert_eq!(
        m.type_counts,
        BTreeMap::from([("R".to_string(), 1), ("S".to_string(), 1)])
    );
    assert!((m.average_degree - 2.0).abs() < f64::EPSILON);
    store.health().await.expect("healthy");
}

/// Calls `$per_backend!(case, …)` with every case above: the one list each backend's test
/// module instantiates, so no backend can miss a case.
macro_rules! every_case {
    ($per_backend:ident) => {
        $per_backend!(
            upsert_merges_nodes_by_key,
            upsert_merges_relationships_per_type_and_ordered_pair,
            missing_endpoint_fails_the_whole_request,
            invalid_input_writes_nothing,
            query_values_keep_their_types,
            query_returns_nodes_relationships_and_paths,
            row_limit_truncates,
            writes_in_queries_are_refused,
            syntax_errors_name_the_position,
            delete_semantics,
            metrics_count_everything,
        );
    };
}
pub(crate) use every_case;
