//! The auth domain assembled from its components, plus its background upkeep.
//!
//! The operations live in `sessions` (login, refresh, logout, API-key exchange) and `admin`
//! (users, API keys, signing keys); the gRPC adapter only decodes and maps errors.

use std::sync::Arc;
use std::time::Duration;

use umcp_authz::{Verifier, VerifierConfig};
use umcp_store::GraphStore;

use crate::api_keys::ApiKeys;
use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keyring::KeyRing;
use crate::passwords::Passwords;
use crate::refresh::RefreshTokens;
use crate::revocations::Revocations;
use crate::storage::Records;
use crate::throttle::Throttle;
use crate::tokens::Tokens;
use crate::users::Users;

/// Every component of the auth service.
#[derive(Debug)]
pub struct AuthCore {
    /// Users.
    pub users: Users,
    /// Password hashing.
    pub passwords: Passwords,
    /// Refresh-token families.
    pub refresh: RefreshTokens,
    /// API keys.
    pub api_keys: ApiKeys,
    /// Signing keys.
    pub keyring: Arc<KeyRing>,
    /// Revocation list.
    pub revocations: Arc<Revocations>,
    /// Access tokens.
    pub tokens: Tokens,
    /// Failed-login throttling.
    pub throttle: Throttle,
    /// The verifier of the `umcp-authz` layer on this service's port, over the key ring and
    /// the revocation list in-process.
    pub verifier: Arc<Verifier>,
    /// How long after issuance an access token may still be accepted (TTL + leeway), in
    /// microseconds: the lifetime of SESSION and USER revocations.
    pub horizon_micros: i64,
    /// Verifier clock leeway in microseconds.
    pub leeway_micros: i64,
}

impl AuthCore {
    /// Builds every component over `store` and the key directory from `config`.
    ///
    /// # Errors
    /// Store or key-file errors, bad argon2 parameters.
    pub async fn open(store: Arc<dyn GraphStore>, config: &AuthConfig) -> Result<Self, AuthError> {
        let records = Records::new(store);
        let revocations = Revocations::load(records.clone()).await?;
        let keyring = KeyRing::open(config.keys_dir(), config.token_horizon()).await?;
        let tokens = Tokens::new(
            Arc::clone(&keyring),
            Arc::clone(&revocations),
            config.issuer.clone(),
            config.audience.clone(),
            config.access_ttl_secs,
        );
        let verifier = Arc::new(Verifier::new(
            VerifierConfig {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: Duration::from_secs(config.clock_leeway_secs),
                ..VerifierConfig::default()
            },
            Arc::clone(&keyring) as Arc<dyn umcp_authz::keys::KeySource>,
            revocations.verifier_set(),
        ));
        if config.password.weak_parameters_for_tests {
            tracing::warn!("weak password hashing parameters are configured (tests only)");
        }
        Ok(Self {
            users: Users::new(records.clone()),
            passwords: Passwords::new(config.password.clone()).await?,
            refresh: RefreshTokens::new(
                records.clone(),
                Duration::from_secs(config.refresh_ttl_secs),
            ),
            api_keys: ApiKeys::new(records),
            keyring,
            revocations,
            tokens,
            throttle: Throttle::new(config.login_throttle.clone()),
            verifier,
            horizon_micros: micros(config.token_horizon()),
            leeway_micros: micros(Duration::from_secs(config.clock_leeway_secs)),
        })
    }

    /// Removes expired revocations and refresh tokens every `interval` until `stop` fires.
    pub async fn janitor(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            // Drops keys whose retention ended from the verifier's cache.
            self.verifier.keys().refetch(true).await;
            match self.revocations.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "expired revocations purged"),
                Err(e) => tracing::warn!(error = %e, "purging revocations failed"),
            }
            match self.refresh.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "expired refresh records purged"),
                Err(e) => tracing::warn!(error = %e, "purging refresh tokens failed"),
            }
        }
    }
}

/// A duration in microseconds (saturating).
#[must_use]
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
