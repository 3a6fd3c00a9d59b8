//! How a tool call reaches a service: as a gRPC call to the gateway's own gRPC listener,
//! carrying the caller's own bearer token and correlation id.
//!
//! Why a loopback gRPC client and not the composed tower stack in process: the stack (correlation
//! → auth → rate limits → routing, plus the audit observer) is assembled inside
//! `umcp_rpc::Server::serve_proxy` and serves a listener; calling through that listener is the
//! only way that cannot drift from it. Every MCP call is therefore exactly a gRPC call: the same
//! permission check and `authz_*` events, the same rate-limit class and budget (per principal),
//! the same backend audit events, the same correlation id in every log line. The cost is one
//! loopback HTTP/2 hop (no TLS, a pooled connection); the one visible difference is the peer
//! address in the gateway's own records (this process, not the MCP client), so
//! [`super::auth`] records the MCP-level refusals with the client's headers itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use umcp_rpc::correlation::{self, CorrelationId};

use super::auth::Caller;

/// A bearer token source for a process that serves one user (the `umcp mcp` stdio bridge: the
/// user's stored login, refreshed as needed).
pub trait TokenSource: Send + Sync + std::fmt::Debug + 'static {
    /// A current access token.
    ///
    /// # Errors
    /// A status saying why there is none (e.g. `UNAUTHENTICATED`: log in again).
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<Arc<str>, tonic::Status>> + Send + '_>>;
}

/// Where the caller of a request comes from.
#[derive(Debug, Clone)]
pub(crate) enum Callers {
    /// The HTTP request's extensions ([`Caller`], put there by the auth middleware).
    Http,
    /// One fixed user (stdio).
    Fixed(Arc<dyn TokenSource>),
}

/// The gRPC side of the MCP server.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) channel: Channel,
    pub(crate) timeout: Duration,
    pub(crate) callers: Callers,
}

/// The caller of one tool call, as the gRPC request needs it.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    pub(crate) token: Arc<str>,
    pub(crate) correlation: CorrelationId,
    /// Known when the caller came through HTTP (verified here); fixed callers are checked by
    /// the gateway alone.
    pub(crate) caller: Option<Caller>,
}

impl Link {
    /// The caller of the request behind `ctx`.
    ///
    /// # Errors
    /// An MCP error when there is none (cannot happen behind the auth middleware) or the fixed
    /// token source has no token.
    pub(crate) async fn who(&self, ctx: &RequestContext<RoleServer>) -> Result<Who, ErrorData> {
        match &self.callers {
            Callers::Http => {
                let caller = ctx
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Caller>())
                    .cloned()
                    .ok_or_else(|| {
                        ErrorData::invalid_request("the request carries no verified caller", None)
                    })?;
                Ok(Who {
                    token: Arc::clone(&caller.principal.token),
                    correlation: caller.correlation.clone(),
                    caller: Some(caller),
                })
            }
            Callers::Fixed(source) => {
                let token = source.token().await.map_err(|status| {
                    ErrorData::invalid_request(
                        format!("no credentials: {}", status.message()),
                        None,
                    )
                })?;
                Ok(Who {
                    token,
                    correlation: CorrelationId::generate(),
                    caller: None,
                })
            }
        }
    }

    /// A gRPC request for `who`: bearer token, correlation id, the tool-call deadline.
    pub(crate) fn request<T>(&self, who: &Who, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        if let Ok(mut value) = MetadataValue::try_from(format!("Bearer {}", who.token)) {
            value.set_sensitive(true);
            metadata.insert("authorization", value);
        }
        if let Ok(value) = MetadataValue::try_from(who.correlation.as_str()) {
            metadata.insert(correlation::HEADER, value);
        }
        request
    }
}

/// A failed gRPC call as an MCP tool error: the status code and the gateway's message (already
/// written for callers), except for failures of this process's own transport, whose details
/// (addresses, socket errors) are logged and replaced by a plain sentence.
pub(crate) fn failure(status: &tonic::Status, who: &Who) -> CallToolResult {
    let code = code_name(status.code());
    let message = if std::error::Error::source(status).is_some() {
        tracing::warn!(
            correlation_id = who.correlation.as_str(),
            error = %status,
            "mcp tool call did not reach the gateway"
        );
        "the gateway's gRPC listener cannot be reached; retry later".to_owned()
    } else {
        status.message().to_owned()
    };
    let text = format!("{code}: {message}");
    let mut result = CallToolResult::structured_error(json!({
        "error": { "code": code, "message": message },
        "correlation_id": who.correlation.as_str(),
    }));
    result.content = vec![rmcp::model::ContentBlock::text(text)];
    result
}

/// `PermissionDenied` → `PERMISSION_DENIED`, the name gRPC documents.
pub(crate) use umcp_proto::catalogue::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_grpc_names() {
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }
}
