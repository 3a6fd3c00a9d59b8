//! The client every producer (gateway, auth, graph, execution) uses to write audit events.
//!
//! - [`AuditClient::record`] enqueues without blocking; a background task batches events (by
//!   size and time) and sends them with `Record`.
//! - While the audit service is unreachable (or refuses the token), batches go to a local
//!   append-only spool file (fsynced), and are replayed in order — with exponential backoff
//!   and full jitter between attempts — once it answers again, also after a producer restart.
//!   New events queue behind the spool, so order is kept; the service drops re-sent events by
//!   `event_id`, so each is stored exactly once.
//! - [`AuditClient::record_required`] is for audited mutating operations: it returns only once
//!   the event is acknowledged by the service or durably spooled, and fails closed
//!   ([`AuditClientError::SpoolFull`], mapped to UNAVAILABLE) when it cannot be either.
//!
//! Nothing is dropped by design: when the spool is full, events from `record` wait in memory
//! (up to `memory_max_events`) for replay to free space; only beyond that are they counted in
//! [`Metrics::dropped`] and logged. Audited operations use `record_required`, which refuses
//! instead, long before that point.
//!
//! Tokens come from a [`TokenProvider`]: the service's own [`ServiceCredentials`]
//! (`umcp_authz::remote`) in producers, a [`StaticToken`] in tests and tools.
//!
//! [`ServiceCredentials`]: umcp_authz::remote::ServiceCredentials

#![warn(missing_docs)]

pub mod emit;
pub mod layer;
mod observer;
mod pump;
mod spool;
mod token;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;
use umcp_proto::audit::v1::AuditEvent;

pub use emit::{Emitter, Event, RateLimitReporter};
pub use layer::{AuditLayer, Rule, VIOLATION_HEADER};
pub use token::{StaticToken, TokenProvider};

/// Largest event accepted: far above any valid one (the service caps details at 16 KiB and
/// every string field), well below the 4 MiB message limit.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Encoded events per `Record` call at most, so a batch always fits into one message.
pub(crate) const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// The `audit` configuration section of a producer (`UMCP_AUDIT__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditClientConfig {
    /// Audit service URL (`UMCP_AUDIT__URL`, default `http://127.0.0.1:50055`).
    pub url: String,
    /// Spool directory (`UMCP_AUDIT__SPOOL_DIR`, default `./data/audit-spool`). One per
    /// producer process: two processes must not share a spool.
    pub spool_dir: PathBuf,
    /// Spool size limit in bytes (`UMCP_AUDIT__SPOOL_MAX_BYTES`, default 64 MiB).
    pub spool_max_bytes: u64,
    /// Events per `Record` call (`UMCP_AUDIT__BATCH_MAX_EVENTS`, default 500, 1–1000).
    pub batch_max_events: usize,
    /// How long a batch waits to fill up, in milliseconds (`UMCP_AUDIT__BATCH_DELAY_MS`,
    /// default 20). Required events do not wait.
    pub batch_delay_ms: u64,
    /// Deadline of one `Record` call in milliseconds (`UMCP_AUDIT__REQUEST_TIMEOUT_MS`,
    /// default 5000).
    pub request_timeout_ms: u64,
    /// Connect timeout in milliseconds (`UMCP_AUDIT__CONNECT_TIMEOUT_MS`, default 1000).
    pub connect_timeout_ms: u64,
    /// First retry delay cap in milliseconds (`UMCP_AUDIT__RETRY_BASE_MS`, default 100).
    pub retry_base_ms: u64,
    /// Largest retry delay in milliseconds (`UMCP_AUDIT__RETRY_MAX_MS`, default 5000).
    pub retry_max_ms: u64,
    /// Events from `record` held in memory while the spool is full
    /// (`UMCP_AUDIT__MEMORY_MAX_EVENTS`, default 100000).
    pub memory_max_events: usize,
    /// Audited-critical operations (code execution, graph writes, administration) run only
    /// once their event is recorded or spooled (`UMCP_AUDIT__FAIL_CLOSED`, default true). With
    /// `false` they run anyway and their event is recorded like any other (never lost while
    /// the spool has room); for deployments that prefer availability, logged at start-up.
    pub fail_closed: bool,
}

impl Default for AuditClientConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50055".into(),
            spool_dir: PathBuf::from("./data/audit-spool"),
            spool_max_bytes: 64 * 1024 * 1024,
            batch_max_events: 500,
            batch_delay_ms: 20,
            request_timeout_ms: 5000,
            connect_timeout_ms: 1000,
            retry_base_ms: 100,
            retry_max_ms: 5000,
            memory_max_events: 100_000,
            fail_closed: true,
        }
    }
}

impl AuditClientConfig {
    /// Problems with this section, for the binary's `Validate` impl.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.url.is_empty() {
            // Audit disabled: nothing else matters.
            return problems;
        }
        let url_ok = self
            .url
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
        if !url_ok {
            problems.push(format!(
                "audit.url (UMCP_AUDIT__URL) `{}` must be an http://host:port URL, or empty to \
                 disable auditing",
                self.url
            ));
        }
        if self.spool_dir.as_os_str().is_empty() {
            problems.push("audit.spool_dir (UMCP_AUDIT__SPOOL_DIR) must not be empty".into());
        }
        let checks: [(&str, u64, u64, u64); 7] = [
            ("spool_max_bytes", self.spool_max_bytes, 4096, 1 << 40),
            ("batch_max_events", self.batch_max_events as u64, 1, 1000),
            ("batch_delay_ms", self.batch_delay_ms, 0, 10_000),
            ("request_timeout_ms", self.request_timeout_ms, 10, 600_000),
            ("connect_timeout_ms", self.connect_timeout_ms, 10, 60_000),
            ("retry_base_ms", self.retry_base_ms, 1, 60_000),
            (
                "memory_max_events",
                self.memory_max_events as u64,
                0,
                10_000_000,
            ),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                problems.push(format!(
                    "audit.{name} (UMCP_AUDIT__{}) must be {min}..={max}, got {value}",
                    name.to_ascii_uppercase()
                ));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            problems.push(
                "audit.retry_max_ms (UMCP_AUDIT__RETRY_MAX_MS) must not be below retry_base_ms"
                    .into(),
            );
        }
        problems
    }
}

/// Why an event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditClientError {
    /// The audit service is unreachable and the spool is full: fail closed.
    #[error("audit log unavailable: the service is unreachable and the local spool is full")]
    SpoolFull,
    /// The spool could not be written (disk error): fail closed.
    #[error("audit log unavailable: the local spool cannot be written")]
    SpoolFailed,
    /// The audit service refused the event as invalid (a producer bug).
    #[error("the audit service rejected the event: {0}")]
    Rejected(String),
    /// The client was closed.
    #[error("the audit client is closed")]
    Closed,
}

impl From<AuditClientError> for tonic::Status {
    /// What the audited operation answers its own caller: UNAVAILABLE when the audit trail
    /// cannot be guaranteed, INTERNAL for a producer bug.
    fn from(err: AuditClientError) -> Self {
        match err {
            AuditClientError::Rejected(_) => tonic::Status::internal("audit event rejected"),
            other => tonic::Status::unavailable(other.to_string()),
        }
    }
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration.
    #[error("invalid audit client configuration: {0}")]
    Config(String),
    /// The spool could not be opened.
    #[error("cannot open the audit spool in {dir}: {error}")]
    Spool {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        error: std::io::Error,
    },
}

/// Counter snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metrics {
    /// Events waiting in memory (queue and spool-full overflow).
    pub queued: u64,
    /// Events acknowledged by the service (directly or by replay).
    pub sent: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events the service rejected as invalid.
    pub rejected: u64,
    /// Events lost because spool and memory were both full (0 by design; see crate docs).
    pub dropped: u64,
    /// Bytes in the spool waiting for replay.
    pub spool_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queued: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
}

/// Shows the client's counters on `/metrics` for as long as it exists (the spool's depth and
/// the events waiting are what an operator watches when the audit service is down).
fn expose(counters: &Arc<Counters>) {
    use umcp_telemetry::metrics::{Sample, register_stats};
    let weak = Arc::downgrade(counters);
    register_stats(move || {
        let Some(c) = weak.upgrade() else {
            return Vec::new();
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let events = "audit events by fate (sent, spooled, rejected, dropped)";
        vec![
            Sample::gauge(
                "umcp_audit_client_queued",
                "audit events waiting in memory",
                load(&c.queued) as f64,
            ),
            Sample::gauge(
                "umcp_audit_client_spool_bytes",
                "bytes in the audit spool awaiting replay",
                load(&c.spool_bytes) as f64,
            ),
            Sample::counter("umcp_audit_client_events", events, load(&c.sent))
                .label("fate", "sent"),
            Sample::counter("umcp_audit_client_events", events, load(&c.spooled))
                .label("fate", "spooled"),
            Sample::counter("umcp_audit_client_events", events, load(&c.rejected))
                .label("fate", "rejected"),
            Sample::counter("umcp_audit_client_events", events, load(&c.dropped))
                .label("fate", "dropped"),
        ]
    });
}

pub(crate) type Ack = oneshot::Sender<Result<(), AuditClientError>>;

/// What the background task receives.
#[derive(Debug)]
pub(crate) enum Item {
    Event(Box<AuditEvent>, Option<Ack>),
    Flush(Ack),
    /// Send or spool what is queued, then stop.
    Close,
}

/// See the crate docs. Cheap to clone; the background task stops when the last clone is
/// closed or dropped (events still queued then are spooled or sent first).
#[derive(Debug, Clone)]
pub struct AuditClient {
    tx: mpsc::UnboundedSender<Item>,
    counters: Arc<Counters>,
    task: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl AuditClient {
    /// Opens the spool and starts the background task (needs a Tokio runtime). Connects
    /// lazily: an audit service that is down at start-up only means spooling.
    ///
    /// # Errors
    /// Invalid configuration or an unusable spool directory.
    pub fn start(
        config: AuditClientConfig,
        credentials: Arc<dyn TokenProvider>,
    ) -> Result<Self, StartError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(StartError::Config(problems.join("; ")));
        }
        let spool =
            spool::Spool::open(&config.spool_dir, config.spool_max_bytes).map_err(|error| {
                StartError::Spool {
                    dir: config.spool_dir.clone(),
                    error,
                }
            })?;
        let channel = Endpoint::from_shared(config.url.clone())
            .map_err(|e| StartError::Config(format!("audit.url: {e}")))?
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .connect_lazy();
        let counters = Arc::new(Counters::default());
        counters
            .spool_bytes
            .store(spool.pending_bytes(), Ordering::Relaxed);
        if !spool.is_empty() {
            tracing::info!(
                bytes = spool.pending_bytes(),
                "audit spool holds events from before; replaying"
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pump = pump::Pump::new(
            config,
            channel,
            credentials,
            spool,
            Arc::clone(&counters),
            rx,
        );
        let task = tokio::spawn(pump.run());
        expose(&counters);
        Ok(Self {
            tx,
            counters,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        })
    }

    /// Fills in a missing id and timestamp; refuses events too large for any valid event, so
    /// one oversized event can never block the spool behind it.
    fn prepare(mut event: AuditEvent) -> Result<Box<AuditEvent>, AuditClientError> {
        if event.event_id.is_empty() {
            event.event_id = uuid::Uuid::now_v7().to_string();
        }
        if event.timestamp.is_none() {
            event.timestamp = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
        }
        let size = prost::Message::encoded_len(&event);
        if size > MAX_EVENT_BYTES {
            return Err(AuditClientError::Rejected(format!(
                "the event is {size} bytes; at most {MAX_EVENT_BYTES} (details are capped at 16 KiB)"
            )));
        }
        Ok(Box::new(event))
    }

    /// Enqueues `event` (never blocks). A missing `event_id` (UUIDv7) or timestamp is filled
    /// in here.
    pub fn record(&self, event: AuditEvent) {
        let event = match Self::prepare(event) {
            Ok(event) => event,
            Err(error) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "audit event refused");
                return;
            }
        };
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Item::Event(event, None)).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!("audit event recorded after the audit client was closed; dropped");
        }
    }

    /// Records `event` and returns once it is acknowledged by the service or durably in the
    /// spool.
    ///
    /// # Errors
    /// [`AuditClientError::SpoolFull`] / [`AuditClientError::SpoolFailed`] when neither is
    /// possible (fail closed: the caller answers UNAVAILABLE), `Rejected` for invalid events.
    pub async fn record_required(&self, event: AuditEvent) -> Result<(), AuditClientError> {
        let event = Self::prepare(event).inspect_err(|_| {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        })?;
        let (ack, done) = oneshot::channel();
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Item::Event(event, Some(ack))).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditClientError::Closed);
        }
        done.await.unwrap_or(Err(AuditClientError::Closed))
    }

    /// Waits until every event enqueued before this call is acknowledged or spooled.
    ///
    /// # Errors
    /// [`AuditClientError::Closed`] when the client stopped.
    pub async fn flush(&self) -> Result<(), AuditClientError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Item::Flush(ack))
            .map_err(|_| AuditClientError::Closed)?;
        done.await.unwrap_or(Err(AuditClientError::Closed))
    }

    /// Current counters.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let c = &self.counters;
        Metrics {
            queued: c.queued.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            spool_bytes: c.spool_bytes.load(Ordering::Relaxed),
        }
    }

    /// Stops the background task after it has sent or spooled everything queued (events not
    /// acknowledged by then stay in the spool for the next start).
    pub async fn close(self) {
        let task = self.task.lock().await.take();
        let _ = self.tx.send(Item::Close);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The emitter of a producer: writes through a new [`AuditClient`] with the service's own
/// credentials, or goes nowhere (loudly logged) when auditing is disabled (`audit.url` empty)
/// or the service has no credentials to write with.
///
/// # Errors
/// See [`StartError`].
pub fn start_emitter(
    config: &AuditClientConfig,
    credentials: Option<Arc<dyn TokenProvider>>,
    service: &'static str,
) -> Result<Emitter, StartError> {
    if config.url.is_empty() {
        tracing::warn!(service, "auditing is disabled (UMCP_AUDIT__URL is empty)");
        return Ok(Emitter::new(None, service));
    }
    let Some(credentials) = credentials else {
        tracing::warn!(
            service,
            "auditing is disabled: no service api key (UMCP_AUTH__API_KEY or UMCP_AUTH__API_KEY_FILE) to write with"
        );
        return Ok(Emitter::new(None, service));
    };
    if !config.fail_closed {
        tracing::warn!(
            service,
            "audit fail-closed is OFF (UMCP_AUDIT__FAIL_CLOSED=false): audited operations run even when their event cannot be recorded"
        );
    }
    Ok(Emitter::new(
        Some(AuditClient::start(config.clone(), credentials)?),
        service,
    )
    .fail_closed(config.fail_closed))
}
