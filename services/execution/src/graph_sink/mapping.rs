//! How finished work becomes graph nodes: one node per result, the user's node, and
//! `(User)-[:RAN]->(result)`, all in one upsert so the relationship's endpoints exist.
//!
//! What is stored, and what is not: never the submitted code or template (only SHA-256
//! digests: code is the user's, the graph is shared with every `graph:query` holder);
//! outputs only as bounded excerpts ([`EXCERPT_BYTES`] of stdout's head and stderr's tail,
//! where tracebacks end) with their full sizes, as the seed platform kept outputs but a graph
//! node is not a log store.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use umcp_proto::common::v1::value::Kind;
use umcp_proto::common::v1::{ListValue, Value};
use umcp_proto::graph::v1::{NodeInput, RelationshipInput, UpsertRequest};

use crate::model::{RunStatus, Severity, TestOutcome};
use crate::service::sha256_hex;
use crate::sink::Activity;

/// Bytes kept of each output stream.
pub const EXCERPT_BYTES: usize = 4096;
/// Items kept of a list property (rule codes, failing tests).
pub const MAX_LIST_ITEMS: usize = 32;
/// Relationship from a user to each of their results.
pub const RAN: &str = "RAN";

/// One result waiting to be written.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) user: String,
    pub(crate) activity: Activity,
    pub(crate) at: SystemTime,
}

fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}
fn string(s: impl Into<String>) -> Value {
    v(Kind::StringValue(s.into()))
}
fn int(i: impl TryInto<i64>) -> Value {
    v(Kind::IntValue(i.try_into().unwrap_or(i64::MAX)))
}
fn boolean(b: bool) -> Value {
    v(Kind::BoolValue(b))
}
fn millis(d: Duration) -> Value {
    int(d.as_millis())
}
fn strings<I: IntoIterator<Item = String>>(items: I) -> Value {
    let values = items.into_iter().take(MAX_LIST_ITEMS).map(string).collect();
    v(Kind::ListValue(ListValue { values }))
}
fn timestamp(at: SystemTime) -> Value {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    v(Kind::TimestampValue(prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        // Microseconds: the embedded store's precision.
        nanos: (since.subsec_micros() * 1000) as i32,
    }))
}

/// The first [`EXCERPT_BYTES`] (or the last, for `tail`) as text.
fn excerpt(bytes: &[u8], tail: bool) -> Value {
    let part = if bytes.len() <= EXCERPT_BYTES {
        bytes
    } else if tail {
        &bytes[bytes.len() - EXCERPT_BYTES..]
    } else {
        &bytes[..EXCERPT_BYTES]
    };
    string(String::from_utf8_lossy(part))
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Ok => "ok",
        RunStatus::RuntimeError => "runtime_error",
        RunStatus::Timeout => "timeout",
        RunStatus::CpuLimit => "cpu_limit",
        RunStatus::MemoryLimit => "memory_limit",
        RunStatus::OutputLimit => "output_limit",
        RunStatus::SandboxError => "sandbox_error",
    }
}

/// A graph key part for an id: a UUID in its 32-digit form, an id that is already a valid
/// key part as it is, anything else by digest (so two different ids never share a key).
fn key_part(id: &str) -> String {
    if let Ok(u) = uuid::Uuid::parse_str(id) {
        return u.simple().to_string();
    }
    if !id.is_empty()
        && id.len() <= 48
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return id.to_owned();
    }
    format!("h{}", &sha256_hex(id.as_bytes())[..40])
}

/// The key of a user's node (`user_<id>`).
#[must_use]
pub fn user_key(user: &str) -> String {
    format!("user_{}", key_part(user))
}

/// The label, key prefix and id of a result.
fn identity(activity: &Activity) -> (&'static str, &'static str, &str) {
    match activity {
        Activity::Execution { result, .. } => ("ExecutionResult", "run", &result.id),
        Activity::Lint { report, .. } => ("LintResult", "lint", &report.id),
        Activity::Tests { report } => ("TestResult", "test", &report.id),
        Activity::Generation { id, .. } => ("GeneratedCode", "gen", id),
    }
}

/// The key of a result's node (`run_…`, `lint_…`, `test_…`, `gen_…`).
#[must_use]
pub fn result_key(activity: &Activity) -> String {
    let (_, prefix, id) = identity(activity);
    format!("{prefix}_{}", key_part(id))
}

fn properties(activity: &Activity) -> HashMap<String, Value> {
    let mut p: HashMap<String, Value> = HashMap::new();
    let mut set = |k: &str, value: Value| {
        p.insert(k.to_owned(), value);
    };
    match activity {
        Activity::Execution {
            language,
            code_sha256,
            result: r,
        } => {
            set("language", string(language.name()));
            set("code_sha256", string(code_sha256));
            set("status", string(status_name(r.status)));
            set("exit_code", int(r.exit_code));
            set("signal", int(r.signal));
            set("wall_time_ms", millis(r.wall_time));
            set("cpu_time_ms", millis(r.cpu_time));
            set("peak_memory_bytes", int(r.peak_memory_bytes));
            set("stdout_excerpt", excerpt(&r.stdout, false));
            set("stderr_excerpt", excerpt(&r.stderr, true));
            set("stdout_bytes", int(r.stdout.len()));
            set("stderr_bytes", int(r.stderr.len()));
            set(
                "output_truncated",
                boolean(r.stdout_truncated || r.stderr_truncated),
            );
        }
        Activity::Lint { language, report } => {
            let count = |s: Severity| {
                report
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == s)
                    .count()
            };
            let mut codes: Vec<String> = report
                .diagnostics
                .iter()
                .map(|d| d.code.clone())
                .filter(|c| !c.is_empty())
                .collect();
            codes.sort();
            codes.dedup();
            set("language", string(language.name()));
            set("code_sha256", string(&report.code_sha256));
            set("diagnostics", int(report.diagnostics.len()));
            set("errors", int(count(Severity::Error)));
            set("warnings", int(count(Severity::Warning)));
            set("infos", int(count(Severity::Info)));
            set("rule_codes", strings(codes));
            set("linters_run", strings(report.linters_run.iter().cloned()));
            if let Some(py) = &report.python {
                set("functions", int(py.functions.len()));
                set("classes", int(py.classes.len()));
                let max = py.complexity.iter().map(|c| c.complexity).max();
                set("max_complexity", int(max.unwrap_or(0)));
            }
        }
        Activity::Tests { report: r } => {
            let failing = r
                .tests
                .iter()
                .filter(|t| matches!(t.outcome, TestOutcome::Failed | TestOutcome::Error))
                .map(|t| t.name.clone());
            set("status", string(status_name(r.status)));
            set("tests", int(r.tests.len()));
            set("passed", int(r.passed));
            set("failed", int(r.failed));
            set("errors", int(r.errors));
            set("skipped", int(r.skipped));
            set("failing_tests", strings(failing));
            set("wall_time_ms", millis(r.wall_time));
            set("stdout_excerpt", excerpt(&r.stdout, false));
            set("stderr_excerpt", excerpt(&r.stderr, true));
        }
        Activity::Generation {
            language,
            template_sha256,
            context_sha256,
            output_sha256,
            output_bytes,
            ..
        } => {
            if let Some(language) = language {
                set("language", string(language.name()));
            }
            set("template_sha256", string(template_sha256));
            set("context_sha256", string(context_sha256));
            set("output_sha256", string(output_sha256));
            set("output_bytes", int(*output_bytes));
        }
    }
    p
}

/// The node of one result.
#[must_use]
pub(crate) fn result_node(job: &Job) -> NodeInput {
    let (label, _, id) = identity(&job.activity);
    let mut properties = properties(&job.activity);
    properties.insert("id".into(), string(id));
    properties.insert("user_id".into(), string(&job.user));
    properties.insert("created_at".into(), timestamp(job.at));
    NodeInput {
        key: result_key(&job.activity),
        labels: vec![label.into()],
        properties,
    }
}

/// One upsert for a batch of results: each user's node once, each result, each `RAN`.
#[must_use]
pub(crate) fn upsert(batch: &[Job]) -> UpsertRequest {
    let mut nodes = Vec::with_capacity(batch.len() * 2);
    let mut relationships = Vec::with_capacity(batch.len());
    let mut users: Vec<String> = Vec::new();
    for job in batch {
        let user = user_key(&job.user);
        if !users.contains(&user) {
            users.push(user.clone());
            nodes.push(NodeInput {
                key: user.clone(),
                labels: vec!["User".into()],
                properties: HashMap::from([("user_id".to_owned(), string(&job.user))]),
            });
        }
        let node = result_node(job);
        relationships.push(RelationshipInput {
            start_key: user,
            r#type: RAN.into(),
            end_key: node.key.clone(),
            properties: HashMap::from([("at".to_owned(), timestamp(job.at))]),
        });
        nodes.push(node);
    }
    UpsertRequest {
        nodes,
        relationships,
    }
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
