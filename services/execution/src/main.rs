//! `umcp-execution`: the sandboxed execution service (default 127.0.0.1:50054).

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main::<umcp_execution::ExecutionConfig, _, _, _>(
        "execution",
        umcp_execution::run,
    )
}
