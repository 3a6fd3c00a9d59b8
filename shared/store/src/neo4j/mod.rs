//! The Neo4j backend: Neo4j 5.x over Bolt 4.4 through `neo4rs` 0.9.
//!
//! * Identity: every node written through `upsert` carries the label [`NODE_LABEL`] and its key
//!   in the `key` property, under a uniqueness constraint (`umcp_node_key`) created at start-up
//!   (or before the first write when Neo4j was down at start-up). Queries that match by key
//!   should name the label to use its index: ``MATCH (n:`umcp:Node` {key: $k})``.
//! * Reads: auto-commit transactions in READ mode, below the parser check that every backend
//!   runs (see `read` for why not explicit transactions). Writes: one explicit transaction
//!   per request (see `write`), run on a task of its own so that a caller who gives up never
//!   leaves a half-sent request on a pooled connection; past the deadline it rolls back
//!   instead of committing.
//! * Pool: `max_connections` Bolt connections, the acquisition timeout, TCP keep-alive; the
//!   whole pool is replaced every `max_lifetime` (neo4rs has no per-connection lifetime: its
//!   `max_lifetime` setting is the pool's *wait* timeout, which is how the acquisition timeout
//!   is set here). In-flight calls finish on the old pool, whose connections close with it.
//! * Resilience: transient failures are retried (3 attempts, full-jitter backoff) within the
//!   deadline; separate read and write breakers (see `guard`).
//! * Limits: every query is bounded by the caller's deadline and `max_query_time`, sent to the
//!   server as `tx_timeout`.

mod config;
mod guard;
mod read;
mod values;
mod write;

#[cfg(test)]
mod live_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use neo4rs::{ConfigBuilder, Graph, Query};
use parking_lot::RwLock;
use tokio::time::Instant;

pub use config::{DEFAULT_POOL_CAP, Neo4jConfig, default_pool_size};
pub use guard::{ATTEMPTS, PROBES_TO_CLOSE, READ_FAILURES_TO_OPEN, WRITE_FAILURES_TO_OPEN};
pub use values::NODE_LABEL;

use guard::{Access, Failure, Guard, classify};
use values::quoted;

use crate::error::StoreError;
use crate::model::{
    DeleteBatch, DeleteCounts, Metrics, QueryResult, ReadQuery, UpsertBatch, UpsertCounts,
};
use crate::store::GraphStore;
use crate::{readonly, validate};

/// Rows fetched per PULL.
const FETCH_SIZE: usize = 1000;

struct Pool {
    graph: Graph,
    created: Instant,
}

struct Inner {
    config: Neo4jConfig,
    pool: RwLock<Pool>,
    guard: Guard,
    /// Whether the key constraint is known to exist.
    constraint_ready: AtomicBool,
    max_query_time: Duration,
}

/// The Neo4j-backed [`GraphStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Neo4jStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Neo4jStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jStore")
            .field("uri", &self.inner.config.uri)
            .field("database", &self.inner.config.database)
            .finish_non_exhaustive()
    }
}

fn connect(config: &Neo4jConfig) -> Result<Graph, StoreError> {
    let built = ConfigBuilder::default()
        .uri(config.uri.as_str())
        .user(config.user.as_str())
        .password(config.password.expose())
        .db(config.database.as_str())
        .fetch_size(FETCH_SIZE)
        .max_connections(config.max_connections)
        .connection_timeout(Neo4jConfig::ms(config.connect_timeout_ms))
        .tcp_keepalive(Some(Neo4jConfig::ms(config.keepalive_ms)))
        // neo4rs wires this setting to the pool's wait timeout: it is the acquisition timeout.
        .max_lifetime(Some(Neo4jConfig::ms(config.acquire_timeout_ms)))
        .build()
        .map_err(|e| StoreError::Unavailable(format!("invalid neo4j settings: {e}")))?;
    Graph::connect(built)
        .map_err(|e| StoreError::Unavailable(format!("cannot create the neo4j pool: {e}")))
}

impl Neo4jStore {
    /// Creates the pool and, when Neo4j answers, the key constraint. Neo4j being down is not
    /// an error here (the service starts and answers UNAVAILABLE until it is back); bad
    /// settings and refused credentials are.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for settings neo4rs refuses, or when Neo4j refuses the
    /// credentials or the database.
    pub async fn open(config: Neo4jConfig) -> Result<Self, StoreError> {
        let graph = connect(&config)?;
        let store = Self {
            inner: Arc::new(Inner {
                guard: Guard::new(
                    Neo4jConfig::ms(config.read_breaker_open_ms),
                    Neo4jConfig::ms(config.write_breaker_open_ms),
                ),
                max_query_time: Neo4jConfig::ms(config.max_query_time_ms.max(1)),
                pool: RwLock::new(Pool {
                    graph,
                    created: Instant::now(),
                }),
                constraint_ready: AtomicBool::new(false),
                config,
            }),
        };
        match store.ensure_constraint().await {
            Ok(()) => {}
            Err(Failure {
                error: StoreError::Unavailable(e),
                transient: true,
                ..
            }) => {
                tracing::warn!(error = %e, "neo4j unreachable at start; the key constraint is created before the first write");
            }
            Err(f) => return Err(f.error),
        }
        tracing::info!(uri = %store.inner.config.uri, database = %store.inner.config.database, pool = store.inner.config.max_connections, "neo4j store open");
        Ok(store)
    }

    /// The current pool, replaced when older than `max_lifetime`.
    fn graph(&self) -> Graph {
        let lifetime = Neo4jConfig::ms(self.inner.config.max_lifetime_ms);
        {
            let pool = self.inner.pool.read();
            if pool.created.elapsed() < lifetime {
                return pool.graph.clone();
            }
        }
        let mut pool = self.inner.pool.write();
        if pool.created.elapsed() >= lifetime {
            match connect(&self.inner.config) {
                Ok(graph) => {
                    tracing::debug!("neo4j connection pool renewed");
                    *pool = Pool {
                        graph,
                        created: Instant::now(),
                    };
                }
                Err(e) => {
                    tracing::error!(error = %e, "neo4j pool renewal failed; keeping the old one")
                }
            }
        }
        pool.graph.clone()
    }

    async fn ensure_constraint(&self) -> Result<(), Failure> {
        if self.inner.constraint_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let q = Query::new(format!(
            "CREATE CONSTRAINT umcp_node_key IF NOT EXISTS FOR (n:{}) REQUIRE n.key IS UNIQUE",
            quoted(NODE_LABEL)
        ));
        let graph = self.graph();
        let run = async {
            let mut txn = graph.start_txn().await.map_err(|e| classify(e, "schema"))?;
            txn.run(q).await.map_err(|e| classify(e, "schema"))?;
            txn.commit().await.map_err(|e| classify(e, "schema"))
        };
        match tokio::time::timeout(self.inner.max_query_time, run).await {
            Ok(Ok(())) => {
                self.inner.constraint_ready.store(true, Ordering::Release);
                Ok(())
            }
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Failure {
                error: StoreError::Unavailable(
                    "neo4j did not create the key constraint in time".into(),
                ),
                transient: true,
                outcome: umcp_resilience::classify::Outcome::Failure,
            }),
        }
    }

    fn deadline(&self, caller: Option<std::time::Instant>) -> Instant {
        let cap = Instant::now() + self.inner.max_query_time;
        caller.map_or(cap, |d| Instant::from_std(d).min(cap))
    }

    /// One write transaction on a task of its own (see the module docs); committed only if
    /// the deadline has not passed.
    async fn write<T, W>(&self, deadline: Instant, work: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        W: for<'t> Fn(&'t mut neo4rs::Txn) -> BoxFuture<'t, Result<T, Failure>>
            + Send
            + Sync
            + 'static,
    {
        let work = Arc::new(work);
        let store = self.clone();
        let run = self.inner.guard.run(Access::Write, deadline, move || {
            let store = store.clone();
            let work = Arc::clone(&work);
            async move {
                store.ensure_constraint().await?;
                let graph = store.graph();
                let task = tokio::spawn(async move {
                    let mut txn = graph.start_txn().await.map_err(|e| classify(e, "write"))?;
                    let out = work(&mut txn).await;
                    match out {
                        Ok(value) if Instant::now() < deadline => {
                            txn.commit().await.map_err(|e| classify(e, "commit"))?;
                            Ok(value)
                        }
                        Ok(_) => {
                            rollback(txn).await;
                            Err(Failure::neutral(StoreError::DeadlineExceeded(
                                "the write did not finish before the deadline; rolled back".into(),
                            )))
                        }
                        Err(f) => {
                            rollback(txn).await;
                            Err(f)
                        }
                    }
                });
                let result = match tokio::time::timeout_at(deadline, task).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(Failure::neutral(StoreError::Internal(format!(
                        "neo4j write task failed: {join}"
                    )))),
                    Err(_) => Err(Failure::neutral(StoreError::DeadlineExceeded(
                        "the write did not finish before the deadline; it is rolled back".into(),
                    ))),
                };
                if matches!(&result, Err(f) if f.outcome == umcp_resilience::classify::Outcome::Failure) {
                    // The server may come back restored or rebuilt: check the constraint
                    // again (it is idempotent) before the next write.
                    store.inner.constraint_ready.store(false, Ordering::Release);
                }
                result
            }
        });
        run.await
    }

    /// Runs `cypher` through the READ path without the parser check: the test-only way to
    /// show what the server itself refuses.
    #[cfg(test)]
    pub(crate) async fn query_unchecked(&self, q: ReadQuery) -> Result<QueryResult, StoreError> {
        self.read_path(q, None).await
    }

    /// The graph, for test set-up and checks.
    #[cfg(test)]
    pub(crate) fn raw_graph(&self) -> Graph {
        self.graph()
    }

    async fn read_path(
        &self,
        q: ReadQuery,
        columns: Option<Vec<Option<String>>>,
    ) -> Result<QueryResult, StoreError> {
        let deadline = self.deadline(q.deadline);
        let limit = q.row_limit as usize;
        let run = self.inner.guard.run(Access::Read, deadline, || {
            let graph = self.graph();
            let (cypher, params, columns) = (&q.cypher, &q.params, columns.as_ref());
            async move { read::query(&graph, cypher, params, columns, limit, deadline).await }
        });
        match tokio::time::timeout_at(deadline, run).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::DeadlineExceeded(
                "the query did not finish before the deadline".into(),
            )),
        }
    }

    /// Deletes everything (tests and benchmarks between runs; never called by the service).
    ///
    /// # Errors
    /// When Neo4j fails.
    pub async fn wipe(&self) -> Result<(), StoreError> {
        self.graph()
            .run(Query::new("MATCH (n) DETACH DELETE n".into()))
            .await
            .map(|_| ())
            .map_err(|e| classify(e, "wipe").error)
    }

    /// The read and write breakers (for health output and tests).
    #[must_use]
    pub fn breakers(&self) -> (&umcp_resilience::Breaker, &umcp_resilience::Breaker) {
        (
            self.inner.guard.breaker(Access::Read),
            self.inner.guard.breaker(Access::Write),
        )
    }
}

async fn rollback(txn: neo4rs::Txn) {
    if let Err(e) = txn.rollback().await {
        // The connection is reset when the pool recycles it, which rolls back as well.
        tracing::debug!(error = %e, "neo4j rollback failed");
    }
}

/// Boxed futures for the write closures (they borrow the transaction).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[async_trait]
impl GraphStore for Neo4jStore {
    fn backend(&self) -> &'static str {
        "neo4j"
    }

    async fn upsert(&self, batch: UpsertBatch) -> Result<UpsertCounts, StoreError> {
        validate::upsert(&batch)?;
        let batch = Arc::new(batch);
        self.write(self.deadline(None), move |txn| {
            let batch = Arc::clone(&batch);
            Box::pin(async move { write::upsert(txn, &batch).await })
        })
        .await
    }

    async fn query(&self, query: ReadQuery) -> Result<QueryResult, StoreError> {
        validate::query(&query)?;
        let statement = readonly::check_parsed(&query.cypher)?;
        let columns = read::columns(&statement, &query.cypher);
        self.read_path(query, columns).await
    }

    async fn delete(&self, batch: DeleteBatch) -> Result<DeleteCounts, StoreError> {
        validate::delete(&batch)?;
        let batch = Arc::new(batch);
        self.write(self.deadline(None), move |txn| {
            let batch = Arc::clone(&batch);
            Box::pin(async move { write::delete(txn, &batch).await })
        })
        .await
    }

    async fn metrics(&self) -> Result<Metrics, StoreError> {
        let deadline = self.deadline(None);
        self.inner
            .guard
            .run(Access::Read, deadline, || {
                let graph = self.graph();
                async move { read::metrics(&graph, deadline).await }
            })
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        let deadline = self.deadline(None);
        self.inner
            .guard
            .run(Access::Read, deadline, || {
                let graph = self.graph();
                async move { read::health(&graph).await }
            })
            .await
    }
}
