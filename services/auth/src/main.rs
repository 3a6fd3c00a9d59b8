//! `umcp-auth`: see the library docs.

use std::process::ExitCode;

fn main() -> ExitCode {
    umcp_rpc::process::main("auth", umcp_auth::run)
}
