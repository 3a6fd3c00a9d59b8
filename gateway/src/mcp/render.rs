//! gRPC answers as MCP tool results: structured content (JSON that mirrors the response) plus
//! a text rendering an agent or a person reads (stdout and stderr as text, diagnostics as a
//! list), and JSON arguments as typed `umcp.common.v1.Value`s (integers stay integers).

use std::fmt::Write as _;

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value as Json, json};
use umcp_proto::common::v1::{ListValue, MapValue, Node, Relationship, Value, value::Kind};

/// A successful result: `structured` as structured content, `text` as the readable block.
pub(crate) fn result(structured: Json, text: String) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// A JSON argument value as a typed value: integers that fit `i64` are integers, other numbers
/// doubles, objects maps.
pub(crate) fn to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Json::Object(fields) => Kind::MapValue(MapValue {
            fields: to_values(fields),
        }),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a map of typed values.
pub(crate) fn to_values(fields: &Map<String, Json>) -> std::collections::HashMap<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), to_value(v)))
        .collect()
}

/// A typed value as JSON: bytes as base64 text, timestamps as RFC 3339 text, graph elements as
/// objects (`{"key", "labels", "properties"}`, `{"type", "start_key", "end_key", …}`).
pub(crate) fn to_json(value: &Value) -> Json {
    let Some(kind) = &value.kind else {
        return Json::Null;
    };
    match kind {
        Kind::NullValue(_) => Json::Null,
        Kind::BoolValue(b) => json!(b),
        Kind::IntValue(i) => json!(i),
        Kind::DoubleValue(d) => json!(d),
        Kind::StringValue(s) => json!(s),
        Kind::BytesValue(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Kind::ListValue(list) => Json::Array(list.values.iter().map(to_json).collect()),
        Kind::MapValue(map) => Json::Object(sorted(&map.fields)),
        Kind::NodeValue(node) => node_json(node),
        Kind::RelationshipValue(rel) => relationship_json(rel),
        Kind::PathValue(path) => json!({
            "nodes": path.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "relationships": path.relationships.iter().map(relationship_json).collect::<Vec<_>>(),
        }),
        Kind::TimestampValue(ts) => json!(ts.to_string()),
    }
}

fn sorted(fields: &std::collections::HashMap<String, Value>) -> Map<String, Json> {
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| (k.clone(), to_json(&fields[k])))
        .collect()
}

fn node_json(node: &Node) -> Json {
    json!({ "key": node.key, "labels": node.labels, "properties": sorted(&node.properties) })
}

fn relationship_json(rel: &Relationship) -> Json {
    json!({
        "type": rel.r#type, "start_key": rel.start_key, "end_key": rel.end_key,
        "properties": sorted(&rel.properties),
    })
}

/// `RUN_STATUS_RUNTIME_ERROR` → `runtime_error`: a proto enum name without its prefix.
pub(crate) fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// `PermissionDenied` → `PERMISSION_DENIED` (a Rust variant name as a proto enum name).
pub(crate) fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Milliseconds of a protobuf duration (0 when absent).
pub(crate) fn millis(duration: Option<&prost_types::Duration>) -> u64 {
    duration.map_or(0, |d| {
        let secs = u64::try_from(d.seconds).unwrap_or(0);
        let nanos = u64::try_from(d.nanos).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
    })
}

/// Program output as text (invalid UTF-8 replaced), with a mark when it was cut.
pub(crate) fn output_text(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if truncated {
        text.push_str("\n[output truncated at the limit]");
    }
    text
}

/// `--- stdout ---` / `--- stderr ---` sections, each only when non-empty.
pub(crate) fn streams_text(out: &mut String, stdout: &str, stderr: &str) {
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.is_empty() {
            let _ = write!(out, "\n--- {name} ---\n{text}");
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
}

/// Query rows as a small tab-separated table (at most `max_rows` rows shown).
pub(crate) fn table_text(columns: &[String], rows: &[Vec<Json>], max_rows: usize) -> String {
    let mut out = columns.join("\t");
    out.push('\n');
    for row in rows.iter().take(max_rows) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    if rows.len() > max_rows {
        let _ = writeln!(
            out,
            "… {} more rows in the structured result",
            rows.len() - max_rows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_integers_and_round_trip() {
        let input = json!({"n": 3, "x": 1.5, "s": "a", "l": [1, 2], "m": {"b": true}, "z": null});
        let values = to_values(input.as_object().unwrap());
        assert_eq!(values["n"].kind, Some(Kind::IntValue(3)));
        assert_eq!(values["x"].kind, Some(Kind::DoubleValue(1.5)));
        let back = to_json(&Value {
            kind: Some(Kind::MapValue(MapValue { fields: values })),
        });
        assert_eq!(back, input);
    }

    #[test]
    fn names_and_text() {
        assert_eq!(
            enum_name("RUN_STATUS_RUNTIME_ERROR", "RUN_STATUS_"),
            "runtime_error"
        );
        let mut out = String::from("exit 0");
        streams_text(&mut out, "hi", "");
        assert_eq!(out, "exit 0\n--- stdout ---\nhi\n");
        let table = table_text(&["n".into()], &[vec![json!(1)], vec![json!("a")]], 1);
        assert!(table.starts_with("n\n1\n… 1 more rows"), "{table}");
    }
}
