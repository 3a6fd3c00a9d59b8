//! `umcp-audit`: the append-only, hash-chained security audit log (`umcp.audit.v1`).
//!
//! Domain code: [`AuditLog`] (the API over all of it, the trait the adapter calls) and its one
//! implementation [`store::FileLog`], built from [`frame`] (the file format), [`chain`] (keyed
//! hash chain, MAC'd checkpoint), [`signed`] (Ed25519-signed checkpoints) and [`signer`] (when
//! they are signed), [`recovery`] (open, cut a torn tail, verify), [`shared`] (the state the
//! writer and the readers share), [`writer`] (group commit), [`read`] (query pages, replay,
//! verification snapshots), [`tail`] (replay then follow live commits), [`index`] (the
//! in-memory query index), [`verify`] (tamper detection), [`validate`] (what events may
//! contain). [`grpc`] only adapts it to the wire (with [`convert`] between the two); every
//! failure is one [`AuditError`].
//!
//! Dependencies run one way: `grpc` → `convert`, `log`; `store` → `writer`, `read`, `tail` →
//! `shared`; nothing below `store` imports it.
//!
//! Slow `Tail` consumers: each stream may fall `tail_buffer` events behind the live log; past
//! that its stream ends with RESOURCE_EXHAUSTED naming the sequence to resume from. Commits
//! never wait for readers.

pub mod chain;
mod config;
mod convert;
mod error;
mod frame;
pub mod grpc;
mod index;
mod log;
mod read;
mod recovery;
mod shared;
pub mod signed;
mod signer;
pub mod store;
mod tail;
pub mod validate;
pub mod verify;
mod writer;

use std::future::Future;
use std::sync::Arc;

use umcp_authz::{AuthClient, Verifier};
use umcp_proto::audit::v1::audit_service_server::AuditServiceServer;
use umcp_rpc::process::ProcessConfig;

pub use config::AuditConfig;
pub use error::AuditError;
pub use grpc::AuditGrpc;
pub use index::{Filter, OutcomeMatch};
pub use log::{AuditLog, Page, RecordOutcome, TailEvents};
pub use shared::Stats;
pub use store::{FileLog, LogOptions};

impl ProcessConfig for AuditConfig {
    fn log(&self) -> &umcp_telemetry::LogConfig {
        &self.log
    }

    fn listen(&self) -> &str {
        &self.listen
    }

    fn ops(&self) -> Option<&umcp_rpc::ops::OpsConfig> {
        Some(&self.http)
    }
}

impl AuditConfig {
    /// The log options of this configuration (loads or creates the chain key and the
    /// checkpoint signing key).
    ///
    /// # Errors
    /// When the key cannot be loaded.
    pub fn log_options(&self) -> Result<LogOptions, AuditError> {
        Ok(LogOptions {
            dir: self.data_dir.clone(),
            key: self.chain_key().map_err(AuditError::Open)?,
            sync_checkpoint: self.sync_checkpoint,
            tail_buffer: self.tail_buffer,
            queue: self.write_queue,
            signing_key: self.signing_key().map_err(AuditError::Open)?,
            sign_every_events: self.sign_every_events,
            sign_interval: std::time::Duration::from_millis(self.sign_interval_ms),
        })
    }
}

/// Serves the audit service on `listener` until `shutdown` completes, verifying tokens against
/// the auth service of `config.auth`.
///
/// # Errors
/// The start-up variants of [`AuditError`]: `Open`, `AuthClient`, `Serve`.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: AuditConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AuditError> {
    let shared = umcp_redis::Redis::connect(&config.redis)
        .await
        .map_err(|e| AuditError::Redis(e.to_string()))?;
    let auth = AuthClient::start(&config.auth, shared).await?;
    let verifier = Arc::clone(&auth.verifier);
    serve(listener, config, verifier, shutdown).await
}

/// [`run`] with the verifier given (tests bring their own issuer).
///
/// # Errors
/// The start-up variants of [`AuditError`]: `Open`, `AuthClient`, `Serve`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: AuditConfig,
    verifier: Arc<Verifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AuditError> {
    let options = config.log_options()?;
    let log = tokio::task::spawn_blocking(move || FileLog::open(options))
        .await
        .map_err(|e| AuditError::Open(format!("opening the audit log panicked: {e}")))?
        .map_err(AuditError::Open)?;
    let log = Arc::new(log);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        head = log.head(),
        damaged = log.damage().is_some(),
        "audit service ready"
    );
    let svc = AuditServiceServer::new(AuditGrpc::new(Arc::clone(&log) as Arc<dyn AuditLog>))
        .max_decoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES);
    let streams = Arc::clone(&log);
    let shutdown = async move {
        shutdown.await;
        // Tail streams never end on their own; graceful shutdown would wait for them.
        streams.stop_streams();
    };
    // The audit service is the sink of every other's events: it records nothing about itself
    // through an emitter (that would loop); its own RPCs are answered, not audited.
    let result = umcp_rpc::Server::new("audit")
        .auth(verifier)
        .add_service(svc)
        .serve(listener, shutdown)
        .await;
    // Let the writer finish the commits it has (their callers are gone, the data is not).
    tokio::task::spawn_blocking(move || log.close()).await.ok();
    result.map_err(AuditError::from)
}
