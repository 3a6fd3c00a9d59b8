//! Plain JSON ↔ the typed `umcp.common.v1.Value`, for graph input files, query parameters and
//! query results.
//!
//! JSON integers become `int` (64-bit), other numbers `double`, arrays `list`, objects `map`.
//! Two tagged objects carry the kinds JSON lacks: `{"$bytes": "<base64>"}` and
//! `{"$timestamp": "2026-12-04T10:00:00Z"}` (RFC 3339). Results print the same way, and nodes,
//! relationships and paths as objects (`{"key", "labels", "properties"}`,
//! `{"type", "start", "end", "properties"}`, `{"nodes", "relationships"}`).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value as Json, json};
use umcp_proto::common::v1::value::Kind;
use umcp_proto::common::v1::{ListValue, MapValue, NullValue, Value};

use crate::output::to_timestamp;

/// A JSON value as a typed value; `where_` names the place for the error message.
///
/// # Errors
/// Integers beyond the 64-bit signed range, bad base64, a bad timestamp.
pub fn from_json(json: &Json, where_: &str) -> Result<Value, String> {
    let kind = match json {
        Json::Null => Kind::NullValue(NullValue::Unspecified as i32),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Kind::IntValue(i),
            (None, Some(_)) if n.is_u64() => {
                return Err(format!(
                    "{where_}: {n} is beyond the 64-bit signed integer range"
                ));
            }
            (None, Some(f)) => Kind::DoubleValue(f),
            (None, None) => return Err(format!("{where_}: {n} is not a number umcp can send")),
        },
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items
                .iter()
                .enumerate()
                .map(|(i, v)| from_json(v, &format!("{where_}[{i}]")))
                .collect::<Result<_, _>>()?,
        }),
        Json::Object(fields) => return object(fields, where_),
    };
    Ok(Value { kind: Some(kind) })
}

fn object(fields: &Map<String, Json>, where_: &str) -> Result<Value, String> {
    if fields.len() == 1 {
        if let Some(Json::String(b64)) = fields.get("$bytes") {
            let bytes = STANDARD
                .decode(b64)
                .map_err(|e| format!("{where_}: $bytes is not base64: {e}"))?;
            return Ok(Value {
                kind: Some(Kind::BytesValue(bytes)),
            });
        }
        if let Some(Json::String(text)) = fields.get("$timestamp") {
            let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
                format!("{where_}: $timestamp `{text}` is not RFC 3339 (2026-12-04T10:00:00Z): {e}")
            })?;
            return Ok(Value {
                kind: Some(Kind::TimestampValue(to_timestamp(time))),
            });
        }
    }
    Ok(Value {
        kind: Some(Kind::MapValue(MapValue {
            fields: properties(fields, where_)?,
        })),
    })
}

/// A JSON object as a property (or parameter) map.
///
/// # Errors
/// See [`from_json`].
pub fn properties(
    fields: &Map<String, Json>,
    where_: &str,
) -> Result<HashMap<String, Value>, String> {
    fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), from_json(v, &format!("{where_}.{k}"))?)))
        .collect()
}

/// A typed value as plain JSON (see the module docs).
#[must_use]
pub fn to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::IntValue(i)) => json!(i),
        // Non-finite doubles have no JSON number: print them as text.
        Some(Kind::DoubleValue(f)) => {
            serde_json::Number::from_f64(*f).map_or_else(|| json!(f.to_string()), Json::Number)
        }
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BytesValue(b)) => json!({"$bytes": STANDARD.encode(b)}),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(to_json).collect()),
        Some(Kind::MapValue(map)) => props_json(&map.fields),
        Some(Kind::NodeValue(node)) => json!({
            "key": node.key,
            "labels": node.labels,
            "properties": props_json(&node.properties),
        }),
        Some(Kind::RelationshipValue(rel)) => json!({
            "type": rel.r#type,
            "start": rel.start_key,
            "end": rel.end_key,
            "properties": props_json(&rel.properties),
        }),
        Some(Kind::PathValue(path)) => json!({
            "nodes": path.nodes.iter().map(|n| to_json(&Value { kind: Some(Kind::NodeValue(n.clone())) })).collect::<Vec<_>>(),
            "relationships": path.relationships.iter().map(|r| to_json(&Value { kind: Some(Kind::RelationshipValue(r.clone())) })).collect::<Vec<_>>(),
        }),
        Some(Kind::TimestampValue(ts)) => {
            let secs = u64::try_from(ts.seconds).unwrap_or(0);
            let nanos = u32::try_from(ts.nanos).unwrap_or(0);
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            json!({"$timestamp": humantime::format_rfc3339(time).to_string()})
        }
    }
}

/// A property map as a JSON object with sorted keys.
#[must_use]
pub fn props_json(fields: &HashMap<String, Value>) -> Json {
    let sorted: std::collections::BTreeMap<_, _> = fields
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect();
    json!(sorted)
}

/// A table cell: strings bare, everything else as compact JSON.
#[must_use]
pub fn cell(value: &Value) -> String {
    match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => to_json(value).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_stay_integers_and_tagged_kinds_round_trip() {
        let input = json!({
            "n": 9_007_199_254_740_993_i64,
            "x": 1.5,
            "tags": ["a", "b"],
            "raw": {"$bytes": "AAE="},
            "at": {"$timestamp": "2026-12-04T10:00:00Z"},
            "none": null,
        });
        let props = properties(input.as_object().unwrap(), "node").unwrap();
        assert_eq!(props["n"].kind, Some(Kind::IntValue(9_007_199_254_740_993)));
        assert_eq!(props["raw"].kind, Some(Kind::BytesValue(vec![0, 1])));
        let back = props_json(&props);
        assert_eq!(back["n"], input["n"]);
        assert_eq!(back["raw"], input["raw"]);
        assert_eq!(back["at"]["$timestamp"], "2026-12-04T10:00:00Z");
        assert_eq!(back["tags"], input["tags"]);
    }

    #[test]
    fn errors_name_the_place() {
        let error = from_json(&json!({"$bytes": "!!"}), "nodes[0].properties.raw").unwrap_err();
        assert!(
            error.starts_with("nodes[0].properties.raw: $bytes"),
            "{error}"
        );
        let error = from_json(&json!(u64::MAX), "p").unwrap_err();
        assert!(error.contains("64-bit"), "{error}");
    }
}
