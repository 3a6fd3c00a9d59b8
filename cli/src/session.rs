//! A connection to the gateway and the credentials to call it with.
//!
//! [`Session::load`] is what every authenticated command (and `umcp mcp`) starts with: it picks
//! the endpoint and the credentials, in this order:
//!
//! 1. `--api-key` / `UMCP_API_KEY` (or a `UMCP_TOKEN` starting with `umcp_`): exchanged for an
//!    access token through `AuthService/ExchangeApiKey`, again whenever that token runs out;
//! 2. `--token` / `UMCP_TOKEN`: an access token used as is;
//! 3. the stored login for the endpoint (`umcp login`): refreshed through `AuthService/Refresh`
//!    shortly before the access token expires, under the store's lock.
//!
//! The endpoint is `--endpoint` / `UMCP_ENDPOINT`, else the endpoint of the last login, else
//! [`DEFAULT_ENDPOINT`](crate::args::DEFAULT_ENDPOINT).

use std::time::Duration;

use tokio::sync::Mutex;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::auth::v1 as auth;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;

use crate::args::{DEFAULT_ENDPOINT, GlobalOpts};
use crate::error::CliError;
use crate::store::{Login, Store, now_secs};

/// Largest answer accepted: an execute result carries up to 8 MiB per output stream.
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// How long connecting to the gateway may take before a call fails with UNAVAILABLE.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `--timeout` / `UMCP_TIMEOUT` accepted, in seconds (one day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// API keys carry this type prefix; JWTs never start with it.
const API_KEY_PREFIX: &str = "umcp_";

/// The gateway at one endpoint, not yet authenticated (enough for `umcp login`).
#[derive(Debug, Clone)]
pub struct Connection {
    endpoint: String,
    channel: Channel,
    timeout: Duration,
    store: Store,
}

impl Connection {
    /// Resolves the endpoint and opens a lazily connecting channel to it.
    ///
    /// # Errors
    /// A malformed endpoint, or an unreadable credential store.
    pub fn open(opts: &GlobalOpts) -> Result<Self, CliError> {
        // Zero would fail every call at once; more than a day is a typo, not a deadline.
        let secs = opts.timeout.as_secs_f64();
        if let Some(problem) = umcp_config::check_range("timeout", secs, 0.001..=MAX_TIMEOUT_SECS) {
            return Err(CliError::Usage(format!(
                "{problem} (seconds; e.g. --timeout 30s)"
            )));
        }
        let store = Store::locate(opts.config_dir.as_deref())?;
        let endpoint = match &opts.endpoint {
            Some(endpoint) => normalize_endpoint(endpoint)?,
            None => store
                .read()?
                .default_endpoint
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
        };
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| CliError::Usage(format!("endpoint `{endpoint}` is not a URL: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            endpoint,
            channel,
            timeout: opts.timeout,
            store,
        })
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:50051`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The channel (clone it freely).
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The credential store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The per-call deadline (`--timeout`).
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An unauthenticated request with the call deadline.
    pub fn anonymous<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// The auth service client.
    #[must_use]
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The graph service client.
    #[must_use]
    pub fn graph(&self) -> GraphServiceClient<Channel> {
        GraphServiceClient::new(self.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The execution service client.
    #[must_use]
    pub fn execution(&self) -> ExecutionServiceClient<Channel> {
        ExecutionServiceClient::new(self.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The audit service client.
    #[must_use]
    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Stores `login` for this endpoint and makes it the default endpoint.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn save_login(&self, login: Login) -> Result<(), CliError> {
        let _lock = self.store.lock()?;
        let mut credentials = self.store.read()?;
        credentials.logins.insert(self.endpoint.clone(), login);
        credentials.default_endpoint = Some(self.endpoint.clone());
        self.store.write(&credentials)
    }

    /// Forgets the login for this endpoint; returns it when there was one.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn forget_login(&self) -> Result<Option<Login>, CliError> {
        let _lock = self.store.lock()?;
        let mut credentials = self.store.read()?;
        let removed = credentials.logins.remove(&self.endpoint);
        if removed.is_some() {
            if credentials.default_endpoint.as_deref() == Some(self.endpoint.as_str()) {
                credentials.default_endpoint = credentials.logins.keys().next().cloned();
            }
            self.store.write(&credentials)?;
        }
        Ok(removed)
    }
}

/// How a session authenticates.
enum Credential {
    /// An access token given by the user; never refreshed.
    Token(String),
    /// An API key and the access token last exchanged for it (token, unix expiry, ttl).
    ApiKey {
        key: String,
        current: Mutex<Option<(String, u64, u64)>>,
    },
    /// The stored login for the endpoint.
    Stored(Mutex<Login>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token(_) => "Token",
            Self::ApiKey { .. } => "ApiKey",
            Self::Stored(_) => "Stored",
        })
    }
}

/// An authenticated connection: the endpoint plus a valid access token on demand.
#[derive(Debug)]
pub struct Session {
    connection: Connection,
    credential: Credential,
}

impl Session {
    /// The endpoint and credentials the options and the store give (see the module docs).
    ///
    /// # Errors
    /// [`CliError::NotLoggedIn`] when there are no credentials for the endpoint; a malformed
    /// endpoint; an unreadable store.
    pub fn load(opts: &GlobalOpts) -> Result<Self, CliError> {
        let connection = Connection::open(opts)?;
        let api_key = opts
            .api_key
            .clone()
            .or_else(|| opts.token.clone().filter(|t| t.starts_with(API_KEY_PREFIX)));
        let credential = if let Some(key) = api_key {
            Credential::ApiKey {
                key,
                current: Mutex::new(None),
            }
        } else if let Some(token) = opts.token.clone() {
            Credential::Token(token)
        } else {
            let login = connection
                .store
                .read()?
                .logins
                .remove(&connection.endpoint)
                .ok_or_else(|| CliError::NotLoggedIn {
                    endpoint: connection.endpoint.clone(),
                })?;
            Credential::Stored(Mutex::new(login))
        };
        Ok(Self {
            connection,
            credential,
        })
    }

    /// The unauthenticated part: endpoint, channel, clients.
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The endpoint URL.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.connection.endpoint
    }

    /// True when the credentials are the stored login (which `umcp logout` can revoke).
    #[must_use]
    pub fn is_stored_login(&self) -> bool {
        matches!(self.credential, Credential::Stored(_))
    }

    /// The stored login's refresh token (empty for other credentials).
    pub async fn refresh_token(&self) -> String {
        match &self.credential {
            Credential::Stored(login) => login.lock().await.refresh_token.clone(),
            _ => String::new(),
        }
    }

    /// A currently valid access token: refreshed or re-exchanged when the current one is about
    /// to expire.
    ///
    /// # Errors
    /// [`CliError::LoginExpired`] when the stored login can no longer be refreshed; the
    /// Refresh/ExchangeApiKey call's failure otherwise.
    pub async fn access_token(&self) -> Result<String, CliError> {
        match &self.credential {
            Credential::Token(token) => Ok(token.clone()),
            Credential::ApiKey { key, current } => {
                let mut current = current.lock().await;
                if let Some((token, expires_at, ttl)) = current.as_ref() {
                    let margin = (ttl / 4).min(30);
                    if now_secs() + margin < *expires_at {
                        return Ok(token.clone());
                    }
                }
                let tokens = self.exchange(key).await?;
                let ttl = u64::from(tokens.expires_in_seconds);
                *current = Some((tokens.access_token.clone(), now_secs() + ttl, ttl));
                Ok(tokens.access_token)
            }
            Credential::Stored(login) => {
                let mut login = login.lock().await;
                if !login.access_is_fresh() {
                    *login = self.refresh().await?;
                }
                Ok(login.access_token.clone())
            }
        }
    }

    /// `message` with the caller's bearer token and the call deadline.
    ///
    /// # Errors
    /// See [`access_token`](Self::access_token).
    pub async fn request<T>(&self, message: T) -> Result<Request<T>, CliError> {
        self.request_within(message, self.connection.timeout).await
    }

    /// `message` with the caller's bearer token and deadline `timeout`.
    ///
    /// # Errors
    /// See [`access_token`](Self::access_token).
    pub async fn request_within<T>(
        &self,
        message: T,
        timeout: Duration,
    ) -> Result<Request<T>, CliError> {
        let token = self.access_token().await?;
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::BadInput("the access token is not valid header text".into()))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    async fn exchange(&self, key: &str) -> Result<auth::Tokens, CliError> {
        let answer = self
            .connection
            .auth()
            .exchange_api_key(self.connection.anonymous(auth::ExchangeApiKeyRequest {
                api_key: key.to_owned(),
            }))
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated => CliError::LoginExpired {
                    endpoint: self.endpoint().to_owned(),
                    detail: format!("the API key was refused: {}", status.message()),
                },
                _ => CliError::rpc("AuthService/ExchangeApiKey", self.endpoint())(status),
            })?;
        answer
            .into_inner()
            .tokens
            .ok_or_else(|| missing("AuthService/ExchangeApiKey", "tokens"))
    }

    /// Rotates the stored login's tokens, under the store lock so that concurrent `umcp`
    /// processes refresh once: whoever waited on the lock finds the new tokens on disk.
    async fn refresh(&self) -> Result<Login, CliError> {
        let store = self.connection.store.clone();
        let lock = tokio::task::spawn_blocking(move || store.lock())
            .await
            .map_err(|e| CliError::Store {
                path: self.connection.store.path(),
                detail: format!("lock task failed: {e}"),
            })??;
        let mut credentials = self.connection.store.read()?;
        let endpoint = self.endpoint().to_owned();
        let on_disk = credentials.logins.get(&endpoint).cloned();
        let current = match on_disk {
            Some(disk) if disk.access_is_fresh() => return Ok(disk),
            Some(disk) => disk,
            // Logged out meanwhile (another `umcp logout`): the held tokens are dead too.
            None => {
                return Err(CliError::NotLoggedIn { endpoint });
            }
        };
        if !current.can_refresh() {
            return Err(CliError::LoginExpired {
                endpoint,
                detail: "the refresh token has run out".into(),
            });
        }
        let answer = self
            .connection
            .auth()
            .refresh(self.connection.anonymous(auth::RefreshRequest {
                refresh_token: current.refresh_token.clone(),
            }))
            .await;
        let tokens = match answer {
            Ok(answer) => answer
                .into_inner()
                .tokens
                .ok_or_else(|| missing("AuthService/Refresh", "tokens"))?,
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                // Revoked (logout elsewhere, reuse, disabled user): the stored login is useless.
                credentials.logins.remove(&endpoint);
                self.connection.store.write(&credentials)?;
                return Err(CliError::LoginExpired {
                    endpoint,
                    detail: status.message().to_owned(),
                });
            }
            Err(status) => return Err(CliError::rpc("AuthService/Refresh", &endpoint)(status)),
        };
        let login = Login::from_tokens(&current.username, &tokens);
        credentials.logins.insert(endpoint, login.clone());
        self.connection.store.write(&credentials)?;
        drop(lock);
        Ok(login)
    }
}

/// `host:port` → `http://host:port`; `https://` is refused (this build has no TLS).
///
/// # Errors
/// An `https://` or otherwise unsupported scheme.
pub fn normalize_endpoint(text: &str) -> Result<String, CliError> {
    let text = text.trim().trim_end_matches('/');
    if let Some(rest) = text.strip_prefix("http://") {
        return Ok(format!("http://{rest}"));
    }
    if text.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "endpoint `{text}`: this build of umcp speaks plaintext gRPC only; reach the gateway through \
             a plaintext address (e.g. `kubectl port-forward`) and pass http://…"
        )));
    }
    if text.contains("://") {
        return Err(CliError::Usage(format!(
            "endpoint `{text}`: use host:port or http://host:port"
        )));
    }
    Ok(format!("http://{text}"))
}

/// A required field the server left empty.
pub(crate) fn missing(call: &'static str, field: &str) -> CliError {
    CliError::Rpc {
        call,
        endpoint: String::new(),
        status: Box::new(tonic::Status::internal(format!(
            "the answer has no `{field}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `umcp mcp` serves many requests at once from one session, on a multi-threaded runtime.
    #[test]
    fn sessions_and_their_token_futures_can_cross_threads() {
        fn is_send<T: Send>(_: &T) {}
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Session>();
        let dir = tempfile::tempdir().unwrap();
        let opts = GlobalOpts {
            endpoint: Some("127.0.0.1:1".into()),
            api_key: None,
            token: Some("a.b.c".into()),
            json: false,
            config_dir: Some(dir.path().to_path_buf()),
            timeout: Duration::from_secs(1),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let session = runtime.block_on(async { Session::load(&opts) }).unwrap();
        is_send(&session.access_token());
        is_send(&session.request(()));
        assert_eq!(runtime.block_on(session.access_token()).unwrap(), "a.b.c");
        let zero = GlobalOpts {
            timeout: Duration::ZERO,
            ..opts
        };
        let error = Connection::open(&zero).unwrap_err().to_string();
        assert!(
            error.starts_with("timeout (UMCP_TIMEOUT) must be"),
            "{error}"
        );
    }

    #[test]
    fn endpoints_get_a_scheme_and_https_is_refused_with_a_reason() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(normalize_endpoint("http://gw:1/").unwrap(), "http://gw:1");
        let error = normalize_endpoint("https://gw").unwrap_err().to_string();
        assert!(error.contains("plaintext"), "{error}");
    }
}
