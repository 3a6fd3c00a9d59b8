//! `umcp`, the command-line client of the Ultimate MCP Mesh: log in once, then lint, run and test
//! code, render templates, read and write the knowledge graph, read the audit log and manage keys
//! and users — all through the gateway's gRPC API, with the caller's roles and rate limits.
//!
//! The binary is a thin `main.rs`; everything is here so it can be tested and reused:
//! [`session::Session`] is the way into the mesh for any command (and for `umcp mcp`): it finds
//! the endpoint and credentials and keeps the access token valid.

#![warn(missing_docs)]

pub mod args;
pub mod commands;
pub mod error;
pub mod mcp;
pub mod output;
pub mod session;
pub mod store;
pub mod value;

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::{Cli, Command};
use crate::error::{CliError, EXIT_LOCAL};
use crate::output::Output;

/// Runs the parsed command line on a fresh runtime; prints a failure as `umcp: <what failed>` on
/// stderr and turns it into the documented exit code.
#[must_use]
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("umcp: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_LOCAL);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        // `umcp … | head`: the reader has what it wanted.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "umcp: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs one command; `Ok` carries the exit code (0, or what `umcp exec`'s program returned).
///
/// # Errors
/// Whatever the command failed with (see [`CliError`]).
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    let out = Output::new(cli.global.json);
    let opts = &cli.global;
    match &cli.command {
        Command::Login(args) => commands::auth::login(opts, args, out).await?,
        Command::Logout => commands::auth::logout(opts, out).await?,
        Command::Whoami => commands::auth::whoami(opts, out).await?,
        Command::Exec(args) => return commands::exec::exec(opts, args, out).await,
        Command::Lint(args) => commands::tools::lint(opts, args, out).await?,
        Command::Test(args) => commands::tools::test(opts, args, out).await?,
        Command::Gen(args) => commands::tools::gen_code(opts, args, out).await?,
        Command::Languages => commands::exec::languages(opts, out).await?,
        Command::Graph(command) => commands::graph::graph(opts, command, out).await?,
        Command::Audit(command) => commands::audit::audit(opts, command, out).await?,
        Command::Keys(command) => commands::accounts::keys(opts, command, out).await?,
        Command::Users(command) => commands::accounts::users(opts, command, out).await?,
        Command::Mcp => return mcp::serve(opts).await,
        Command::Completions(args) => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(args.shell, &mut Cli::command(), "umcp", &mut stdout);
        }
    }
    Ok(0)
}
