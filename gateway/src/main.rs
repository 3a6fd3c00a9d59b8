//! `umcp-gateway`: see the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The HTTP port (MCP) is bound before serving, so a taken port stops the start-up.
    umcp_rpc::process::main("gateway", |listener, config, shutdown| async move {
        let http = umcp_gateway::bind_http(&config).await?;
        umcp_gateway::run_with_http(listener, http, config, shutdown).await
    })
}
