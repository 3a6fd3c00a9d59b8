//! The command line: every subcommand, flag and environment variable `umcp` reads.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// wall-time limit to it. More than 0, at most 1 day.
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
    /// Run a program in the sandbox, streaming its output; exits with the program's exit code.
    Exec(ExecArgs),
    /// Lint a file (ruff for Python, node --check, bash -n and shellcheck); exits 1 on an error
    /// or warning.
    Lint(LintArgs),
    /// Run pytest in the sandbox on test files and the modules they test; exits 1 when a test
    /// fails.
    Test(TestArgs),
    /// Render a minijinja template (in the sandbox) with a JSON context.
    Gen(GenArgs),
    /// List the languages the execution service has installed.
    Languages,
    /// Read and write the knowledge graph.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Read and verify the audit log (admin).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users (admin).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Serve MCP over stdio (for MCP clients that launch a server process), forwarding every
    /// tool call to the gateway with these credentials.
    Mcp,
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

/// A language of the execution service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Python 3.
    #[value(alias = "py")]
    Python,
    /// JavaScript on Node.js.
    #[value(alias = "js", alias = "node")]
    Javascript,
    /// Bash.
    #[value(alias = "sh")]
    Bash,
}

/// `umcp exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The program: a file, or `-` for stdin.
    pub file: PathBuf,
    /// Language; by default from the file extension (.py, .js/.mjs/.cjs, .sh/.bash).
    #[arg(long, short)]
    pub lang: Option<Lang>,
    /// The program's standard input: a file, or `-` for this process's stdin (at most 1 MiB).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Wall-clock limit (server default 10s, maximum 60s).
    #[arg(long, value_parser = parse_duration)]
    pub wall_time: Option<Duration>,
    /// CPU-time limit (server default 5s, maximum 30s).
    #[arg(long, value_parser = parse_duration)]
    pub cpu_time: Option<Duration>,
    /// Memory limit in MiB (server default 256, maximum 1024).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Repeating the same key within 24 h returns the stored result without running again.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Arguments for the program (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `umcp lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// The file, or `-` for stdin.
    pub file: PathBuf,
    /// Language; by default from the file extension.
    #[arg(long, short)]
    pub lang: Option<Lang>,
}

/// `umcp test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (`test_*.py`).
    #[arg(required = true)]
    pub tests: Vec<PathBuf>,
    /// Modules under test (repeat for several).
    #[arg(long = "module", short)]
    pub modules: Vec<PathBuf>,
    /// Wall-clock limit of the pytest run.
    #[arg(long, value_parser = parse_duration)]
    pub wall_time: Option<Duration>,
}

/// `umcp gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The template, or `-` for stdin.
    pub template: PathBuf,
    /// Context: a file holding a JSON object (`-` for stdin).
    #[arg(long, short)]
    pub context: Option<PathBuf>,
    /// One context entry, `name=VALUE` (VALUE as JSON, else as a string); repeatable, and wins
    /// over `--context`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Language of the output (recorded with the result).
    #[arg(long, short)]
    pub lang: Option<Lang>,
}

/// `umcp graph …`.
#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Create or merge nodes and relationships from a JSON file (one transaction).
    Upsert(GraphUpsertArgs),
    /// Run a read-only openCypher query.
    Query(GraphQueryArgs),
    /// Delete nodes by key and relationships by start:TYPE:end.
    Delete(GraphDeleteArgs),
    /// Node and relationship counts per label and type.
    Metrics,
}

/// `umcp graph upsert`.
#[derive(Debug, Args)]
pub struct GraphUpsertArgs {
    /// JSON file (`-` for stdin): `{"nodes": [{"key", "labels", "properties"}],
    /// "relationships": [{"start", "type", "end", "properties"}]}`.
    pub file: PathBuf,
}

/// `umcp graph query`.
#[derive(Debug, Args)]
pub struct GraphQueryArgs {
    /// The openCypher text (`-` reads it from stdin).
    pub cypher: String,
    /// A parameter, `name=VALUE` (VALUE as JSON, else as a string); repeatable.
    #[arg(long = "param", short, value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Maximum rows (server default 1000, maximum 10000).
    #[arg(long)]
    pub limit: Option<u32>,
}

/// `umcp graph delete`.
#[derive(Debug, Args)]
pub struct GraphDeleteArgs {
    /// Keys of nodes to delete.
    #[arg(long = "node", short)]
    pub nodes: Vec<String>,
    /// Relationships to delete, as `start:TYPE:end`.
    #[arg(long = "rel", short)]
    pub relationships: Vec<String>,
    /// Delete the nodes' relationships with them (otherwise a connected node is refused).
    #[arg(long)]
    pub detach: bool,
}

/// Filters shared by `audit query` and `audit tail`.
#[derive(Debug, Clone, Args)]
pub struct AuditFilter {
    /// Event type, e.g. `auth_failure`, `authz_denied`, `code_execution`; repeatable.
    #[arg(long = "type", short = 't')]
    pub types: Vec<String>,
    /// Actor user id.
    #[arg(long)]
    pub user: Option<String>,
    /// Correlation id.
    #[arg(long)]
    pub correlation: Option<String>,
    /// Resource, e.g. `/umcp.graph.v1.GraphService/Upsert`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only failed outcomes.
    #[arg(long, conflicts_with = "successes")]
    pub failures: bool,
    /// Only successful outcomes.
    #[arg(long)]
    pub successes: bool,
}

/// `umcp audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stored events, newest first.
    Query(AuditQueryArgs),
    /// Follow events as they are committed (Ctrl-C stops).
    Tail(AuditTailArgs),
    /// Recompute the hash chain; exits 1 when it is broken.
    Verify(AuditVerifyArgs),
}

/// `umcp audit query`.
#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Events at or after this time: RFC 3339, or an age such as `15m` or `2h`.
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this time (same forms).
    #[arg(long)]
    pub until: Option<String>,
    /// How many events at most (pages of up to 1000 are fetched as needed).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// `umcp audit tail`.
#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: AuditFilter,
    /// Start after this sequence number (0: only new events).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `umcp audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// First sequence number (0 with --to 0: the whole log, checked against the signed
    /// checkpoint too).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Last sequence number.
    #[arg(long, default_value_t = 0)]
    pub to: u64,
}

/// A role, as the auth service names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// tools:read, tools:lint, graph:query.
    Viewer,
    /// viewer + tools:execute, tools:test, tools:generate.
    Developer,
    /// developer + graph:upsert, graph:delete, system:admin.
    Admin,
}

/// `umcp keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; the secret is printed once.
    Create(KeysCreateArgs),
    /// List API keys (yours; admins: --user ID or --all).
    List(KeysListArgs),
    /// Revoke an API key by id.
    Revoke {
        /// The key id (from `umcp keys list`).
        id: String,
    },
}

/// `umcp keys create`.
#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// A name to recognise the key by (1–64 characters).
    pub name: String,
    /// Lifetime, e.g. `30d` (default: no expiry).
    #[arg(long, value_parser = parse_duration)]
    pub expires_in: Option<Duration>,
    /// Grant only these of your roles (default: all of them); repeatable.
    #[arg(long = "role", short)]
    pub roles: Vec<RoleArg>,
    /// Admin: create the key for this user id.
    #[arg(long)]
    pub user: Option<String>,
}

/// `umcp keys list`.
#[derive(Debug, Args)]
pub struct KeysListArgs {
    /// Admin: this user id's keys.
    #[arg(long, conflicts_with = "all")]
    pub user: Option<String>,
    /// Admin: every user's keys.
    #[arg(long)]
    pub all: bool,
}

/// `umcp users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user (the password is asked for, or read with --password-stdin).
    Create(UsersCreateArgs),
    /// List users.
    List,
    /// Replace a user's roles.
    SetRoles {
        /// User id or username.
        user: String,
        /// The new roles; repeatable, at least one.
        #[arg(long = "role", short, required = true)]
        roles: Vec<RoleArg>,
    },
    /// Disable a user: their tokens and API keys stop working.
    Disable {
        /// User id or username.
        user: String,
    },
}

/// `umcp users create`.
#[derive(Debug, Args)]
pub struct UsersCreateArgs {
    /// Username (1–64 characters: letters, digits, `_`, `.`, `-`).
    pub username: String,
    /// Roles; repeatable, at least one.
    #[arg(long = "role", short, required = true)]
    pub roles: Vec<RoleArg>,
    /// Read the password (12–1024 bytes) from stdin instead of asking twice on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Parses `10s`, `5m`, `1h30m`, `7d` (humantime syntax).
///
/// # Errors
/// When the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 30s or 5m: {e}"))
}
