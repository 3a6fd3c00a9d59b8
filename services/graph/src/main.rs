//! `umcp-graph`: the knowledge-graph service (default 127.0.0.1:50053, data in ./data/graph).

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main::<umcp_graph::GraphConfig, _, _, _>(
        "graph",
        |listener, config, shutdown| {
            // Query children run until their deadline; on SIGTERM they are killed so the
            // service stops inside its grace period. Process-wide, hence here and not in `run`,
            // which tests start several times in one process.
            let shutdown = async move {
                shutdown.await;
                umcp_sandbox::stop_all();
            };
            umcp_graph::run(listener, config, shutdown)
        },
    )
}
