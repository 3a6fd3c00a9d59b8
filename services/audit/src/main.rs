//! `umcp-audit`: see the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main("audit", umcp_audit::run)
}
