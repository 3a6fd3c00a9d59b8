//! Who is calling `/mcp`: the axum middleware that accepts the same credentials as the gRPC
//! port (a Bearer access token, or an API key, exchanged for one through the gateway's own
//! `AuthService/ExchangeApiKey`), refuses anonymous or invalid callers with HTTP 401 and an
//! RFC 6750 / RFC 9728 challenge (recorded as the gRPC auth layer records them), and puts the
//! verified [`Caller`] into the request extensions, where tools find it through the request
//! `Parts` rmcp hands them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use umcp_authz::{AuthError, AuthObserver, Decision, Outcome, Principal};
use umcp_proto::auth::v1::ExchangeApiKeyRequest;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_rpc::correlation::{self, CorrelationId};

use super::McpState;

/// Type prefix of API keys (`umcp_…`, see the auth service): such a bearer value is exchanged.
const API_KEY_PREFIX: &str = "umcp_";
/// Header an API key may come in instead of `Authorization`.
const API_KEY_HEADER: &str = "x-api-key";
/// Cached exchanged tokens at most (a full cache drops expired entries, then everything).
const API_KEY_CACHE_CAPACITY: usize = 1024;
/// An exchanged token is not reused in its last seconds (the call it is for must still verify).
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// The path recorded as the resource of an MCP authentication decision.
const MCP_RESOURCE: &str = "/mcp";

/// The verified caller of one MCP request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, from the verified access token (its `token` is forwarded on every tool call).
    pub principal: Arc<Principal>,
    /// The request's correlation id (the client's `x-correlation-id` when valid, else new):
    /// every gRPC call the request makes carries it.
    pub correlation: CorrelationId,
}

/// An exchanged access token and until when it is reused.
type Exchanged = (Arc<str>, Instant);

/// Access tokens exchanged for API keys, keyed by the SHA-256 of the key (never the key).
#[derive(Debug, Default)]
pub(crate) struct ApiKeyCache {
    entries: Mutex<HashMap<[u8; 32], Exchanged>>,
}

impl ApiKeyCache {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<str>> {
        let entries = self.entries.lock();
        let (token, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| Arc::clone(token))
    }

    fn put(&self, key: [u8; 32], token: Arc<str>, until: Instant) {
        let mut entries = self.entries.lock();
        if entries.len() >= API_KEY_CACHE_CAPACITY {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= API_KEY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (token, until));
    }
}

/// Why a request has no caller.
enum Refusal {
    /// No or bad credentials: 401 with a challenge.
    Unauthenticated(AuthError),
    /// Keys or the auth service cannot be reached now: 503.
    Unavailable(String),
}

/// The axum middleware in front of `/mcp`.
pub(crate) async fn require_caller(
    State(state): State<Arc<McpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let correlation = CorrelationId::from_headers(request.headers());
    match authenticate(&state, request.headers(), &correlation).await {
        Ok(principal) => {
            request.extensions_mut().insert(Caller {
                principal,
                correlation: correlation.clone(),
            });
            let mut response = next.run(request).await;
            set_correlation(response.headers_mut(), &correlation);
            response
        }
        Err(Refusal::Unauthenticated(error)) => {
            record(&state, request.headers(), &correlation, &error);
            challenge(&state, request.headers(), &error, &correlation)
        }
        Err(Refusal::Unavailable(message)) => {
            tracing::warn!(correlation_id = correlation.as_str(), %message, "mcp caller not verified");
            let body = serde_json::json!({ "error": "temporarily_unavailable", "error_description": message });
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            set_correlation(response.headers_mut(), &correlation);
            response
        }
    }
}

async fn authenticate(
    state: &McpState,
    headers: &HeaderMap,
    correlation: &CorrelationId,
) -> Result<Arc<Principal>, Refusal> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| Refusal::Unauthenticated(AuthError::BadHeader))?;
            let (scheme, token) = value
                .split_once(' ')
                .ok_or(Refusal::Unauthenticated(AuthError::BadHeader))?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(Refusal::Unauthenticated(AuthError::BadHeader));
            }
            Some(token.trim().to_owned())
        }
        None => None,
    };
    let api_key = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token: Arc<str> = match (bearer, api_key) {
        (Some(token), _) if !token.starts_with(API_KEY_PREFIX) => Arc::from(token),
        (Some(key), _) | (None, Some(key)) => exchange(state, &key, correlation).await?,
        (None, None) => return Err(Refusal::Unauthenticated(AuthError::Missing)),
    };
    state.verifier.verify(&token).await.map_err(|e| match e {
        AuthError::KeysUnavailable => Refusal::Unavailable(e.to_string()),
        other => Refusal::Unauthenticated(other),
    })
}

/// An access token for `key`, from the cache or `ExchangeApiKey` through the gateway (so the
/// exchange is rate limited and audited like a gRPC client's).
async fn exchange(
    state: &McpState,
    key: &str,
    correlation: &CorrelationId,
) -> Result<Arc<str>, Refusal> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if let Some(token) = state.api_keys.get(&digest) {
        return Ok(token);
    }
    let mut request = tonic::Request::new(ExchangeApiKeyRequest {
        api_key: key.to_owned(),
    });
    if let Ok(value) = correlation.as_str().parse() {
        request.metadata_mut().insert(correlation::HEADER, value);
    }
    request.set_timeout(Duration::from_secs(10));
    let response = AuthServiceClient::new(state.channel.clone())
        .exchange_api_key(request)
        .await;
    let tokens = match response {
        Ok(response) => response.into_inner().tokens.unwrap_or_default(),
        // The key itself is wrong (unknown, revoked, expired, malformed): the caller's fault.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::NotFound
            ) =>
        {
            return Err(Refusal::Unauthenticated(AuthError::Token(
                umcp_authz::jws::JwsError::Malformed(
                    "the API key was refused (unknown, revoked or expired)",
                ),
            )));
        }
        Err(status) => {
            return Err(Refusal::Unavailable(format!(
                "the API key cannot be exchanged now ({:?}); retry later",
                status.code()
            )));
        }
    };
    let token: Arc<str> = Arc::from(tokens.access_token);
    let lifetime = Duration::from_secs(u64::from(tokens.expires_in_seconds))
        .saturating_sub(EXPIRY_MARGIN)
        .min(state.api_key_cache);
    if !lifetime.is_zero() {
        state
            .api_keys
            .put(digest, Arc::clone(&token), Instant::now() + lifetime);
    }
    Ok(token)
}

/// Records the refusal as the gRPC auth layer records an unauthenticated call.
fn record(state: &McpState, headers: &HeaderMap, correlation: &CorrelationId, error: &AuthError) {
    let mut headers = headers.clone();
    if let Ok(value) = correlation.as_str().parse() {
        headers.insert(correlation::HEADER, value);
    }
    state.emitter.decided(&Decision {
        path: MCP_RESOURCE,
        headers: &headers,
        outcome: Outcome::Unauthenticated(error),
    });
}

/// HTTP 401 with `WWW-Authenticate: Bearer realm, resource_metadata[, error]` (MCP
/// authorization: the client finds the authorization server through the metadata).
fn challenge(
    state: &McpState,
    headers: &HeaderMap,
    error: &AuthError,
    correlation: &CorrelationId,
) -> Response {
    let metadata = format!("{}{}", state.public_base(headers), super::METADATA_PATH);
    let mut value = format!("Bearer realm=\"umcp\", resource_metadata=\"{metadata}\"");
    let description = error.to_string().replace('"', "'");
    if !matches!(error, AuthError::Missing) {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{description}\""
        ));
    }
    let body = serde_json::json!({
        "error": if matches!(error, AuthError::Missing) { "unauthorized" } else { "invalid_token" },
        "error_description": description,
    });
    let mut response = Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    set_correlation(response.headers_mut(), correlation);
    response
}

fn set_correlation(headers: &mut HeaderMap, correlation: &CorrelationId) {
    if let Ok(value) = correlation.as_str().parse() {
        headers.insert(correlation::HEADER, value);
    }
}
