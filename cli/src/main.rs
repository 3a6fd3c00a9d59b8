//! `umcp`: parses the command line and hands over to the library (see `umcp --help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    umcp_cli::main(umcp_cli::args::Cli::parse())
}
