//! `umcp-execution`: the sandboxed execution service (default 127.0.0.1:50054), and with
//! `--render-template` the GenerateCode renderer that runs inside the sandbox.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(umcp_execution::render::FLAG) {
        return umcp_execution::render::main();
    }
    umcp_rpc::process::main::<umcp_execution::ExecutionConfig, _, _, _>(
        "execution",
        umcp_execution::run,
    )
}
