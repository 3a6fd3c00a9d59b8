//! The auth domain: [`AuthCore`] assembled from its components, its operations and its
//! background upkeep.
//!
//! The operations live in [`sessions`] (login, refresh, logout, API-key exchange), [`admin`]
//! (users, API keys, signing keys, start-up provisioning) and `feed` (the `WatchRevocations`
//! feed); every permission and ownership check is in `access`. The gRPC adapter only decodes,
//! calls these and maps the error.

mod access;
pub mod admin;
mod domain;
mod feed;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use umcp_authz::claims::AuthMethod;
use umcp_authz::permissions::Role;
use umcp_authz::{Verifier, VerifierConfig};
use umcp_store::GraphStore;

use crate::api_keys::ApiKeys;
use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keyring::{Jwks, KeyRing};
use crate::passwords::Passwords;
use crate::refresh::RefreshTokens;
use crate::revocations::Revocations;
use crate::storage::Records;
use crate::throttle::Throttle;
use crate::tokens::{AccessToken, Tokens};
use crate::users::Users;
pub use domain::Accounts;
pub use feed::RevocationBatch;

/// Every component of the auth service. The fields are private: the operations of this module
/// and its submodules are the only way in.
#[derive(Debug)]
pub struct AuthCore {
    /// Users.
    users: Users,
    /// Password hashing.
    passwords: Passwords,
    /// Refresh-token families.
    refresh: RefreshTokens,
    /// API keys.
    api_keys: ApiKeys,
    /// Signing keys.
    keyring: Arc<KeyRing>,
    /// Revocation list.
    revocations: Arc<Revocations>,
    /// Access tokens.
    tokens: Tokens,
    /// Failed-login throttling.
    throttle: Throttle,
    /// The verifier of the `umcp-authz` layer on this service's port, over the key ring and
    /// the revocation list in-process.
    verifier: Arc<Verifier>,
    /// How long after issuance an access token may still be accepted (TTL + leeway), in
    /// microseconds: the lifetime of SESSION and USER revocations.
    horizon_micros: i64,
    /// Verifier clock leeway in microseconds.
    leeway_micros: i64,
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

    /// The verifier for the `umcp-authz` layer on this service's port (it reads the key ring
    /// and the revocation list in-process).
    #[must_use]
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The revocation list (shared through Redis by [`crate::share`]).
    pub(crate) fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The access-token lifetime in seconds.
    #[must_use]
    pub fn access_ttl_secs(&self) -> i64 {
        self.tokens.ttl_secs()
    }

    /// The refresh-token lifetime.
    #[must_use]
    pub fn refresh_ttl(&self) -> Duration {
        self.refresh.ttl()
    }

    /// The published public keys (`GetJwks`).
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        self.keyring.jwks()
    }

    /// A token for this service's own calls: subject and session `id`, role `service`.
    #[must_use]
    pub(crate) fn mint_service_token(&self, id: &str) -> AccessToken {
        self.tokens
            .mint(id, id, &[Role::Service], id, AuthMethod::ApiKey)
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
