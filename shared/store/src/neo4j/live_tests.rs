//! Behaviour only a real server shows, on the Neo4j of `umcp_testkit::neo4j::shared()` (Neo4j's
//! test harness, which runs WITHOUT authentication; production always authenticates). Skipped,
//! with the reason printed, where Java or the launcher is missing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use neo4rs::Query;

use super::{Neo4jConfig, Neo4jStore};
use crate::model::{NodeInput, RelInput, UpsertBatch};
use crate::{GraphStore, ReadQuery, StoreError, Timestamp, Value};

/// The live tests share one database: one at a time, each on an empty graph.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn store_with(
    tweak: impl FnOnce(&mut Neo4jConfig),
) -> Option<(tokio::sync::MutexGuard<'static, ()>, Neo4jStore, u16)> {
    let Some(neo4j) = umcp_testkit::neo4j::shared() else {
        eprintln!("neo4j live test SKIPPED (see the reason above)");
        return None;
    };
    let guard = LOCK.lock().await;
    // The harness has no authentication; any password is accepted.
    let mut config = Neo4jConfig::for_uri(neo4j.uri(), "unused-by-the-harness");
    tweak(&mut config);
    let store = Neo4jStore::open(config).await.expect("open neo4j store");
    store.wipe().await.expect("wipe");
    Some((guard, store, neo4j.port()))
}

fn read(cypher: &str, row_limit: u32) -> ReadQuery {
    ReadQuery {
        cypher: cypher.into(),
        params: BTreeMap::new(),
        row_limit,
        deadline: None,
        caller: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_a_write_that_passes_the_parser() {
    let Some((_g, store, _)) = store_with(|_| {}).await else {
        return;
    };
    // The parser refuses it first on the normal path…
    let err = store
        .query(read("CREATE (n:Evil)", 10))
        .await
        .expect_err("parser");
    assert!(
        matches!(err, StoreError::WriteInReadOnlyQuery { .. }),
        "{err:?}"
    );
    // …and without the parser, the READ-mode auto-commit transaction is refused by the server.
    for cypher in ["CREATE (n:Evil)", "MERGE (n:Evil {key: 'x'}) RETURN n"] {
        let err = store
            .query_unchecked(read(cypher, 10))
            .await
            .expect_err(cypher);
        assert!(
            matches!(err, StoreError::WriteInReadOnlyQuery { .. }),
            "{cypher}: {err:?}"
        );
    }
    let r = store
        .query(read("MATCH (n:Evil) RETURN count(n) AS c", 10))
        .await
        .expect("count");
    assert_eq!(r.rows, vec![vec![Value::Int(0)]]);
}

/// What reaches the server, read off the wire through a recording proxy: a query is an
/// auto-commit RUN carrying `mode: "r"` (no BEGIN), which Neo4j enforces (see above); an upsert
/// is BEGIN … COMMIT, and neo4rs' BEGIN carries no mode at all (its explicit transactions are
/// write transactions; without its unstable protocol feature it cannot even ask for a read
/// one), which is why the read path does not use explicit transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_reaches_the_server() {
    let Some((_g, _store, port)) = store_with(|_| {}).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_port = listener.local_addr().expect("addr").port();
    let sent = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let record = std::sync::Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("server");
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = tokio::io::AsyncReadExt::read(&mut cr, &mut buf)
                            .await
                            .unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        record.lock().extend_from_slice(&buf[..n]);
                        if tokio::io::AsyncWriteExt::write_all(&mut sw, &buf[..n])
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                let down = tokio::io::copy(&mut sr, &mut cw);
                let _ = tokio::join!(up, down);
            });
        }
    });
    let via_proxy = Neo4jStore::open(Neo4jConfig::for_uri(
        &format!("bolt://127.0.0.1:{proxy_port}"),
        "unused-by-the-harness",
    ))
    .await
    .expect("open through the proxy");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    // tiny-string markers: 0x84 "mode", 0x81 "r"; struct markers: BEGIN is 0xB1 0x11
    let mode_r: &[u8] = b"\x84mode\x81r";
    let begin: &[u8] = b"\xB1\x11";
    sent.lock().clear();
    via_proxy
        .query(read("RETURN 1 AS one", 10))
        .await
        .expect("query");
    let bytes = sent.lock().clone();
    assert!(contains(&bytes, mode_r), "a query's RUN carries mode r");
    assert!(!contains(&bytes, begin), "a query sends no BEGIN");
    sent.lock().clear();
    via_proxy
        .upsert(UpsertBatch {
            nodes: vec![NodeInput {
                key: "w".into(),
                ..NodeInput::default()
            }],
            rels: vec![],
        })
        .await
        .expect("upsert");
    let bytes = sent.lock().clone();
    let at = bytes
        .windows(2)
        .position(|w| w == begin)
        .expect("an upsert sends BEGIN");
    let begin_msg = &bytes[at..(at + 64).min(bytes.len())];
    assert!(
        !contains(&begin_msg[..begin_msg.len().min(24)], b"\x84mode"),
        "BEGIN carries no mode: {begin_msg:02x?}"
    );
}

/// neo4rs #281 (rows missing from a stream) and #236 (stream state errors on 5.26): results
/// around and far beyond the fetch size arrive complete and in order, and a connection whose
/// stream was dropped early is reused cleanly (one connection in the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_and_dropped_streams_leave_clean_connections() {
    let Some((_g, store, _)) = store_with(|c| c.max_connections = 1).await else {
        return;
    };
    for n in [0_i64, 1, 999, 1000, 1001, 2500, 9999] {
        let cypher = format!("UNWIND range(1, {n}) AS i RETURN i ORDER BY i");
        let r = store.query(read(&cypher, 10_000)).await.expect("query");
        assert_eq!(r.rows.len() as i64, n, "{cypher}");
        assert!(!r.truncated);
        assert!(
            r.rows
                .iter()
                .enumerate()
                .all(|(i, row)| row[0] == Value::Int(i as i64 + 1))
        );
        // dropped after 3 rows with more pending, then the same connection serves again
        let r = store.query(read(&cypher, 3)).await.expect("limited");
        assert_eq!(r.truncated, n > 3);
    }
    let q = ReadQuery {
        params: BTreeMap::from([
            ("offset".to_string(), Value::Int(2)),
            ("limit".to_string(), Value::Int(50)),
        ]),
        ..read(
            "UNWIND range(1, 10) AS i RETURN i SKIP $offset LIMIT $limit",
            100,
        )
    };
    assert_eq!(store.query(q).await.expect("skip/limit").rows.len(), 8);
}

fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && cols[2].rsplit(':').next() == Some(&format!("{port:04X}"))
        })
        .count()
}

/// neo4rs #106 (connections not closed under load): many more concurrent callers than pooled
/// connections never open more than the pool, and dropping the store closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_the_pool_under_load() {
    let Some((_g, store, port)) = store_with(|c| c.max_connections = 4).await else {
        return;
    };
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    let cypher = format!("UNWIND range(1, {}) AS x RETURN x", (i * j) % 300);
                    store
                        .query(read(&cypher, 100))
                        .await
                        .expect("query under load");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let open = established_to(port);
    assert!(open <= 4, "{open} connections for a pool of 4");
    drop(store);
    assert!(
        umcp_testkit::eventually(Duration::from_secs(10), || async {
            established_to(port) == 0
        })
        .await,
        "connections of a dropped store stay open: {}",
        established_to(port)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bolt_kind_maps_to_a_value() {
    let Some((_g, store, _)) = store_with(|_| {}).await else {
        return;
    };
    let cypher = "RETURN date('2024-01-31') AS d, \
        localdatetime('2024-01-31T10:00:00.5') AS ldt, \
        datetime('2024-01-31T10:00:00.123456789+02:00') AS zdt, \
        datetime({year: 2024, month: 7, day: 1, hour: 12, timezone: 'Europe/Berlin'}) AS zid, \
        time('10:00:00+01:00') AS t, localtime('10:30:00') AS lt, \
        duration('PT1H30.5S') AS dur, point({x: 1.0, y: 2.0}) AS p2, \
        point({x: 1.0, y: 2.0, z: 3.0}) AS p3, [1, 'a', null] AS l, {a: 1, b: [true]} AS m, \
        $by AS by, 9223372036854775807 AS big, -0.5 AS f";
    let q = ReadQuery {
        params: BTreeMap::from([("by".to_string(), Value::Bytes(vec![0, 1, 255]))]),
        ..read(cypher, 10)
    };
    let r = store.query(q).await.expect("query");
    assert_eq!(
        r.columns,
        [
            "d", "ldt", "zdt", "zid", "t", "lt", "dur", "p2", "p3", "l", "m", "by", "big", "f"
        ]
    );
    let row = &r.rows[0];
    let s = |v: &str| Value::String(v.into());
    assert_eq!(row[0], s("2024-01-31"));
    assert_eq!(row[1], s("2024-01-31T10:00:00.500"));
    // 10:00 at +02:00 is 08:00 UTC
    assert_eq!(
        row[2],
        Value::Timestamp(Timestamp {
            seconds: 1_706_688_000,
            nanos: 123_456_789
        })
    );
    // 12:00 in Berlin in July (CEST, +02:00) is 10:00 UTC
    assert_eq!(
        row[3],
        Value::Timestamp(Timestamp {
            seconds: 1_719_828_000,
            nanos: 0
        })
    );
    assert_eq!(row[4], s("10:00:00+01:00"));
    assert_eq!(row[5], s("10:30:00"));
    assert_eq!(row[6], s("PT3630.5S"));
    let point = |pairs: &[(&str, Value)]| {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    assert_eq!(
        row[7],
        point(&[
            ("srid", Value::Int(7203)),
            ("x", Value::Float(1.0)),
            ("y", Value::Float(2.0))
        ])
    );
    assert!(matches!(&row[8], Value::Map(m) if m.get("z") == Some(&Value::Float(3.0))));
    assert_eq!(
        row[9],
        Value::List(vec![Value::Int(1), s("a"), Value::Null])
    );
    assert_eq!(
        row[10],
        point(&[
            ("a", Value::Int(1)),
            ("b", Value::List(vec![Value::Bool(true)]))
        ])
    );
    assert_eq!(row[11], Value::Bytes(vec![0, 1, 255]));
    assert_eq!(row[12], Value::Int(i64::MAX));
    assert_eq!(row[13], Value::Float(-0.5));

    // relationships alone get their endpoint keys; reversed paths keep directions
    store
        .upsert(UpsertBatch {
            nodes: ["a", "b", "c"]
                .map(|k| NodeInput {
                    key: k.into(),
                    ..NodeInput::default()
                })
                .to_vec(),
            rels: vec![
                RelInput {
                    start_key: "b".into(),
                    rel_type: "R".into(),
                    end_key: "a".into(),
                    ..RelInput::default()
                },
                RelInput {
                    start_key: "b".into(),
                    rel_type: "S".into(),
                    end_key: "c".into(),
                    ..RelInput::default()
                },
            ],
        })
        .await
        .expect("upsert");
    let r = store
        .query(read("MATCH ()-[r:R]->() RETURN r", 10))
        .await
        .expect("rel");
    let Value::Relationship(rel) = &r.rows[0][0] else {
        panic!("{r:?}")
    };
    assert_eq!((rel.start_key.as_str(), rel.end_key.as_str()), ("b", "a"));
    let r = store
        .query(read(
            "MATCH p = (:`umcp:Node` {key: 'a'})<-[:R]-()-[:S]->() RETURN p",
            10,
        ))
        .await
        .expect("path");
    let Value::Path(path) = &r.rows[0][0] else {
        panic!("{r:?}")
    };
    let keys: Vec<&str> = path.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    let ends: Vec<(&str, &str)> = path
        .relationships
        .iter()
        .map(|r| (r.start_key.as_str(), r.end_key.as_str()))
        .collect();
    assert_eq!(ends, [("b", "a"), ("b", "c")]);
    assert!(
        path.nodes[0].labels.is_empty(),
        "the store's own label is hidden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_carry_neo4js_message_and_never_open_the_breaker() {
    let Some((_g, store, _)) = store_with(|_| {}).await else {
        return;
    };
    for _ in 0..10 {
        let err = store
            .query(read("RETURN $missing AS m", 10))
            .await
            .expect_err("param");
        assert!(
            matches!(&err, StoreError::QueryFailed(m) if m.contains("missing")),
            "{err:?}"
        );
        let err = store
            .query(read("RETURN 1 / 0 AS x", 10))
            .await
            .expect_err("division");
        assert!(
            matches!(&err, StoreError::QueryFailed(m) if m.contains("/ by zero")),
            "{err:?}"
        );
    }
    assert_eq!(
        store.breakers().0.state(),
        umcp_resilience::breaker::State::Closed
    );
    // a constraint an operator added: the write fails with Neo4j's message
    let graph = store.raw_graph();
    graph
        .run(Query::new("CREATE CONSTRAINT umcp_test_exists IF NOT EXISTS FOR (n:Strict) REQUIRE n.name IS UNIQUE".into()))
        .await
        .expect("constraint");
    let node = |k: &str| NodeInput {
        key: k.into(),
        labels: vec!["Strict".into()],
        properties: BTreeMap::from([("name".to_string(), Value::String("same".into()))]),
    };
    store
        .upsert(UpsertBatch {
            nodes: vec![node("s1")],
            rels: vec![],
        })
        .await
        .expect("first");
    let err = store
        .upsert(UpsertBatch {
            nodes: vec![node("s2")],
            rels: vec![],
        })
        .await
        .expect_err("second");
    assert!(
        matches!(&err, StoreError::ConstraintViolated(m) if m.contains("Strict")),
        "{err:?}"
    );
    graph
        .run(Query::new("DROP CONSTRAINT umcp_test_exists".into()))
        .await
        .expect("drop constraint");
}

/// A query past its deadline answers DEADLINE_EXCEEDED at the deadline, and the server stops
/// the transaction (`tx_timeout`) rather than running it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_past_its_deadline_is_stopped_on_the_server() {
    let Some((_g, store, _)) = store_with(|_| {}).await else {
        return;
    };
    let slow = "UNWIND range(1, 2000000000) AS i WITH i WHERE i % 7 = 3 RETURN count(*) AS c";
    let started = Instant::now();
    let err = store
        .query(ReadQuery {
            deadline: Some(Instant::now() + Duration::from_millis(500)),
            ..read(slow, 10)
        })
        .await
        .expect_err("deadline");
    assert!(matches!(err, StoreError::DeadlineExceeded(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let graph = store.raw_graph();
    let running = || async {
        let mut rows = graph
            .execute(Query::new(
                "SHOW TRANSACTIONS YIELD currentQuery RETURN currentQuery".into(),
            ))
            .await
            .expect("show transactions");
        let mut n = 0;
        while let Some(row) = rows.next().await.expect("row") {
            let q: String = row.get("currentQuery").unwrap_or_default();
            n += usize::from(q.contains("2000000000"));
        }
        n
    };
    assert!(
        umcp_testkit::eventually(Duration::from_secs(10), || async { running().await == 0 }).await,
        "the slow query still runs on the server"
    );
}
