//! The arguments of every MCP tool: flat where the RPC allows it, each field described with its
//! limits and enums, so the JSON schema `tools/list` publishes is the contract [`super::validate`]
//! enforces before any call leaves the gateway. Limits mirror the services' own (which check
//! again): code 256 KiB, stdin 1 MiB, 64 arguments, 32 test files, 1000 nodes, 5000
//! relationships, 64 KiB of Cypher, 10000 rows, 1000 audit events per page.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A language the sandbox runs: `python` (Python 3), `javascript` (Node) or `bash`. Variants
/// carry no docs on purpose: schemars then writes a plain `enum`, which every client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
#[allow(missing_docs)]
pub(crate) enum LanguageArg {
    Python,
    Javascript,
    Bash,
}

/// `execute_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecuteArgs {
    /// Language of `code`: python, javascript or bash.
    pub language: LanguageArg,
    /// The program, run in a fresh sandbox (no network, private temporary files, CPU, memory and
    /// output limits). At most 256 KiB.
    #[schemars(length(min = 1, max = 262_144))]
    pub code: String,
    /// Text sent to the program's standard input. At most 1 MiB.
    #[schemars(length(max = 1_048_576))]
    pub stdin: Option<String>,
    /// Command-line arguments (`sys.argv[1:]`, `process.argv.slice(2)`, `$1…`). At most 64, each
    /// at most 4096 bytes.
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,
    /// Wall-clock limit in seconds (default 10, at most 60); the whole process tree is killed
    /// when it passes.
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
    /// Makes a retry safe: a repeat with the same key returns the first run's result instead of
    /// running again. 1 to 128 visible ASCII characters.
    #[schemars(length(min = 1, max = 128))]
    pub idempotency_key: Option<String>,
}

/// `lint_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LintArgs {
    /// Language of `code` (python: ruff; bash: shellcheck; javascript: syntax check).
    pub language: LanguageArg,
    /// The source to check; it is never run. At most 256 KiB.
    #[schemars(length(min = 1, max = 262_144))]
    pub code: String,
}

/// `run_tests`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunTestsArgs {
    /// Python modules under test: relative file path (`calc.py`, `pkg/util.py`) → source.
    /// Together with `tests` at most 32 files and 1 MiB.
    #[schemars(extend("maxProperties" = 32))]
    pub modules: Option<Map<String, Value>>,
    /// pytest files: relative path (`test_calc.py`) → source. At least one.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 32))]
    pub tests: Map<String, Value>,
    /// Wall-clock limit of the whole pytest run in seconds (default 10, at most 60).
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
}

/// `generate_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateArgs {
    /// A minijinja (Jinja2) template; undefined variables are errors. At most 256 KiB.
    #[schemars(length(min = 1, max = 262_144))]
    pub template: String,
    /// Variables the template sees (any JSON object). At most 1 MiB encoded.
    pub context: Option<Map<String, Value>>,
    /// Language of the output (python, javascript or bash), when it should be checked after
    /// rendering.
    pub language: Option<LanguageArg>,
}

/// A node to create or merge.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub(crate) struct NodeArg {
    /// Unique key: 1 to 64 ASCII letters, digits or `_`.
    #[schemars(length(min = 1, max = 64))]
    pub key: String,
    /// Labels to add (same rule as `key`), at most 16.
    #[schemars(length(max = 16))]
    pub labels: Option<Vec<String>>,
    /// Properties to set: name → null (removes it), boolean, integer, number, string, or a list
    /// of one of those kinds. At most 64.
    #[schemars(extend("maxProperties" = 64))]
    pub properties: Option<Map<String, Value>>,
}

/// A relationship to create or merge (at most one of a type between an ordered pair).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub(crate) struct RelationshipArg {
    /// Key of the start node (in the store or in `nodes`).
    #[schemars(length(min = 1, max = 64))]
    pub start_key: String,
    /// Relationship type, e.g. `DEPENDS_ON` (identifier rule).
    #[schemars(length(min = 1, max = 64))]
    pub r#type: String,
    /// Key of the end node (in the store or in `nodes`).
    #[schemars(length(min = 1, max = 64))]
    pub end_key: String,
    /// Properties, same rules as a node's.
    #[schemars(extend("maxProperties" = 64))]
    pub properties: Option<Map<String, Value>>,
}

/// `graph_upsert`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsertArgs {
    /// Nodes to create or merge, at most 1000.
    #[schemars(length(max = 1000))]
    pub nodes: Option<Vec<NodeArg>>,
    /// Relationships to create or merge, at most 5000.
    #[schemars(length(max = 5000))]
    pub relationships: Option<Vec<RelationshipArg>>,
}

/// `graph_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryArgs {
    /// A read-only openCypher query (writes are refused). At most 64 KiB.
    #[schemars(length(min = 1, max = 65_536))]
    pub cypher: String,
    /// Parameters referenced as `$name`: name → JSON value. At most 256.
    #[schemars(extend("maxProperties" = 256))]
    pub parameters: Option<Map<String, Value>>,
    /// Maximum rows returned (default 1000, at most 10000); `truncated` says when more exist.
    #[schemars(range(min = 1, max = 10_000))]
    pub row_limit: Option<u32>,
}

/// A relationship to delete.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
pub(crate) struct RelationshipRefArg {
    /// Key of the start node.
    #[schemars(length(min = 1, max = 64))]
    pub start_key: String,
    /// Relationship type.
    #[schemars(length(min = 1, max = 64))]
    pub r#type: String,
    /// Key of the end node.
    #[schemars(length(min = 1, max = 64))]
    pub end_key: String,
}

/// `graph_delete`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteArgs {
    /// Keys of nodes to delete, at most 1000 (unknown keys are counted in `not_found`).
    #[schemars(length(max = 1000))]
    pub node_keys: Option<Vec<String>>,
    /// Relationships to delete, at most 5000.
    #[schemars(length(max = 5000))]
    pub relationships: Option<Vec<RelationshipRefArg>>,
    /// Also delete the relationships of deleted nodes (default false: such nodes are refused).
    pub detach: Option<bool>,
}

/// An audit event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
#[allow(missing_docs)]
pub(crate) enum EventTypeArg {
    AuthSuccess,
    AuthFailure,
    TokenValidation,
    AuthzGranted,
    AuthzDenied,
    DataRead,
    DataWrite,
    DataDelete,
    CodeExecution,
    CodeLint,
    CodeTest,
    CodeGeneration,
    GraphQuery,
    GraphUpsert,
    SystemError,
    RateLimitExceeded,
    SecurityViolation,
}

/// Which outcomes an audit query returns: `any` (the default), `success` or `failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
#[allow(missing_docs)]
pub(crate) enum OutcomeArg {
    Any,
    Success,
    Failure,
}

/// `audit_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQueryArgs {
    /// Only these event types (default: all), at most 17.
    #[schemars(length(max = 17))]
    pub event_types: Option<Vec<EventTypeArg>>,
    /// Only events of this user id.
    #[schemars(length(max = 128))]
    pub user_id: Option<String>,
    /// Only events of this correlation id.
    #[schemars(length(max = 128))]
    pub correlation_id: Option<String>,
    /// Only events of this resource (e.g. `/umcp.graph.v1.GraphService/Upsert`, `/mcp`).
    #[schemars(length(max = 256))]
    pub resource: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. `2026-12-04T10:00:00Z`).
    #[schemars(length(max = 64))]
    pub since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[schemars(length(max = 64))]
    pub until: Option<String>,
    /// Successes (`success`), failures (`failure`) or both (`any`, the default).
    pub outcome: Option<OutcomeArg>,
    /// Events per page (default 100, at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page; absent for the first.
    #[schemars(length(max = 512))]
    pub page_token: Option<String>,
}
