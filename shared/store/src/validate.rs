//! Input validation run by every backend before anything is written, and reusable by callers that
//! want to fail early. Field paths use the protobuf names (`relationships[2].type`) because they
//! end up in messages for API callers.

use crate::error::StoreError;
use crate::limits::{
    DEFAULT_ROW_LIMIT, KEY_PROPERTY, MAX_CYPHER_BYTES, MAX_IDENTIFIER_LEN, MAX_LABELS_PER_NODE,
    MAX_NODES_PER_REQUEST, MAX_PARAMS, MAX_PROPERTIES, MAX_RELS_PER_REQUEST, MAX_ROW_LIMIT,
    MAX_VALUE_BYTES,
};
use crate::model::{DeleteBatch, Properties, ReadQuery, UpsertBatch, Value};

type Result<T> = std::result::Result<T, StoreError>;

const IDENTIFIER_RULE: &str =
    "1 to 64 characters, ASCII letters, digits and `_` only (no `-`, `:`, backticks or spaces)";

/// Checks the identifier rule shared by keys, labels, relationship types, property names and
/// parameter names. `what` names the thing for the message ("key", "label", …).
pub fn identifier(field: &str, what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(StoreError::invalid(
            field,
            format!("{what} is empty; allowed: {IDENTIFIER_RULE}"),
        ));
    }
    if value.len() > MAX_IDENTIFIER_LEN {
        return Err(StoreError::invalid(
            field,
            format!(
                "{what} is {} characters long; allowed: {IDENTIFIER_RULE}",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(StoreError::invalid(
            field,
            format!("{what} contains {bad:?}; allowed: {IDENTIFIER_RULE}"),
        ));
    }
    Ok(())
}

/// Checks a property name: the identifier rule, not `key` (it holds the node key), and not
/// starting with `_` (the embedded engine returns its own metadata under `_id`, `_labels`,
/// `_type`, … next to the properties, so such names would be ambiguous in results).
pub fn property_name(field: &str, name: &str) -> Result<()> {
    identifier(field, "property name", name)?;
    if name == KEY_PROPERTY {
        return Err(StoreError::invalid(
            field,
            "`key` is reserved for the node key; set it through the `key` field",
        ));
    }
    if name.starts_with('_') {
        return Err(StoreError::invalid(
            field,
            format!(
                "property name `{name}` starts with `_`, which is reserved for engine metadata"
            ),
        ));
    }
    Ok(())
}

/// Checks a property map: count, names and values.
pub fn properties(field: &str, props: &Properties) -> Result<()> {
    if props.len() > MAX_PROPERTIES {
        return Err(StoreError::invalid(
            field,
            format!(
                "{} properties given; at most {MAX_PROPERTIES} are allowed",
                props.len()
            ),
        ));
    }
    for (name, value) in props {
        let path = format!("{field}.{name}");
        property_name(&path, name)?;
        property_value(&path, value)?;
    }
    Ok(())
}

const ALLOWED_PROPERTY_VALUES: &str = "allowed: null (removes the property), bool, int, double \
    (finite), string, bytes, timestamp, or a list of one of those scalar kinds";

/// Checks one stored property value: scalars, timestamps and homogeneous scalar lists, finite
/// doubles, at most [`MAX_VALUE_BYTES`] encoded.
pub fn property_value(field: &str, value: &Value) -> Result<()> {
    match value {
        Value::Null => {}
        Value::List(items) => {
            let mut first_kind: Option<&'static str> = None;
            for (i, item) in items.iter().enumerate() {
                let item_field = format!("{field}[{i}]");
                if !is_scalar(item) {
                    return Err(StoreError::invalid(
                        item_field,
                        format!(
                            "a {} cannot be a list element of a property; {ALLOWED_PROPERTY_VALUES}",
                            item.kind_name()
                        ),
                    ));
                }
                finite(&item_field, item)?;
                match first_kind {
                    None => first_kind = Some(item.kind_name()),
                    Some(kind) if kind != item.kind_name() => {
                        return Err(StoreError::invalid(
                            item_field,
                            format!(
                                "list mixes {kind} and {}; property lists must be homogeneous",
                                item.kind_name()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        other if is_scalar(other) => finite(field, other)?,
        other => {
            return Err(StoreError::invalid(
                field,
                format!(
                    "a {} cannot be stored as a property; {ALLOWED_PROPERTY_VALUES}",
                    other.kind_name()
                ),
            ));
        }
    }
    let size = encoded_size(value);
    if size > MAX_VALUE_BYTES {
        return Err(StoreError::invalid(
            field,
            format!("value is {size} bytes; at most {MAX_VALUE_BYTES} bytes are allowed"),
        ));
    }
    Ok(())
}

fn is_scalar(v: &Value) -> bool {
    matches!(
        v,
        Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::String(_)
            | Value::Bytes(_)
            | Value::Timestamp(_)
    )
}

fn finite(field: &str, v: &Value) -> Result<()> {
    match v {
        Value::Float(f) if !f.is_finite() => Err(StoreError::invalid(
            field,
            format!("double {f} is not finite; NaN and infinities are not allowed"),
        )),
        _ => Ok(()),
    }
}

/// Approximate encoded size of a value (payload bytes plus a small per-element overhead).
fn encoded_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 8,
        Value::Timestamp(_) => 12,
        Value::String(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::List(items) => items.iter().map(|i| encoded_size(i) + 1).sum(),
        Value::Map(m) => m.iter().map(|(k, v)| k.len() + encoded_size(v) + 2).sum(),
        Value::Node(_) | Value::Relationship(_) | Value::Path(_) => 0,
    }
}

/// Validates a whole upsert: limits, identifiers, properties.
pub fn upsert(batch: &UpsertBatch) -> Result<()> {
    if batch.nodes.is_empty() && batch.rels.is_empty() {
        return Err(StoreError::invalid(
            "nodes",
            "nodes and relationships are both empty; give at least one node or relationship",
        ));
    }
    at_most(
        "nodes",
        "nodes",
        batch.nodes.len(),
        MAX_NODES_PER_REQUEST,
        "request",
    )?;
    at_most(
        "relationships",
        "relationships",
        batch.rels.len(),
        MAX_RELS_PER_REQUEST,
        "request",
    )?;
    for (i, node) in batch.nodes.iter().enumerate() {
        identifier(&format!("nodes[{i}].key"), "key", &node.key)?;
        at_most(
            &format!("nodes[{i}].labels"),
            "labels",
            node.labels.len(),
            MAX_LABELS_PER_NODE,
            "node",
        )?;
        for (j, label) in node.labels.iter().enumerate() {
            identifier(&format!("nodes[{i}].labels[{j}]"), "label", label)?;
        }
        properties(&format!("nodes[{i}].properties"), &node.properties)?;
    }
    for (i, rel) in batch.rels.iter().enumerate() {
        endpoints(i, &rel.start_key, &rel.rel_type, &rel.end_key)?;
        properties(&format!("relationships[{i}].properties"), &rel.properties)?;
    }
    Ok(())
}

/// The identifier rule for relationship `i`'s start key, type and end key.
fn endpoints(i: usize, start: &str, rel_type: &str, end: &str) -> Result<()> {
    identifier(&format!("relationships[{i}].start_key"), "key", start)?;
    identifier(
        &format!("relationships[{i}].type"),
        "relationship type",
        rel_type,
    )?;
    identifier(&format!("relationships[{i}].end_key"), "key", end)
}

/// `INVALID_ARGUMENT` on `field` when `len` exceeds `max` per `per`.
fn at_most(field: &str, what: &str, len: usize, max: usize, per: &str) -> Result<()> {
    if len > max {
        return Err(StoreError::invalid(
            field,
            format!("{len} {what} given; at most {max} per {per}"),
        ));
    }
    Ok(())
}

/// Validates a whole delete: limits and identifiers.
pub fn delete(batch: &DeleteBatch) -> Result<()> {
    if batch.node_keys.is_empty() && batch.rels.is_empty() {
        return Err(StoreError::invalid(
            "node_keys",
            "node_keys and relationships are both empty; give at least one to delete",
        ));
    }
    at_most(
        "node_keys",
        "node keys",
        batch.node_keys.len(),
        MAX_NODES_PER_REQUEST,
        "request",
    )?;
    at_most(
        "relationships",
        "relationships",
        batch.rels.len(),
        MAX_RELS_PER_REQUEST,
        "request",
    )?;
    for (i, key) in batch.node_keys.iter().enumerate() {
        identifier(&format!("node_keys[{i}]"), "key", key)?;
    }
    for (i, rel) in batch.rels.iter().enumerate() {
        endpoints(i, &rel.start_key, &rel.rel_type, &rel.end_key)?;
    }
    Ok(())
}

/// Turns a requested row limit into the effective one: 0 means [`DEFAULT_ROW_LIMIT`], above
/// [`MAX_ROW_LIMIT`] is refused.
pub fn row_limit(requested: u32) -> Result<u32> {
    match requested {
        0 => Ok(DEFAULT_ROW_LIMIT),
        n if n > MAX_ROW_LIMIT => Err(StoreError::invalid(
            "row_limit",
            format!(
                "row_limit {n} is too large; allowed: 0 (default {DEFAULT_ROW_LIMIT}) to {MAX_ROW_LIMIT}"
            ),
        )),
        n => Ok(n),
    }
}

/// Validates a query's text size, parameters and row limit (not its read-only-ness, see
/// [`crate::readonly`]).
pub fn query(q: &ReadQuery) -> Result<()> {
    if q.cypher.trim().is_empty() {
        return Err(StoreError::invalid("cypher", "query is empty"));
    }
    if q.cypher.len() > MAX_CYPHER_BYTES {
        return Err(StoreError::invalid(
            "cypher",
            format!(
                "query is {} bytes; at most {MAX_CYPHER_BYTES} bytes are allowed",
                q.cypher.len()
            ),
        ));
    }
    if q.params.len() > MAX_PARAMS {
        return Err(StoreError::invalid(
            "parameters",
            format!(
                "{} parameters given; at most {MAX_PARAMS} are allowed",
                q.params.len()
            ),
        ));
    }
    for (name, value) in &q.params {
        let field = format!("parameters.{name}");
        identifier(&field, "parameter name", name)?;
        parameter_value(&field, value)?;
    }
    if q.row_limit == 0 || q.row_limit > MAX_ROW_LIMIT {
        return Err(StoreError::invalid(
            "row_limit",
            format!("row_limit must be 1 to {MAX_ROW_LIMIT} once resolved"),
        ));
    }
    Ok(())
}

/// Parameters may be anything but graph elements (those only come out of queries).
fn parameter_value(field: &str, value: &Value) -> Result<()> {
    match value {
        Value::Node(_) | Value::Relationship(_) | Value::Path(_) => Err(StoreError::invalid(
            field,
            format!(
                "a {} cannot be a parameter; graph elements appear only in results",
                value.kind_name()
            ),
        )),
        Value::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| parameter_value(&format!("{field}[{i}]"), v)),
        Value::Map(m) => m
            .iter()
            .try_for_each(|(k, v)| parameter_value(&format!("{field}.{k}"), v)),
        _ => {
            if encoded_size(value) > MAX_VALUE_BYTES {
                return Err(StoreError::invalid(
                    field,
                    format!("value is larger than {MAX_VALUE_BYTES} bytes"),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
