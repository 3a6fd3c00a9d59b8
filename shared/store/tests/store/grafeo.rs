//! The conformance suite and Grafeo-specific behaviour (durability, deadlines) on a tempdir.

use super::conformance;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};
use umcp_store::{GraphStore, ReadQuery, StoreError, Value};

fn fresh() -> (tempfile::TempDir, GrafeoStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = GrafeoStore::open_blocking(&GrafeoConfig::persistent(dir.path().join("graph")))
        .expect("open store");
    (dir, store)
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (_dir, store) = fresh();
            conformance::$case(&store).await;
        }
    )*};
}

conformance::every_case!(conformance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = GrafeoConfig::persistent(dir.path().join("graph"));
    {
        let store = GrafeoStore::open(config.clone()).await.expect("open");
        conformance::upsert(
            &store,
            vec![
                conformance::node("a", &["A"], &[("x", Value::Int(1))]),
                conformance::node("b", &[], &[]),
            ],
            vec![conformance::rel("a", "R", "b", &[])],
        )
        .await;
    }
    let store = GrafeoStore::open(config.clone()).await.expect("reopen");
    let m = store.metrics().await.expect("metrics");
    assert_eq!((m.node_count, m.rel_count), (2, 1));
    // the key index is rebuilt: re-upserting merges instead of duplicating
    let c = conformance::upsert(&store, vec![conformance::node("a", &["B"], &[])], vec![]).await;
    assert_eq!((c.nodes_created, c.nodes_updated), (0, 1));
    drop(store);
    let store = GrafeoStore::open(config).await.expect("reopen twice");
    let r = conformance::query(&store, "MATCH (n {key: 'a'}) RETURN n").await;
    let Value::Node(n) = &r.rows[0][0] else {
        panic!("{r:?}")
    };
    assert_eq!(n.labels, vec!["A", "B"]);
    assert_eq!(store.metrics().await.expect("metrics").node_count, 2);
}

/// Enough nodes that a three-way cartesian product takes a few seconds (the engine
/// cannot interrupt the aggregate, so the blocking task runs on after the caller's deadline).
async fn slow_graph(store: &GrafeoStore) {
    let nodes = (0..120)
        .map(|i| conformance::node(&format!("n{i}"), &["N"], &[]))
        .collect();
    conformance::upsert(store, nodes, vec![]).await;
}

const SLOW: &str =
    "MATCH (a:N), (b:N), (c:N) WHERE a.key < b.key AND b.key < c.key RETURN count(*)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_deadline_is_honoured() {
    let (_dir, store) = fresh();
    slow_graph(&store).await;
    let started = Instant::now();
    let err = store
        .query(ReadQuery {
            cypher: SLOW.into(),
            params: BTreeMap::new(),
            row_limit: 10,
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            caller: None,
        })
        .await
        .expect_err("deadline");
    assert!(matches!(err, StoreError::DeadlineExceeded(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checkpoints_keep_every_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = GrafeoConfig {
        checkpoint_interval: Some(Duration::from_millis(100)),
        ..GrafeoConfig::persistent(dir.path().join("graph"))
    };
    let store = GrafeoStore::open(config.clone()).await.expect("open");
    // writes racing with several checkpoints
    for i in 0..30 {
        conformance::upsert(
            &store,
            vec![conformance::node(&format!("n{i}"), &["N"], &[])],
            vec![],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        dir.path()
            .join("graph/graph.grafeo")
            .metadata()
            .expect("db file")
            .len()
            > 0
    );
    drop(store);
    let store = GrafeoStore::open(config).await.expect("reopen");
    assert_eq!(store.metrics().await.expect("metrics").node_count, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_size_batch_is_one_transaction() {
    let (_dir, store) = fresh();
    let nodes = (0..1000)
        .map(|i| conformance::node(&format!("n{i}"), &["N"], &[("i", Value::Int(i))]))
        .collect();
    let rels = (0..5000)
        .map(|i| {
            conformance::rel(
                &format!("n{}", i % 1000),
                &format!("T{}", i / 1000),
                &format!("n{}", (i * 7 + 1) % 1000),
                &[],
            )
        })
        .collect();
    let started = Instant::now();
    let c = conformance::upsert(&store, nodes, rels).await;
    let took = started.elapsed();
    assert_eq!(
        (c.nodes_created, c.rels_created + c.rels_updated),
        (1000, 5000)
    );
    let m = store.metrics().await.expect("metrics");
    assert_eq!(m.node_count, 1000);
    assert_eq!(m.rel_count, c.rels_created);
    assert!(took < Duration::from_secs(10), "full batch took {took:?}");
}

/// Grafeo 0.5.44 would return `""` for these; the backend refuses them with an explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_list_parameters_are_refused_not_mangled() {
    let (_dir, store) = fresh();
    let params = conformance::props(&[
        ("l", Value::List(vec![Value::Int(1)])),
        ("b", Value::Bytes(vec![1])),
        ("i", Value::Int(1)),
    ]);
    for cypher in [
        "RETURN $l AS l",
        "WITH $b AS b RETURN b",
        "MATCH (n) CALL { RETURN $l AS x } RETURN x",
    ] {
        let err = conformance::query_with(&store, cypher, params.clone(), 10)
            .await
            .expect_err(cypher);
        assert!(
            matches!(&err, StoreError::QueryFailed(m) if m.contains("expression")),
            "{cypher}: {err:?}"
        );
    }
    let r = conformance::query_with(&store, "RETURN $i AS i, [x IN $l | x] AS l", params, 10)
        .await
        .expect("wrapped list");
    assert_eq!(
        r.rows,
        vec![vec![Value::Int(1), Value::List(vec![Value::Int(1)])]]
    );
}
