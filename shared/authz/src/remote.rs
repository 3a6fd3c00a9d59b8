//! Talking to the auth service from everywhere else: the JWKS over `GetJwks`, the service
//! account's own token over `ExchangeApiKey` (refreshed before expiry), and the revocation
//! stream over `WatchRevocations` (reconnecting with backoff, so a revoked token stops working
//! everywhere within about a second of the revocation).

use std::sync::Arc;
use std::time::Duration;

use prost_types::Timestamp;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::auth::v1::{
    ExchangeApiKeyRequest, GetJwksRequest, Jwk, RevocationKind, WatchRevocationsRequest,
};

use crate::keys::{KeySource, KeySourceError};
use crate::revocations::{Kind, Revocation, RevocationSet};
use crate::verifier::unix_now;

/// The JWKS of the auth service at the other end of `channel`.
#[derive(Debug, Clone)]
pub struct GrpcKeySource {
    channel: Channel,
}

impl GrpcKeySource {
    /// A key source over `channel`.
    #[must_use]
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

#[async_trait::async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        let mut request = tonic::Request::new(GetJwksRequest {});
        request.set_timeout(Duration::from_secs(2));
        AuthServiceClient::new(self.channel.clone())
            .get_jwks(request)
            .await
            .map(|r| r.into_inner().keys)
            .map_err(|s| KeySourceError(format!("{:?}: {}", s.code(), s.message())))
    }
}

/// Supplies the bearer token of a service's own calls (audit records, persisted results).
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// A currently valid access token (without the `Bearer ` prefix).
    ///
    /// # Errors
    /// When no token can be had (the auth service is down, the key was revoked).
    async fn token(&self) -> Result<Arc<str>, tonic::Status>;
}

/// Adds `authorization: Bearer <token>` from `provider` to `request`.
///
/// # Errors
/// When the provider has no token, or it cannot be a header value.
pub async fn authorize<T>(
    provider: &dyn TokenProvider,
    request: &mut tonic::Request<T>,
) -> Result<(), tonic::Status> {
    let token = provider.token().await?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::internal("the service token is not a valid header value"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(())
}

/// A fixed token (tests, or a token minted by a deployment tool).
#[derive(Clone)]
pub struct StaticToken(Arc<str>);

impl StaticToken {
    /// Wraps `token` (without the `Bearer ` prefix).
    #[must_use]
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait::async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<Arc<str>, tonic::Status> {
        Ok(Arc::clone(&self.0))
    }
}

#[async_trait::async_trait]
impl TokenProvider for ServiceCredentials {
    async fn token(&self) -> Result<Arc<str>, tonic::Status> {
        ServiceCredentials::token(self).await
    }
}

/// A service's own identity: an API key exchanged for short-lived access tokens, renewed when
/// less than a fifth of their lifetime is left.
pub struct ServiceCredentials {
    channel: Channel,
    api_key: String,
    /// `(token, renew after (unix seconds))`.
    current: Mutex<Option<(Arc<str>, i64)>>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key or the token.
        f.debug_struct("ServiceCredentials").finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    /// Credentials exchanging `api_key` at the auth service behind `channel`.
    #[must_use]
    pub fn new(channel: Channel, api_key: String) -> Self {
        Self {
            channel,
            api_key,
            current: Mutex::new(None),
        }
    }

    /// A valid access token, exchanging the key when needed.
    ///
    /// # Errors
    /// The auth service's status when the exchange fails.
    pub async fn token(&self) -> Result<Arc<str>, tonic::Status> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_after)) = current.as_ref()
            && unix_now() < *renew_after
        {
            return Ok(Arc::clone(token));
        }
        let mut request = tonic::Request::new(ExchangeApiKeyRequest {
            api_key: self.api_key.clone(),
        });
        request.set_timeout(Duration::from_secs(5));
        let tokens = AuthServiceClient::new(self.channel.clone())
            .exchange_api_key(request)
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| tonic::Status::internal("auth service returned no token"))?;
        let lifetime = i64::from(tokens.expires_in_seconds);
        let token: Arc<str> = Arc::from(tokens.access_token);
        *current = Some((Arc::clone(&token), unix_now() + lifetime * 4 / 5));
        Ok(token)
    }

    /// Adds `authorization: Bearer <token>` to `request`.
    ///
    /// # Errors
    /// See [`Self::token`].
    pub async fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), tonic::Status> {
        authorize(self, request).await
    }
}

fn seconds(t: Option<&Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds)
}

fn convert(r: &umcp_proto::auth::v1::Revocation) -> Option<Revocation> {
    let kind = match RevocationKind::try_from(r.kind).ok()? {
        RevocationKind::Token => Kind::Token,
        RevocationKind::Session => Kind::Session,
        RevocationKind::User => Kind::User,
        RevocationKind::Unspecified => return None,
    };
    Some(Revocation {
        kind,
        id: r.id.clone(),
        revoked_at: seconds(r.revoked_at.as_ref()),
        expires_at: seconds(r.expires_at.as_ref()),
    })
}

/// Follows the revocation stream into `set` forever (abort the task to stop). Reconnects with
/// exponential backoff (100 ms doubling to 5 s) after any failure.
pub async fn follow_revocations(
    channel: Channel,
    credentials: Arc<ServiceCredentials>,
    set: Arc<RevocationSet>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(&channel, &credentials, &set).await {
            Ok(()) => tracing::info!("revocation stream ended; reconnecting"),
            Err(status) => tracing::warn!(
                code = ?status.code(),
                message = status.message(),
                "revocation stream failed; retrying"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(
    channel: &Channel,
    credentials: &ServiceCredentials,
    set: &RevocationSet,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(WatchRevocationsRequest {});
    credentials.authorize(&mut request).await?;
    let mut stream = AuthServiceClient::new(channel.clone())
        .watch_revocations(request)
        .await?
        .into_inner();
    while let Some(message) = stream.next().await {
        let message = message?;
        let batch = message.revocations.iter().filter_map(convert);
        if message.snapshot {
            set.replace(batch);
            tracing::info!(entries = set.len(), "revocation snapshot received");
        } else {
            set.extend(batch);
        }
        set.purge(unix_now());
    }
    Ok(())
}
