//! The conformance suite against a real Neo4j 5.26 (`umcp_testkit::neo4j::shared()`: Neo4j's
//! test harness in one JVM for this test binary, which runs WITHOUT authentication; the
//! production path always authenticates). Where Java or the launcher (and Maven to build it) is
//! missing, every case prints that Neo4j was skipped and why, and passes.

use super::conformance;

use umcp_store::neo4j::{Neo4jConfig, Neo4jStore};

/// The cases share one database: one at a time, each on an emptied graph.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fresh() -> Option<(tokio::sync::MutexGuard<'static, ()>, Neo4jStore)> {
    let Some(neo4j) = umcp_testkit::neo4j::shared() else {
        eprintln!("neo4j conformance case SKIPPED (the reason is printed above)");
        return None;
    };
    let guard = LOCK.lock().await;
    let store = Neo4jStore::open(Neo4jConfig::for_uri(neo4j.uri(), "unused-by-the-harness"))
        .await
        .expect("open neo4j store");
    store.wipe().await.expect("wipe");
    Some((guard, store))
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some((_guard, store)) = fresh().await else { return };
            conformance::$case(&store).await;
        }
    )*};
}

conformance::every_case!(conformance);
