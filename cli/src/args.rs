//! The command line: every subcommand, flag and environment variable `umcp` reads.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The default endpoint: the gateway's gRPC address from DESIGN.md.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command ran and found problems (lint diagnostics, failing tests, a broken audit chain)
  2  usage: unknown flag, missing or malformed argument
  3  bad local input: missing or unreadable file, invalid JSON, unknown language
  4  not logged in, login expired or revoked, or UNAUTHENTICATED
  5  PERMISSION_DENIED
  6  the request was rejected (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION)
  7  the mesh is unreachable or busy (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
  8  the server failed (INTERNAL, UNKNOWN, UNIMPLEMENTED)
  9  local failure: the credential store or stdout cannot be written
`umcp exec` exits with the program's exit code (128+N for signal N, 124 for a limit, 125 when
the sandbox could not start it).";

/// `umcp`: the command-line client of the Ultimate MCP Mesh.
#[derive(Debug, Parser)]
#[command(name = "umcp", version, about, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Gateway gRPC address, `host:port` or `http://host:port`. Default: the endpoint of the
    /// last `umcp login`, else 127.0.0.1:50051.
    #[arg(long, env = "UMCP_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// API key (`umcp_…`) exchanged for an access token on each run, instead of the stored
    /// login. Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "UMCP_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Access token (JWT) used as is, instead of the stored login; a value starting with
    /// `umcp_` is taken as an API key.
    #[arg(long, env = "UMCP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON on stdout (canonical proto3 JSON of the answer).
    #[arg(long, global = true)]
    pub json: bool,
    /// Directory of the credential store. Default: `$XDG_CONFIG_HOME/umcp` (`~/.config/umcp`).
    #[arg(long, env = "UMCP_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// Deadline of each call (e.g. `30s`, `2m`); `umcp exec` and `umcp test` add their run's
    /// wall-time limit to it.
    #[arg(long, env = "UMCP_TIMEOUT", global = true, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in with a username and password; the tokens are stored (mode 0600) and refreshed
    /// automatically.
    Login(LoginArgs),
    /// Revoke the stored login at the auth service and forget it.
    Logout,
    /// Show who the current credentials belong to, their roles and permissions.
    Whoami,
    /// Print a shell completion script (e.g. `umcp completions bash > ~/.local/share/bash-completion/completions/umcp`).
    Completions(CompletionsArgs),
}

/// `umcp login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username (asked for on the terminal when omitted).
    #[arg(long, short, env = "UMCP_USERNAME")]
    pub username: Option<String>,
    /// Read the password from stdin (first line) instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `umcp completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Parses `10s`, `5m`, `1h30m`, `7d` (humantime syntax).
///
/// # Errors
/// When the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30s or 5m: {e}"))
}
