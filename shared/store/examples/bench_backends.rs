//! The same Query/Upsert mix on the embedded Grafeo store and on Neo4j, in one run.
//!
//! Neo4j: `UMCP_NEO4J__URI` (+ `UMCP_NEO4J__USER`/`__PASSWORD`) when set, else a harness
//! DBMS started here (`umcp_testkit::neo4j`, no authentication; skipped with the reason printed
//! when Java or the launcher is missing). The database is WIPED first: never point it at data
//! you keep.
//!
//! Usage: `bench_backends [seconds per round, default 5] [concurrency, default 8]`.
//! Rounds: a point lookup by key (`MATCH (n {key: $k}) RETURN n`, unlabelled: the embedded
//! store indexes the key property whatever the label; Neo4j's index is on its own label, so a
//! labelled lookup is measured on Neo4j too), a one-hop neighbourhood, an upsert of 10 nodes
//! and 10 relationships, and a 90/10 query/upsert mix, sequential (latency) and concurrent
//! (throughput).

// The report on stdout is the point of this example.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};
use umcp_store::neo4j::{Neo4jConfig, Neo4jStore};
use umcp_store::{GraphStore, NodeInput, ReadQuery, RelInput, UpsertBatch, Value};

const NODES: u64 = 2_000;

fn lookup(k: u64, labelled: bool) -> ReadQuery {
    let cypher = if labelled {
        "MATCH (n:`umcp:Node` {key: $k}) RETURN n"
    } else {
        "MATCH (n {key: $k}) RETURN n"
    };
    ReadQuery {
        cypher: cypher.into(),
        params: BTreeMap::from([("k".to_string(), Value::String(format!("n{}", k % NODES)))]),
        row_limit: 10,
        deadline: Some(Instant::now() + Duration::from_secs(10)),
        caller: None,
    }
}

fn hop(k: u64) -> ReadQuery {
    ReadQuery {
        cypher: "MATCH (n {key: $k})-[:LINKS]->(m) RETURN m.key AS key, m.rank AS rank".into(),
        ..lookup(k, false)
    }
}

fn upsert(seq: u64) -> UpsertBatch {
    let base = (seq * 10) % NODES;
    let key = |i: u64| format!("n{}", (base + i) % NODES);
    UpsertBatch {
        nodes: (0..10)
            .map(|i| NodeInput {
                key: key(i),
                labels: vec!["Item".into()],
                properties: BTreeMap::from([
                    ("rank".to_string(), Value::Int((seq + i) as i64)),
                    (
                        "name".to_string(),
                        Value::String(format!("item {}", base + i)),
                    ),
                ]),
            })
            .collect(),
        rels: (0..10)
            .map(|i| RelInput {
                start_key: key(i),
                rel_type: "LINKS".into(),
                end_key: key((i + 1) % 10),
                properties: BTreeMap::from([("w".to_string(), Value::Float(0.5))]),
            })
            .collect(),
    }
}

async fn seed(store: &dyn GraphStore) {
    for seq in 0..NODES / 10 {
        store.upsert(upsert(seq)).await.expect("seed upsert");
    }
}

#[derive(Clone, Copy)]
enum Op {
    Lookup,
    LabelledLookup,
    Hop,
    Upsert,
    Mix,
}

async fn once(store: &dyn GraphStore, op: Op, seq: u64) {
    let out = match op {
        Op::Lookup => store.query(lookup(seq * 7919, false)).await.map(|_| ()),
        Op::LabelledLookup => store.query(lookup(seq * 7919, true)).await.map(|_| ()),
        Op::Hop => store.query(hop(seq * 7919)).await.map(|_| ()),
        Op::Upsert => store.upsert(upsert(seq)).await.map(|_| ()),
        Op::Mix if seq.is_multiple_of(10) => store.upsert(upsert(seq)).await.map(|_| ()),
        Op::Mix => store.query(hop(seq * 7919)).await.map(|_| ()),
    };
    out.expect("benchmark call");
}

struct Round {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn round(store: Arc<dyn GraphStore>, op: Op, seconds: u64, concurrency: u64) -> Round {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut seq = w * 1_000_003;
                while Instant::now() < until {
                    seq += 1;
                    let t = Instant::now();
                    once(store.as_ref(), op, seq).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Round {
        per_sec: lat.len() as f64 / elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

async fn neo4j_store() -> Option<(Neo4jStore, Option<umcp_testkit::neo4j::Neo4j>)> {
    let from_env = std::env::var("UMCP_NEO4J__URI")
        .ok()
        .filter(|u| !u.is_empty());
    let (config, server) = match from_env {
        Some(uri) => {
            let mut c = Neo4jConfig::for_uri(
                &uri,
                &std::env::var("UMCP_NEO4J__PASSWORD").unwrap_or_default(),
            );
            if let Ok(user) = std::env::var("UMCP_NEO4J__USER") {
                c.user = user;
            }
            (c, None)
        }
        None => {
            if let Some(why) = umcp_testkit::neo4j::unavailable_reason() {
                println!("neo4j: SKIPPED, {why}");
                return None;
            }
            let server = umcp_testkit::neo4j::Neo4j::start();
            let c = Neo4jConfig::for_uri(server.uri(), "unused-by-the-harness");
            (c, Some(server))
        }
    };
    let store = Neo4jStore::open(config).await.expect("open neo4j");
    store.wipe().await.expect("wipe");
    Some((store, server))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded: Arc<dyn GraphStore> = Arc::new(
        GrafeoStore::open(GrafeoConfig::persistent(dir.path().join("graph")))
            .await
            .expect("open grafeo"),
    );
    let mut stores: Vec<(&str, Arc<dyn GraphStore>)> = vec![("grafeo", embedded)];
    let neo4j = neo4j_store().await;
    if let Some((store, _)) = &neo4j {
        stores.push(("neo4j", Arc::new(store.clone())));
    }
    println!(
        "{NODES} nodes seeded; {seconds}s per round; sequential = 1 caller, concurrent = {concurrency} callers"
    );
    println!(
        "{:<8} {:<22} {:>11} {:>10} {:>10} {:>10}",
        "backend", "operation", "callers", "calls/s", "p50", "p99"
    );
    let ops = [
        ("lookup by key", Op::Lookup),
        ("lookup, umcp:Node label", Op::LabelledLookup),
        ("one hop", Op::Hop),
        ("upsert 10n+10r", Op::Upsert),
        ("mix 90q/10u", Op::Mix),
    ];
    for (name, store) in &stores {
        seed(store.as_ref()).await;
        for (label, op) in ops {
            if matches!(op, Op::LabelledLookup) && *name != "neo4j" {
                continue;
            }
            for callers in [1, concurrency] {
                let r = round(Arc::clone(store), op, seconds, callers).await;
                println!(
                    "{name:<8} {label:<22} {callers:>11} {:>10.0} {:>10.2?} {:>10.2?}",
                    r.per_sec, r.p50, r.p99
                );
            }
        }
    }
}
