//! Users, roles, tokens, API keys and signing keys.
//!
//! Components, each with one job: [`users`] (records), [`passwords`] (argon2id),
//! [`refresh`] (rotating refresh-token families), [`api_keys`] (format and records),
//! [`keyring`] (signing keys and JWKS), [`revocations`] (persisted list + broadcast),
//! [`throttle`] (failed logins), [`tokens`] (access tokens), all over [`storage`].
//! [`service::AuthCore`] assembles them behind private fields; its operations live in
//! [`service`] ([`sessions`], [`admin`], the revocation feed, one place for permission
//! checks); [`grpc`] is only the adapter (decode, call the domain, map the error).
//!
//! Callers are authenticated on this port by the same `umcp-authz` layer as everywhere else;
//! its verifier reads the key ring ([`keyring::KeyRing`] is its `KeySource`) and the revocation
//! list ([`revocations::Revocations`] keeps its `RevocationSet` in step) in-process.

pub mod api_keys;
pub mod bootstrap;
mod clock;
pub mod config;
pub mod error;
pub mod grpc;
pub mod keyring;
pub mod passwords;
pub mod refresh;
pub mod revocations;
mod secrets;
mod self_token;
pub mod service;
pub mod share;
pub mod storage;
pub mod throttle;
pub mod tokens;
pub mod users;
mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use umcp_proto::auth::v1::auth_service_server::AuthServiceServer;
use umcp_rpc::process::ProcessConfig;
use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

pub use config::{AuthConfig, PasswordConfig, Secret, ThrottleConfig};
pub use error::AuthError;
pub use service::{admin, sessions};

impl ProcessConfig for AuthConfig {
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

/// Why the auth service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error("cannot open the auth store: {0}")]
    Store(#[from] umcp_store::StoreError),
    /// Start-up failed (keys, bootstrap, hashing parameters).
    #[error("cannot start: {0}")]
    Startup(#[from] AuthError),
    /// The audit client could not start.
    #[error("cannot start the audit client: {0}")]
    Audit(String),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] umcp_rpc::ServeError),
    /// The Redis settings are invalid.
    #[error(transparent)]
    Redis(#[from] umcp_redis::RedisError),
}

/// Largest request accepted: every auth request is a few short strings (a page of 1000 users
/// is the largest response, and responses keep the mesh-wide limit).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long `run` waits, after the server stopped, for background tasks to let go of the store.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the auth service on `listener` until `shutdown` completes.
///
/// # Errors
/// See [`Error`].
pub async fn run(
    listener: TcpListener,
    config: AuthConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = GrafeoStore::open(GrafeoConfig::persistent(config.store_dir())).await?;
    let core = Arc::new(service::AuthCore::open(Arc::new(store), &config).await?);
    bootstrap::ensure_admin(&core, &config).await?;
    bootstrap::ensure_service_key(&core, &config).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let janitor = tokio::spawn(Arc::clone(&core).janitor(
        Duration::from_secs(config.janitor_interval_secs),
        stop_rx.clone(),
    ));
    let sharing = umcp_redis::Redis::connect(&config.redis)
        .await?
        .map(|redis| {
            let shared = umcp_authz::shared::SharedAuthState::new(redis);
            tokio::spawn(share::share(shared, Arc::clone(&core), stop_rx.clone()))
        });
    let accounts: Arc<dyn service::Accounts> = Arc::clone(&core) as _;
    let service = grpc::AuthGrpc::new(accounts, config.trust_forwarded_for, stop_rx);
    let svc = AuthServiceServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES);
    let shutdown = async move {
        shutdown.await;
        // Ends open WatchRevocations streams and the janitor, so graceful shutdown can finish.
        let _ = stop_tx.send(true);
    };
    let credentials: Arc<dyn umcp_audit_client::TokenProvider> =
        Arc::new(self_token::SelfToken::new(&core));
    let emitter = umcp_audit_client::start_emitter(&config.audit, Some(credentials), "auth")
        .map_err(|e| Error::Audit(e.to_string()))?;
    let result = umcp_rpc::Server::new("auth")
        .auth(Arc::clone(core.verifier()))
        .audit(emitter)
        .add_service(svc)
        .serve(listener, shutdown)
        .await;
    let _ = janitor.await;
    if let Some(sharing) = sharing {
        let _ = sharing.await;
    }
    release(core).await;
    result.map_err(Error::from)
}

/// Waits until nothing but `core` holds the domain, then drops it, so the store is closed
/// when `run` returns (a restart in the same process can then open it again).
async fn release(core: Arc<service::AuthCore>) {
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    while Arc::strong_count(&core) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(core);
}
