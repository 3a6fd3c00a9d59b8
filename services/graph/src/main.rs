//! `umcp-graph`: the knowledge-graph service (default 127.0.0.1:50053, data in ./data/graph).

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main::<umcp_graph::GraphConfig, _, _, _>("graph", umcp_graph::run)
}
