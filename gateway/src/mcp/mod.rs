//! MCP over Streamable HTTP on the gateway's HTTP port (`/mcp`, rmcp, stateless: no sessions,
//! JSON answers unless a tool streams progress, then SSE).
//!
//! ```text
//! client ─HTTP─▶ host/origin check (rmcp) ◀─ auth middleware (401 + challenge, Caller)
//!                    └▶ McpServer: schema check ─gRPC, caller's token─▶ gateway :50051 ─▶ services
//! ```
//!
//! Tools are the gRPC API for agents ([`server::TOOL_METHODS`]); `tools/list` shows a caller
//! the tools its roles may call; every call is a gRPC call through the gateway's own listener
//! (see [`link`] for why), so permissions, rate limits, audit events and correlation ids are
//! those of gRPC. `/.well-known/oauth-protected-resource` publishes RFC 9728 metadata naming
//! the auth service as the authorization server.

mod args;
mod auth;
mod config;
mod data_tools;
mod exec_tools;
mod link;
mod render;
mod server;
mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderMap, header};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use umcp_audit_client::Emitter;
use umcp_authz::Verifier;
use umcp_authz::permissions::Role;

pub use auth::Caller;
pub use config::{DEFAULT_HTTP_LISTEN, HttpConfig};
pub use link::TokenSource;
pub use server::{GRAPH_SCHEMA_URI, McpServer};

use crate::GatewayError;

/// Where the RFC 9728 metadata is served (and what the 401 challenge points to).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The MCP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// What the MCP server needs from the rest of the gateway.
#[derive(Debug, Clone)]
pub struct McpWiring {
    /// Verifies callers' access tokens (the gateway's own verifier).
    pub verifier: Arc<Verifier>,
    /// Records refused MCP requests (the gateway's audit emitter).
    pub emitter: Emitter,
    /// The gateway's gRPC listener, `http://127.0.0.1:50051`: every tool call goes there.
    pub gateway_url: String,
    /// The auth service's URL, the default authorization server of the metadata.
    pub auth_url: String,
}

/// Shared by the middleware and the handlers of one HTTP port.
#[derive(Debug)]
pub(crate) struct McpState {
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) emitter: Emitter,
    pub(crate) channel: Channel,
    pub(crate) api_keys: auth::ApiKeyCache,
    pub(crate) api_key_cache: Duration,
    config: HttpConfig,
    authorization_servers: Vec<String>,
    local_addr: String,
}

impl McpState {
    /// `scheme://authority` the client reached us at: from `resource_url` when set, else the
    /// request's `Host` when it is an allowed one, else the listen address.
    pub(crate) fn public_base(&self, headers: &HeaderMap) -> String {
        if let Ok(uri) = self.config.resource_url.parse::<http::Uri>()
            && let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority())
        {
            return format!("{scheme}://{authority}");
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| host_allowed(&self.config.allowed_hosts, h));
        format!("http://{}", host.unwrap_or(&self.local_addr))
    }

    fn resource(&self, headers: &HeaderMap) -> String {
        if self.config.resource_url.is_empty() {
            format!("{}{MCP_PATH}", self.public_base(headers))
        } else {
            self.config.resource_url.clone()
        }
    }
}

/// Whether `host` (a `Host` header value) matches `allowed` (a name matches any port).
fn host_allowed(allowed: &[String], host: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

/// Serves MCP and its metadata on `listener` until `shutdown` completes.
///
/// # Errors
/// [`GatewayError::Http`] when the gateway URL is invalid or serving fails.
pub async fn serve(
    listener: TcpListener,
    config: HttpConfig,
    wiring: McpWiring,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let local_addr = listener
        .local_addr()
        .map_err(GatewayError::Http)?
        .to_string();
    let app = router(config, wiring, local_addr)?;
    tracing::info!(addr = ?listener.local_addr().ok(), path = MCP_PATH, "serving mcp");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(GatewayError::Http)
}

/// The HTTP routes: `/mcp` behind the auth middleware; the metadata and the operations routes
/// (`/metrics`, `/healthz`, `/readyz`) open.
fn router(
    config: HttpConfig,
    wiring: McpWiring,
    local_addr: String,
) -> Result<Router, GatewayError> {
    let channel = Endpoint::from_shared(wiring.gateway_url.clone())
        .map_err(|e| {
            GatewayError::Http(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("gateway url `{}`: {e}", wiring.gateway_url),
            ))
        })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    let authorization_servers = if config.authorization_servers.is_empty() {
        vec![wiring.auth_url.clone()]
    } else {
        config.authorization_servers.clone()
    };
    let link = link::Link {
        channel: channel.clone(),
        timeout: Duration::from_millis(config.tool_timeout_ms),
        callers: link::Callers::Http,
    };
    let mut mcp = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_allowed_origins(config.allowed_origins.clone())
        // With no origin listed, a browser page on any site is refused (requests without an
        // Origin, i.e. every non-browser client, pass).
        .enforce_origin_validation();
    mcp = if config.allowed_hosts.is_empty() {
        mcp.disable_allowed_hosts()
    } else {
        mcp.with_allowed_hosts(config.allowed_hosts.clone())
    };
    let service = StreamableHttpService::new(
        move || Ok(McpServer::new(link.clone())),
        Arc::new(NeverSessionManager::default()),
        mcp,
    );
    let state = Arc::new(McpState {
        verifier: wiring.verifier,
        emitter: wiring.emitter,
        channel,
        api_keys: auth::ApiKeyCache::default(),
        api_key_cache: Duration::from_secs(config.api_key_cache_secs),
        config,
        authorization_servers,
        local_addr,
    });
    Ok(Router::new()
        .route_service(MCP_PATH, service)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_caller,
        ))
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}{MCP_PATH}"), get(metadata))
        .with_state(state)
        // `/metrics`, `/healthz`, `/readyz`: the same operations routes as every process.
        .merge(umcp_rpc::ops::router(wiring.gateway_url.clone())))
}

/// RFC 9728 protected-resource metadata.
async fn metadata(State(state): State<Arc<McpState>>, headers: HeaderMap) -> impl IntoResponse {
    let mut scopes: Vec<&str> = Role::Admin
        .permissions()
        .iter()
        .map(|p| p.scope())
        .collect();
    scopes.sort_unstable();
    axum::Json(serde_json::json!({
        "resource": state.resource(&headers),
        "authorization_servers": state.authorization_servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_name": "Ultimate MCP Mesh",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_or_exact_authority() {
        let allowed = [
            "localhost".to_owned(),
            "mcp.example.com:443".to_owned(),
            "::1".to_owned(),
        ];
        assert!(host_allowed(&allowed, "localhost"));
        assert!(host_allowed(&allowed, "localhost:8080"));
        assert!(host_allowed(&allowed, "mcp.example.com:443"));
        assert!(!host_allowed(&allowed, "mcp.example.com:8443"));
        assert!(host_allowed(&allowed, "[::1]:8080"));
        assert!(!host_allowed(&allowed, "evil.example"));
        assert!(host_allowed(&[], "anything"));
    }
}
