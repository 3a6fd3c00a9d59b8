//! `umcp-gateway`: see the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main("gateway", umcp_gateway::run)
}
