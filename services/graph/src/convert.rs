//! Protobuf ⇄ domain conversions. Decoding names the offending field (`nodes[2].properties.x`)
//! so errors can say exactly what was wrong.

use std::collections::{BTreeMap, HashMap};

use umcp_proto::common::v1 as pb;
use umcp_proto::common::v1::value::Kind;
use umcp_proto::graph::v1 as gpb;
use umcp_store::{
    DeleteBatch, DeleteCounts, Metrics, Node, NodeInput, Path, QueryResult, RelInput, RelRef,
    Relationship, Timestamp, UpsertBatch, UpsertCounts, Value,
};

use crate::error::GraphError;

type Result<T> = std::result::Result<T, GraphError>;

/// Decodes a protobuf value; graph elements are decoded too (the store's validation refuses them
/// where they are not allowed, with the same field path).
pub(crate) fn value_from_proto(field: &str, v: pb::Value) -> Result<Value> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::IntValue(i)) => Value::Int(i),
        Some(Kind::DoubleValue(f)) => Value::Float(f),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BytesValue(b)) => Value::Bytes(b),
        Some(Kind::ListValue(l)) => Value::List(
            l.values
                .into_iter()
                .enumerate()
                .map(|(i, item)| value_from_proto(&format!("{field}[{i}]"), item))
                .collect::<Result<_>>()?,
        ),
        Some(Kind::MapValue(m)) => Value::Map(map_from_proto(field, m.fields)?),
        Some(Kind::NodeValue(n)) => Value::Node(Node {
            key: n.key,
            labels: n.labels,
            properties: map_from_proto(&format!("{field}.properties"), n.properties)?,
        }),
        Some(Kind::RelationshipValue(r)) => Value::Relationship(rel_from_proto(field, r)?),
        Some(Kind::PathValue(p)) => Value::Path(Path {
            nodes: p
                .nodes
                .into_iter()
                .map(|n| {
                    Ok(Node {
                        key: n.key,
                        labels: n.labels,
                        properties: map_from_proto(&format!("{field}.nodes"), n.properties)?,
                    })
                })
                .collect::<Result<_>>()?,
            relationships: p
                .relationships
                .into_iter()
                .map(|r| rel_from_proto(&format!("{field}.relationships"), r))
                .collect::<Result<_>>()?,
        }),
        Some(Kind::TimestampValue(ts)) => {
            let nanos = u32::try_from(ts.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| {
                    GraphError::bad_request(
                        field,
                        format!(
                            "timestamp nanos {} is out of range; allowed: 0 to 999999999",
                            ts.nanos
                        ),
                    )
                })?;
            Value::Timestamp(Timestamp {
                seconds: ts.seconds,
                nanos,
            })
        }
    })
}

fn rel_from_proto(field: &str, r: pb::Relationship) -> Result<Relationship> {
    Ok(Relationship {
        rel_type: r.r#type,
        start_key: r.start_key,
        end_key: r.end_key,
        properties: map_from_proto(&format!("{field}.properties"), r.properties)?,
    })
}

fn map_from_proto(field: &str, m: HashMap<String, pb::Value>) -> Result<BTreeMap<String, Value>> {
    m.into_iter()
        .map(|(k, v)| {
            let item = value_from_proto(&format!("{field}.{k}"), v)?;
            Ok((k, item))
        })
        .collect()
}

/// Encodes a domain value for a response.
pub(crate) fn value_to_proto(v: Value) -> pb::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(pb::NullValue::Unspecified as i32),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Int(i) => Kind::IntValue(i),
        Value::Float(f) => Kind::DoubleValue(f),
        Value::String(s) => Kind::StringValue(s),
        Value::Bytes(b) => Kind::BytesValue(b),
        Value::List(items) => Kind::ListValue(pb::ListValue {
            values: items.into_iter().map(value_to_proto).collect(),
        }),
        Value::Map(m) => Kind::MapValue(pb::MapValue {
            fields: props_to_proto(m),
        }),
        Value::Node(n) => Kind::NodeValue(node_to_proto(n)),
        Value::Relationship(r) => Kind::RelationshipValue(rel_to_proto(r)),
        Value::Path(p) => Kind::PathValue(pb::Path {
            nodes: p.nodes.into_iter().map(node_to_proto).collect(),
            relationships: p.relationships.into_iter().map(rel_to_proto).collect(),
        }),
        Value::Timestamp(ts) => Kind::TimestampValue(prost_types::Timestamp {
            seconds: ts.seconds,
            // nanos < 1e9 is a `Timestamp` invariant, so it always fits in i32.
            nanos: i32::try_from(ts.nanos).unwrap_or(999_999_999),
        }),
    };
    pb::Value { kind: Some(kind) }
}

fn props_to_proto(m: BTreeMap<String, Value>) -> HashMap<String, pb::Value> {
    m.into_iter().map(|(k, v)| (k, value_to_proto(v))).collect()
}

fn node_to_proto(n: Node) -> pb::Node {
    pb::Node {
        key: n.key,
        labels: n.labels,
        properties: props_to_proto(n.properties),
    }
}

fn rel_to_proto(r: Relationship) -> pb::Relationship {
    pb::Relationship {
        r#type: r.rel_type,
        start_key: r.start_key,
        end_key: r.end_key,
        properties: props_to_proto(r.properties),
    }
}

pub(crate) fn upsert_from_proto(req: gpb::UpsertRequest) -> Result<UpsertBatch> {
    let nodes = req
        .nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(NodeInput {
                key: n.key,
                labels: n.labels,
                properties: map_from_proto(&format!("nodes[{i}].properties"), n.properties)?,
            })
        })
        .collect::<Result<_>>()?;
    let rels = req
        .relationships
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RelInput {
                start_key: r.start_key,
                rel_type: r.r#type,
                end_key: r.end_key,
                properties: map_from_proto(
                    &format!("relationships[{i}].properties"),
                    r.properties,
                )?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(UpsertBatch { nodes, rels })
}

pub(crate) fn upsert_to_proto(c: UpsertCounts) -> gpb::UpsertResponse {
    gpb::UpsertResponse {
        nodes_created: c.nodes_created,
        nodes_updated: c.nodes_updated,
        relationships_created: c.rels_created,
        relationships_updated: c.rels_updated,
    }
}

pub(crate) fn params_from_proto(
    params: HashMap<String, pb::Value>,
) -> Result<BTreeMap<String, Value>> {
    map_from_proto("parameters", params)
}

pub(crate) fn query_to_proto(r: QueryResult, elapsed_micros: u64) -> gpb::QueryResponse {
    gpb::QueryResponse {
        columns: r.columns,
        rows: r
            .rows
            .into_iter()
            .map(|row| gpb::Row {
                values: row.into_iter().map(value_to_proto).collect(),
            })
            .collect(),
        truncated: r.truncated,
        elapsed_micros,
    }
}

pub(crate) fn delete_from_proto(req: gpb::DeleteRequest) -> DeleteBatch {
    DeleteBatch {
        node_keys: req.node_keys,
        rels: req
            .relationships
            .into_iter()
            .map(|r| RelRef {
                start_key: r.start_key,
                rel_type: r.r#type,
                end_key: r.end_key,
            })
            .collect(),
        detach: req.detach,
    }
}

pub(crate) fn delete_to_proto(c: DeleteCounts) -> gpb::DeleteResponse {
    gpb::DeleteResponse {
        nodes_deleted: c.nodes_deleted,
        relationships_deleted: c.rels_deleted,
        not_found: c.not_found,
    }
}

pub(crate) fn metrics_to_proto(m: Metrics) -> gpb::GetMetricsResponse {
    gpb::GetMetricsResponse {
        node_count: m.node_count,
        relationship_count: m.rel_count,
        label_counts: m.label_counts.into_iter().collect(),
        relationship_type_counts: m.type_counts.into_iter().collect(),
        average_degree: m.average_degree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_keep_ints() {
        let v = Value::List(vec![
            Value::Int(i64::MAX),
            Value::Float(0.5),
            Value::Null,
            Value::Timestamp(Timestamp {
                seconds: -5,
                nanos: 7,
            }),
            Value::Map(BTreeMap::from([("b".to_string(), Value::Bytes(vec![1]))])),
        ]);
        assert_eq!(
            value_from_proto("p", value_to_proto(v.clone())).ok(),
            Some(v)
        );
        assert_eq!(
            value_from_proto("p", pb::Value { kind: None }).ok(),
            Some(Value::Null)
        );
    }

    #[test]
    fn bad_timestamp_names_the_field() {
        let v = pb::Value {
            kind: Some(Kind::ListValue(pb::ListValue {
                values: vec![pb::Value {
                    kind: Some(Kind::TimestampValue(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    })),
                }],
            })),
        };
        match value_from_proto("parameters.t", v) {
            Err(GraphError::BadRequest { field, .. }) => assert_eq!(field, "parameters.t[0]"),
            other => panic!("{other:?}"),
        }
    }
}
