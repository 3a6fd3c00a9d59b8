//! Persists every finished result to the graph service (`GraphService/Upsert`).
//!
//! // why asynchronous: the user's call must not wait for, or fail because of, the graph.
//! `record` only puts the result on a bounded queue ([`queue`]); one worker sends batches with
//! the service's own credentials through retry → circuit breaker → per-attempt timeout
//! (`umcp-resilience`). A graph outage costs a log line and a counter per batch; once the
//! breaker is open not even a connection attempt: results wait in the queue (oldest dropped
//! when full) until the breaker lets a probe through, so a short outage loses nothing.
//!
//! Upsert merges by key, so re-sending a batch changes nothing: it is retried as idempotent.

mod credentials;
pub mod mapping;
mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_resilience::balance::{BalanceConfig, BalancedChannel, Configure};
use umcp_resilience::breaker::{Breaker, BreakerConfig, CircuitBreaker, State, is_breaker_open};
use umcp_resilience::retry::{Idempotency, Retrier, RetryConfig};
use umcp_resilience::timeout::Timeout;
use umcp_resilience::{CircuitBreakerLayer, GrpcClassifier, TimeoutLayer};

pub use credentials::{StaticToken, TokenProvider};
use mapping::Job;
use queue::Queue;

use crate::config::ExecutionConfig;
use crate::sink::{Activity, ResultSink};

/// How the sink talks to the graph.
#[derive(Debug, Clone)]
pub struct GraphSinkOptions {
    /// `http://host:port` of the graph service.
    pub url: String,
    /// Results waiting at most; beyond it the oldest is dropped.
    pub queue_capacity: usize,
    /// Results per upsert (each adds a node and a relationship, plus its user's node).
    pub batch: usize,
    /// One attempt's limit.
    pub attempt_timeout: Duration,
    /// All attempts of one batch, backoff included.
    pub deadline: Duration,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
}

impl GraphSinkOptions {
    /// The options of `config` (`graph_url`, `graph_queue`), with the resilience defaults.
    #[must_use]
    pub fn from_config(config: &ExecutionConfig) -> Self {
        Self {
            url: config.graph_url.clone(),
            queue_capacity: config.graph_queue,
            batch: 100,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Counters for metrics. Every recorded result ends persisted, failed or dropped, or is
/// still queued (or in flight); `breaker_rejected` counts hold-backs, not losses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Written to the graph.
    pub persisted: u64,
    /// Lost: the graph (or the token source) failed after any retries.
    pub failed: u64,
    /// Lost: dropped from a full queue.
    pub dropped: u64,
    /// Results held back because the breaker was open (counted each time): they stay queued
    /// until the breaker lets a probe through.
    pub breaker_rejected: u64,
    /// Waiting now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Counters {
    persisted: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    breaker_rejected: AtomicU64,
}

type Stack = CircuitBreaker<Timeout<Channel>, GrpcClassifier>;

#[derive(Debug)]
struct Shared {
    queue: Queue<Job>,
    counters: Counters,
}

/// The graph sink; dropping it stops the worker (results still queued are lost).
#[derive(Debug)]
pub struct GraphSink {
    shared: Arc<Shared>,
    breaker: Breaker,
    retrier: Retrier,
    worker: JoinHandle<()>,
    /// Keeps re-resolving the graph host while the sink lives.
    _pool: BalancedChannel,
}

impl Drop for GraphSink {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl GraphSink {
    /// Starts the worker (on the current runtime) sending to `options.url` with `credentials`.
    /// Connects lazily: a graph service that is down at start-up is an outage like any other.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn start(
        options: GraphSinkOptions,
        credentials: Arc<dyn TokenProvider>,
    ) -> Result<Self, String> {
        // Balanced over every address of the graph host (a headless Service: one per pod),
        // re-resolved live, so persistence load spreads over the graph replicas.
        let configure: Configure = Arc::new(|endpoint: Endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
        });
        let pool = BalancedChannel::start(&options.url, BalanceConfig::default(), configure)
            .map_err(|e| format!("graph_url `{}` is invalid: {e}", options.url))?;
        let channel = pool.channel();
        let breaker = Breaker::new("graph", options.breaker.clone());
        let stack: Stack = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(
                breaker.clone(),
                GrpcClassifier::new(),
            ))
            .layer(TimeoutLayer::new(options.attempt_timeout))
            .service(channel);
        let client = GraphServiceClient::new(stack);
        let retrier = Retrier::new(options.retry.clone());
        let shared = Arc::new(Shared {
            queue: Queue::new(options.queue_capacity),
            counters: Counters::default(),
        });
        let worker = tokio::spawn(work(
            Arc::clone(&shared),
            client,
            Worker {
                retrier: retrier.clone(),
                breaker: breaker.clone(),
                credentials,
                options,
            },
        ));
        Ok(Self {
            shared,
            breaker,
            retrier,
            worker,
            _pool: pool,
        })
    }

    /// Counters since start.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        let c = &self.shared.counters;
        SinkStats {
            persisted: c.persisted.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            breaker_rejected: c.breaker_rejected.load(Ordering::Relaxed),
            queued: self.shared.queue.len() as u64,
        }
    }

    /// The graph client's breaker (state and window counts for metrics).
    #[must_use]
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The graph client's retrier (retry and budget counters for metrics).
    #[must_use]
    pub fn retrier(&self) -> &Retrier {
        &self.retrier
    }

    /// Queues a result; never waits.
    pub fn enqueue(&self, user: &str, activity: Activity) {
        let job = Job {
            user: user.to_owned(),
            activity,
            at: SystemTime::now(),
        };
        if self.shared.queue.push(job) {
            let dropped = self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per 1000 drops: an outage must not flood the log.
            if dropped % 1000 == 1 {
                tracing::warn!(
                    dropped,
                    "graph sink queue full; dropping the oldest results"
                );
            }
        }
    }
}

#[async_trait::async_trait]
impl ResultSink for GraphSink {
    async fn record(&self, user: &str, activity: Activity) -> Result<(), String> {
        self.enqueue(user, activity);
        Ok(())
    }
}

/// What the worker sends with.
struct Worker {
    retrier: Retrier,
    breaker: Breaker,
    credentials: Arc<dyn TokenProvider>,
    options: GraphSinkOptions,
}

async fn work(shared: Arc<Shared>, client: GraphServiceClient<Stack>, worker: Worker) {
    let Worker {
        retrier,
        breaker,
        credentials,
        options,
    } = worker;
    loop {
        // A probe of a recovering graph carries one result: if the graph is still down, one
        // result is lost, not a whole batch.
        let batch = shared
            .queue
            .pop_batch(|| {
                let probing = breaker.state() == State::HalfOpen
                    || breaker.retry_after() == Some(Duration::ZERO);
                if probing { 1 } else { options.batch }
            })
            .await;
        let n = batch.len() as u64;
        let request = mapping::upsert(&batch);
        let deadline = tokio::time::Instant::now() + options.deadline;
        // Whether any attempt got past the breaker: a batch that failed at the graph and was
        // then refused by the breaker (opened by those failures) counts as failed.
        let reached = AtomicBool::new(false);
        let result = retrier
            .call(Idempotency::Idempotent, Some(deadline), |attempt| {
                let (mut client, request) = (client.clone(), request.clone());
                let (credentials, reached) = (Arc::clone(&credentials), &reached);
                async move {
                    let mut request = tonic::Request::new(request);
                    umcp_authz::remote::authorize(&*credentials, &mut request).await?;
                    if let Some(left) = attempt.remaining {
                        request.set_timeout(left);
                    }
                    let result = client.upsert(request).await;
                    if !result.as_ref().is_err_and(|s| is_breaker_open(s)) {
                        reached.store(true, Ordering::Relaxed);
                    }
                    result
                }
            })
            .await;
        let c = &shared.counters;
        match result {
            Ok(_) => {
                c.persisted.fetch_add(n, Ordering::Relaxed);
                tracing::debug!(results = n, "results persisted to the graph");
            }
            Err(status) if !reached.load(Ordering::Relaxed) && is_breaker_open(&status) => {
                // Nothing was sent: keep the results for when the breaker lets calls through
                // again, and wait until then instead of spinning against it.
                c.breaker_rejected.fetch_add(n, Ordering::Relaxed);
                let dropped = shared.queue.requeue(batch) as u64;
                c.dropped.fetch_add(dropped, Ordering::Relaxed);
                let wait = breaker
                    .retry_after()
                    .unwrap_or_default()
                    .max(Duration::from_millis(50));
                tracing::debug!(
                    results = n,
                    wait_ms = wait.as_millis() as u64,
                    "graph breaker open; results held back"
                );
                tokio::time::sleep(wait).await;
            }
            Err(status) => {
                c.failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    results = n,
                    code = ?status.code(),
                    message = status.message(),
                    "persisting results to the graph failed"
                );
            }
        }
    }
}

/// The sink the configuration asks for: none when `graph_url` is empty or the service has no
/// API key (the graph refuses anonymous writes), otherwise a running [`GraphSink`].
///
/// # Errors
/// When `graph_url` is invalid.
pub fn from_config(
    config: &ExecutionConfig,
    credentials: Option<Arc<dyn TokenProvider>>,
) -> Result<Option<Arc<GraphSink>>, String> {
    if config.graph_url.is_empty() {
        tracing::info!("graph_url is empty; results are not persisted to the graph");
        return Ok(None);
    }
    let Some(credentials) = credentials else {
        tracing::warn!(
            "no service api key (UMCP_AUTH__API_KEY or UMCP_AUTH__API_KEY_FILE); results are not \
             persisted to the graph"
        );
        return Ok(None);
    };
    let sink = GraphSink::start(GraphSinkOptions::from_config(config), credentials)?;
    tracing::info!(url = %config.graph_url, "results are persisted to the graph");
    Ok(Some(Arc::new(sink)))
}
