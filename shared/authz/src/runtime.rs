//! What a verifying process (the gateway, every service but auth) runs: a [`Verifier`] fed by
//! the auth service, with its background tasks, configured by the `auth` section.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;
use umcp_config::{Secret, check_range};
use umcp_redis::Redis;

use crate::claims::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use crate::keys::{FileKeySource, KeySource};
use crate::remote::{GrpcKeySource, ServiceCredentials, follow_revocations};
use crate::revocations::RevocationSet;
use crate::shared::{FallbackKeySource, SharedAuthState};
use crate::verifier::{Verifier, VerifierConfig, unix_now};

/// The `auth` configuration section (`UMCP_AUTH__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthClientConfig {
    /// Auth service URL (`UMCP_AUTH__URL`, default `http://127.0.0.1:50052`).
    pub url: String,
    /// This service's API key (`UMCP_AUTH__API_KEY`), used to follow revocations and for the
    /// service's own calls; empty: none. Redacted wherever it could be printed.
    pub api_key: Secret,
    /// A file holding the API key instead (`UMCP_AUTH__API_KEY_FILE`), e.g. a mounted secret.
    pub api_key_file: String,
    /// Read verification keys from this JWKS file instead of the auth service
    /// (`UMCP_AUTH__JWKS_FILE`; re-read every `jwks_refresh_secs`).
    pub jwks_file: String,
    /// Required token issuer (`UMCP_AUTH__ISSUER`, default `umcp-auth`).
    pub issuer: String,
    /// Required token audience (`UMCP_AUTH__AUDIENCE`, default `umcp`).
    pub audience: String,
    /// Clock-skew leeway in seconds (`UMCP_AUTH__LEEWAY_SECS`, default 30, at most 300).
    pub leeway_secs: u64,
    /// JWKS refresh period in seconds (`UMCP_AUTH__JWKS_REFRESH_SECS`, default 60, 1–3600).
    pub jwks_refresh_secs: u64,
}

impl Default for AuthClientConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50052".into(),
            api_key: Secret::default(),
            api_key_file: String::new(),
            jwks_file: String::new(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            leeway_secs: 30,
            jwks_refresh_secs: 60,
        }
    }
}

impl AuthClientConfig {
    /// Problems with this section, for the binary's `Validate` impl.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(umcp_config::check_http_url("auth.url", &self.url, None));
        if !self.api_key.expose().is_empty() && !self.api_key_file.is_empty() {
            problems.push(
                "set only one of auth.api_key (UMCP_AUTH__API_KEY) and auth.api_key_file \
                 (UMCP_AUTH__API_KEY_FILE)"
                    .into(),
            );
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            problems.push("auth.issuer and auth.audience must not be empty".into());
        }
        problems.extend(check_range("auth.leeway_secs", self.leeway_secs, ..=300));
        problems.extend(check_range(
            "auth.jwks_refresh_secs",
            self.jwks_refresh_secs,
            1..=3600,
        ));
        problems
    }

    /// The verifier settings of this section.
    #[must_use]
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: Duration::from_secs(self.leeway_secs),
            ..VerifierConfig::default()
        }
    }

    /// The API key, read from the file when one is configured.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn resolve_api_key(&self) -> Result<Option<String>, std::io::Error> {
        if !self.api_key_file.is_empty() {
            let key = std::fs::read_to_string(&self.api_key_file)?;
            return Ok(Some(key.trim().to_owned()).filter(|k| !k.is_empty()));
        }
        Ok(Some(self.api_key.expose().to_owned()).filter(|k| !k.is_empty()))
    }
}

/// Why the auth client could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthClientError {
    /// The URL could not become an endpoint.
    #[error("auth.url is invalid: {0}")]
    Url(String),
    /// The API key file could not be read.
    #[error("cannot read auth.api_key_file: {0}")]
    KeyFile(std::io::Error),
}

/// A running verifier and its background tasks (stopped when dropped).
#[derive(Debug)]
pub struct AuthClient {
    /// Verifies tokens.
    pub verifier: Arc<Verifier>,
    /// The service's own credentials, when an API key is configured.
    pub credentials: Option<Arc<ServiceCredentials>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AuthClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl AuthClient {
    /// Starts the verifier against the auth service of `config` (connecting lazily: an auth
    /// service that is down at start-up delays verification, it does not stop the process).
    /// With `redis`, the keys and revocations the auth service shares there are loaded first
    /// (each read bounded by the Redis command timeout), so this replica verifies at once, and
    /// the shared keys are the fallback whenever the auth service cannot be reached.
    ///
    /// # Errors
    /// See [`AuthClientError`].
    pub async fn start(
        config: &AuthClientConfig,
        redis: Option<Redis>,
    ) -> Result<Self, AuthClientError> {
        let channel = Endpoint::from_shared(config.url.clone())
            .map_err(|e| AuthClientError::Url(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        let primary: Box<dyn KeySource> = if config.jwks_file.is_empty() {
            Box::new(GrpcKeySource::new(channel.clone()))
        } else {
            Box::new(FileKeySource::new(&config.jwks_file))
        };
        let revocations = Arc::new(RevocationSet::new());
        let verifier = match redis.map(SharedAuthState::new) {
            Some(shared) => seeded(config, primary, shared, &revocations).await,
            None => Verifier::new(
                config.verifier_config(),
                Arc::from(primary),
                Arc::clone(&revocations),
            ),
        };
        let verifier = Arc::new(verifier);
        let mut tasks = vec![tokio::spawn(refresh_keys(
            Arc::clone(&verifier),
            Duration::from_secs(config.jwks_refresh_secs),
        ))];
        let api_key = config.resolve_api_key().map_err(AuthClientError::KeyFile)?;
        let credentials =
            api_key.map(|key| Arc::new(ServiceCredentials::new(channel.clone(), key)));
        match &credentials {
            Some(credentials) => tasks.push(tokio::spawn(follow_revocations(
                channel,
                Arc::clone(credentials),
                revocations,
            ))),
            None => tracing::warn!(
                "no service api key (UMCP_AUTH__API_KEY or UMCP_AUTH__API_KEY_FILE): revoked \
                 tokens stay valid here until they expire"
            ),
        }
        Ok(Self {
            verifier,
            credentials,
            tasks,
        })
    }
}

/// A verifier over `primary` with the shared copy as fallback, seeded from that copy.
async fn seeded(
    config: &AuthClientConfig,
    primary: Box<dyn KeySource>,
    shared: SharedAuthState,
    revocations: &Arc<RevocationSet>,
) -> Verifier {
    match shared.revocations(unix_now()).await {
        Ok(found) => {
            tracing::info!(entries = found.len(), "revocations loaded from redis");
            revocations.extend(found);
        }
        Err(error) => tracing::warn!(%error, "cannot load the revocations shared in redis"),
    }
    let source = FallbackKeySource::new(primary, shared);
    let seed = source.shared_keys().await;
    let verifier = Verifier::new(
        config.verifier_config(),
        Arc::new(source),
        Arc::clone(revocations),
    );
    match seed {
        Ok(keys) => {
            let installed = verifier.keys().install(&keys);
            tracing::info!(keys = installed, "signing keys loaded from redis");
        }
        Err(error) => tracing::info!(%error, "no signing keys from redis; fetching them"),
    }
    verifier
}

async fn refresh_keys(verifier: Arc<Verifier>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        verifier.keys().refetch(true).await;
        verifier.revocations().purge(unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let config = AuthClientConfig {
            api_key: "umcp_secret".into(),
            ..AuthClientConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("umcp_secret"), "{text}");
        assert!(config.problems().is_empty());
        let bad = AuthClientConfig {
            url: "nope".into(),
            leeway_secs: 999,
            ..AuthClientConfig::default()
        };
        assert_eq!(bad.problems().len(), 2);
    }
}
