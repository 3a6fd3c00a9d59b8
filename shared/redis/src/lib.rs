//! The mesh's one way to reach Redis, standalone or Cluster, through `fred`.
//!
//! // why one crate: every user (the cache, rate limits, key sharing) must get the same
//! bounds. A call through [`Redis::call`] never waits longer than the command timeout (50 ms by
//! default), and once Redis has failed half of the recent calls a circuit breaker answers
//! [`RedisError::BreakerOpen`] at once, so a Redis outage costs callers nothing but the
//! fallback they choose (local cache, local limits). Connections are made in the background
//! and re-made forever with exponential backoff: a process starts and serves while Redis is
//! down.

#![warn(missing_docs)]

mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use fred::clients::{Client, Pool, SubscriberClient};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::Builder;
use fred::types::config::{
    Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, ServerConfig, TlsConnector,
};
use umcp_resilience::breaker::{Breaker, BreakerConfig, State};
use umcp_resilience::classify::Outcome;

pub use config::{RedisConfig, Topology};
pub use fred;

/// Why a Redis call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The settings cannot describe a Redis (checked at start-up, so only seen by tests).
    #[error("invalid redis settings: {0}")]
    Config(String),
    /// Redis failed recently; the breaker refuses calls until it lets a probe through.
    #[error("redis is unavailable (circuit breaker open)")]
    BreakerOpen,
    /// No answer within the command timeout.
    #[error("redis did not answer `{op}` within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Redis, or the way to it, failed (connection, cluster routing, I/O).
    #[error("redis `{op}` failed: {source}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// fred's error.
        source: FredError,
    },
    /// Redis answered with an error about the command itself (a script error, a wrong type):
    /// a bug here, not an outage.
    #[error("redis refused `{op}`: {source}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// fred's error.
        source: FredError,
    },
}

/// A pooled connection to the configured Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    builder: Builder,
    clustered: bool,
    timeout: Duration,
    breaker: Breaker,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("clustered", &self.inner.clustered)
            .field("connected", &self.is_connected())
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects to the Redis of `config`, or `Ok(None)` when none is configured. Waits at most
    /// `connect_timeout_ms` for a first connection; a Redis that is down is logged and
    /// connected to in the background (calls fail fast meanwhile), never an error.
    ///
    /// # Errors
    /// [`RedisError::Config`] when the settings are invalid.
    pub async fn connect(config: &RedisConfig) -> Result<Option<Self>, RedisError> {
        let clustered = match config.topology().map_err(RedisError::Config)? {
            Topology::Off => return Ok(None),
            Topology::Standalone(_) => false,
            Topology::Cluster(_) => true,
        };
        let builder = builder(config)?;
        let pool = builder
            .build_pool(config.pool_size)
            .map_err(|e| RedisError::Config(e.to_string()))?;
        pool.connect_pool();
        let wait = Duration::from_millis(config.connect_timeout_ms);
        match tokio::time::timeout(wait, pool.wait_for_connect()).await {
            Ok(Ok(())) => tracing::info!(clustered, "redis connected"),
            Ok(Err(error)) => {
                tracing::warn!(clustered, %error, "redis not reachable; reconnecting in the background");
            }
            Err(_) => tracing::warn!(
                clustered,
                waited_ms = config.connect_timeout_ms,
                "redis not reachable yet; reconnecting in the background"
            ),
        }
        let breaker = Breaker::new("redis", breaker_config(config));
        Ok(Some(Self {
            inner: Arc::new(Inner {
                pool,
                builder,
                clustered,
                timeout: config.command_timeout(),
                breaker,
                prefix: config.key_prefix.clone(),
            }),
        }))
    }

    /// Runs one Redis operation under the breaker and the command timeout. `op` names it in
    /// errors and logs.
    ///
    /// # Errors
    /// See [`RedisError`]; only outages count against the breaker.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        self.call_within(op, self.inner.timeout, f).await
    }

    /// [`Self::call`] with a caller's own budget, shorter than the command timeout (a rate-limit
    /// decision has 15 ms); running past it counts against the breaker like any timeout.
    ///
    /// # Errors
    /// See [`RedisError`].
    pub async fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        budget: Duration,
        f: F,
    ) -> Result<T, RedisError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let budget = budget.min(self.inner.timeout);
        let permit = self
            .inner
            .breaker
            .try_acquire()
            .map_err(|_open| RedisError::BreakerOpen)?;
        let client = self.inner.pool.next_connected().clone();
        // Only when exported: this is the hot path of every rate-limit decision.
        let span = if umcp_telemetry::trace::exporting() {
            tracing::info_span!(
                "redis",
                otel.name = %format_args!("redis.{op}"),
                otel.kind = "client",
                db.system = "redis",
                db.operation = op,
            )
        } else {
            tracing::Span::none()
        };
        let result = match tokio::time::timeout(budget, f(client).instrument(span)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) if is_outage(&source) => Err(RedisError::Unavailable { op, source }),
            Ok(Err(source)) => Err(RedisError::Refused { op, source }),
            Err(_elapsed) => Err(RedisError::Timeout { op, after: budget }),
        };
        permit.record(match &result {
            Ok(_) | Err(RedisError::Refused { .. }) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
        result
    }

    /// A client of the pool (connected if any is), for work outside [`Self::call`]'s bounds.
    #[must_use]
    pub fn client(&self) -> &Client {
        self.inner.pool.next_connected()
    }

    /// A new, not yet connected subscriber with the same settings (pub/sub needs its own
    /// connection). Call `manage_subscriptions` on it so it resubscribes after reconnects.
    ///
    /// # Errors
    /// [`RedisError::Config`] when fred refuses the settings.
    pub fn subscriber(&self) -> Result<SubscriberClient, RedisError> {
        self.inner
            .builder
            .build_subscriber_client()
            .map_err(|e| RedisError::Config(e.to_string()))
    }

    /// Whether this is a Redis Cluster (sharded pub/sub, per-node script caches).
    #[must_use]
    pub fn is_clustered(&self) -> bool {
        self.inner.clustered
    }

    /// Whether any pooled connection is up now.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner
            .pool
            .clients()
            .iter()
            .any(ClientLike::is_connected)
    }

    /// Whether calls may go through now (connected and the breaker not open).
    #[must_use]
    pub fn is_available(&self) -> bool {
        self.is_connected() && self.inner.breaker.state() != State::Open
    }

    /// The breaker (for health and metrics).
    #[must_use]
    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// `prefix + rest`: every key and channel of the mesh starts with the configured prefix.
    #[must_use]
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.prefix)
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        let _ = self.inner.pool.quit().await;
    }
}

/// Errors that say Redis, or the way to it, is not serving (they count against the breaker).
fn is_outage(error: &FredError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Cluster
            | ErrorKind::Routing
            | ErrorKind::Backpressure
            | ErrorKind::Tls
            | ErrorKind::Auth
    )
    // Not `Unknown`: fred reports the server's own `ERR …` replies with it, which are answers.
}

fn builder(config: &RedisConfig) -> Result<Builder, RedisError> {
    let fred_config = match config.topology().map_err(RedisError::Config)? {
        Topology::Off => return Err(RedisError::Config("no redis configured".into())),
        Topology::Standalone(url) => {
            Config::from_url(&url).map_err(|e| RedisError::Config(e.to_string()))?
        }
        Topology::Cluster(nodes) => cluster_config(config, nodes)?,
    };
    let timeout = config.command_timeout();
    let connect = Duration::from_millis(config.connect_timeout_ms);
    let mut builder = Builder::from_config(fred_config);
    builder
        .with_performance_config(|perf: &mut PerformanceConfig| {
            perf.default_command_timeout = timeout;
        })
        .with_connection_config(|conn: &mut ConnectionConfig| {
            conn.connection_timeout = connect;
            conn.internal_command_timeout = connect;
            // One attempt per command: the caller has its own fallback; fred must not queue a
            // command across reconnects beyond the command timeout.
            conn.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            u32::try_from(config.reconnect_min_delay_ms).unwrap_or(u32::MAX),
            u32::try_from(config.reconnect_max_delay_ms).unwrap_or(u32::MAX),
            2,
        ));
    Ok(builder)
}

fn cluster_config(config: &RedisConfig, nodes: Vec<(String, u16)>) -> Result<Config, RedisError> {
    let tls = if config.tls {
        Some(
            TlsConnector::default_rustls()
                .map_err(|e| RedisError::Config(e.to_string()))?
                .into(),
        )
    } else {
        None
    };
    Ok(Config {
        server: ServerConfig::new_clustered(nodes),
        username: (!config.username.is_empty()).then(|| config.username.clone()),
        password: (!config.password.expose().is_empty())
            .then(|| config.password.expose().to_owned()),
        tls,
        ..Config::default()
    })
}

/// A breaker tuned for a cache: a short window so an outage is noticed within a few calls,
/// a short open state so recovery is noticed within `breaker_open_ms`.
fn breaker_config(config: &RedisConfig) -> BreakerConfig {
    BreakerConfig {
        sliding_window_size: 20,
        minimum_number_of_calls: 10,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration_threshold: config.command_timeout(),
        wait_duration_in_open_state: Duration::from_millis(config.breaker_open_ms),
        permitted_number_of_calls_in_half_open_state: 3,
    }
}
