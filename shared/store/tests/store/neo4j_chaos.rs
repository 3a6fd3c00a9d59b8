//! Chaos on a Neo4j of its own (`umcp_testkit::neo4j::Neo4j::start()`, Neo4j's test harness in
//! one JVM, WITHOUT authentication; production always authenticates): the JVM is killed under
//! load and started again on the same port. Skipped, with the reason printed, where Java or the
//! launcher is missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use umcp_resilience::breaker::State;
use umcp_store::neo4j::{Neo4jConfig, Neo4jStore};
use umcp_store::{GraphStore, NodeInput, ReadQuery, StoreError, UpsertBatch};
use umcp_testkit::neo4j::{Neo4j, unavailable_reason};

fn read(cypher: &str) -> ReadQuery {
    ReadQuery {
        cypher: cypher.into(),
        params: BTreeMap::new(),
        row_limit: 100,
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        caller: None,
    }
}

fn batch(i: u64) -> UpsertBatch {
    UpsertBatch {
        nodes: vec![NodeInput {
            key: format!("n{}", i % 50),
            labels: vec!["Chaos".into()],
            ..NodeInput::default()
        }],
        rels: vec![],
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    unavailable: AtomicU64,
    /// Anything else: must stay empty (a killed server is never a caller error or a bug).
    other: Mutex<Vec<String>>,
    slowest_failure: Mutex<Duration>,
}

async fn load(store: Neo4jStore, stop: Arc<AtomicBool>, tally: Arc<Tally>, worker: u64) {
    let mut i = worker * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        let result = if i.is_multiple_of(2) {
            store
                .query(read("MATCH (n:Chaos) RETURN count(n) AS c"))
                .await
                .map(|_| ())
        } else {
            store.upsert(batch(i)).await.map(|_| ())
        };
        match result {
            Ok(()) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(StoreError::Unavailable(_)) => {
                tally.unavailable.fetch_add(1, Ordering::Relaxed);
                let took = started.elapsed();
                {
                    let mut slowest = tally.slowest_failure.lock();
                    *slowest = (*slowest).max(took);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => tally.other.lock().push(e.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_opens_the_breakers_fails_fast_and_recovers_after_restart() {
    if let Some(why) = unavailable_reason() {
        eprintln!("neo4j chaos test SKIPPED: {why}");
        return;
    }
    let mut neo4j = Neo4j::start();
    let config = Neo4jConfig {
        read_breaker_open_ms: 1_000,
        write_breaker_open_ms: 1_000,
        connect_timeout_ms: 2_000,
        acquire_timeout_ms: 1_000,
        ..Neo4jConfig::for_uri(neo4j.uri(), "unused-by-the-harness")
    };
    let store = Neo4jStore::open(config).await.expect("open");
    store.upsert(batch(0)).await.expect("first write");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load(
                store.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
                w,
            ))
        })
        .collect();
    assert!(
        umcp_testkit::eventually(Duration::from_secs(20), || async {
            tally.ok.load(Ordering::Relaxed) >= 50
        })
        .await,
        "no load before the kill"
    );

    neo4j.kill();
    let killed_at = Instant::now();
    let (read_breaker, write_breaker) = store.breakers();
    assert!(
        umcp_testkit::eventually(Duration::from_secs(30), || async {
            read_breaker.state() != State::Closed && write_breaker.state() != State::Closed
        })
        .await,
        "breakers did not open: read {:?}, write {:?}",
        read_breaker.state(),
        write_breaker.state()
    );
    eprintln!(
        "chaos: both breakers open {:?} after the kill",
        killed_at.elapsed()
    );
    // While open, calls fail at once without touching the network.
    let started = Instant::now();
    let err = loop {
        match store.query(read("RETURN 1 AS one")).await {
            Err(StoreError::Unavailable(m)) if m.contains("circuit is open") => break m,
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("expected UNAVAILABLE while the server is down, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the read breaker never rejected"
        );
    };
    let fast = Instant::now();
    let _ = store.query(read("RETURN 1 AS one")).await;
    eprintln!(
        "chaos: open-breaker rejection took {:?} ({err})",
        fast.elapsed()
    );

    let unavailable_before_restart = tally.unavailable.load(Ordering::Relaxed);
    neo4j.restart();
    let ok_at_restart = tally.ok.load(Ordering::Relaxed);
    assert!(
        umcp_testkit::eventually(Duration::from_secs(60), || async {
            tally.ok.load(Ordering::Relaxed) >= ok_at_restart + 50
        })
        .await,
        "no recovery after the restart"
    );
    eprintln!("chaos: recovered {:?} after the kill", killed_at.elapsed());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(read_breaker.state(), State::Closed);
    assert_eq!(write_breaker.state(), State::Closed);
    assert!(unavailable_before_restart > 0, "the outage was never seen");
    let other = tally.other.lock().clone();
    assert!(other.is_empty(), "errors other than UNAVAILABLE: {other:?}");
    let slowest = *tally.slowest_failure.lock();
    eprintln!(
        "chaos: ok {}, unavailable {}, slowest failure {slowest:?}",
        tally.ok.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed)
    );
    // Bounded by the connect timeout and the retries, never by the caller's 5 s deadline.
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    // the restarted (empty) database got its key constraint again before the first write
    store.upsert(batch(7)).await.expect("write after recovery");
}
