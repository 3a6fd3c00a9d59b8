//! `umcp mcp`: an MCP server over stdio for desktop MCP clients that launch servers as
//! processes. It serves the gateway's own MCP server ([`umcp_gateway::mcp::McpServer`]: the
//! same tools, schemas, argument checks, prompts and resource as `/mcp`) and sends every tool
//! call to the gateway's gRPC port with the user's credentials from [`Session`] (the stored
//! login, refreshed as needed, or `--token` / `--api-key`), so the gateway applies the user's
//! roles, rate limits and audit exactly as for any other call. `tools/list` asks the gateway
//! (`WhoAmI`) which permissions the user has.
//!
//! stdout carries only MCP messages; nothing else is printed there while it runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use umcp_gateway::mcp::{McpServer, TokenSource};

use crate::args::GlobalOpts;
use crate::error::CliError;
use crate::session::Session;

/// The shortest deadline of one tool call: above the longest sandbox run (as the gateway's
/// `UMCP_HTTP__TOOL_TIMEOUT_MS` default); a longer `--timeout` wins.
const MIN_TOOL_TIMEOUT: Duration = Duration::from_secs(130);

/// The user's access token, kept valid by the session.
#[derive(Debug)]
struct SessionTokens(Session);

impl TokenSource for SessionTokens {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<Arc<str>, tonic::Status>> + Send + '_>> {
        Box::pin(async move {
            match self.0.access_token().await {
                Ok(token) => Ok(Arc::from(token)),
                Err(error) => Err(match error.status() {
                    Some(status) => status.clone(),
                    // Not logged in, login expired: the message says to run `umcp login`.
                    None => tonic::Status::unauthenticated(error.to_string()),
                }),
            }
        })
    }
}

/// Serves MCP on stdin/stdout until the client closes stdin.
///
/// # Errors
/// [`CliError::NotLoggedIn`] (and the other [`Session::load`] failures) before anything is
/// served; [`CliError::Output`] when the MCP handshake or the stdio transport fails.
pub async fn serve(opts: &GlobalOpts) -> Result<u8, CliError> {
    let session = Session::load(opts)?;
    let channel = session.connection().channel();
    let timeout = opts.timeout.max(MIN_TOOL_TIMEOUT);
    let server = McpServer::for_user(channel, Arc::new(SessionTokens(session)), timeout);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| CliError::Output(std::io::Error::other(format!("mcp handshake: {e}"))))?;
    running
        .waiting()
        .await
        .map_err(|e| CliError::Output(std::io::Error::other(format!("mcp stdio: {e}"))))?;
    Ok(0)
}
