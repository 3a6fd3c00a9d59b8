//! Domain types of the graph store, independent of protobuf and of any backend.

use std::collections::BTreeMap;
use std::time::Instant;

/// A point in time, UTC. Nanosecond fields are kept as given; a backend with coarser precision
/// (Grafeo stores microseconds) truncates, and says so in its docs.
#[derive(
    serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// Builds a timestamp from microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Self {
        let seconds = micros.div_euclid(1_000_000);
        // rem_euclid of 1_000_000 is in 0..1_000_000, so the product fits in u32.
        let nanos = (micros.rem_euclid(1_000_000) * 1_000) as u32;
        Self { seconds, nanos }
    }

    /// Microseconds since the Unix epoch (sub-microsecond digits dropped), or `None` when the
    /// value does not fit in an `i64` of microseconds (about ±292,000 years).
    pub fn to_unix_micros(self) -> Option<i64> {
        self.seconds
            .checked_mul(1_000_000)?
            .checked_add(i64::from(self.nanos / 1_000))
    }
}

/// A typed value: property values, query parameters and query results.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent value. As a property value in an upsert it removes the property.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit signed integer (never silently turned into a float).
    Int(i64),
    /// IEEE 754 double.
    Float(f64),
    /// UTF-8 string.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Ordered list.
    List(Vec<Value>),
    /// String-keyed map (parameters and results only, never a stored property).
    Map(BTreeMap<String, Value>),
    /// A node (results only).
    Node(Node),
    /// A relationship (results only).
    Relationship(Relationship),
    /// A path (results only).
    Path(Path),
    /// A point in time.
    Timestamp(Timestamp),
}

impl Value {
    /// Short name of the value's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Node(_) => "node",
            Value::Relationship(_) => "relationship",
            Value::Path(_) => "path",
            Value::Timestamp(_) => "timestamp",
        }
    }
}

/// Properties of a node or relationship, sorted by name.
pub type Properties = BTreeMap<String, Value>;

/// A node as returned by queries.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// The node's unique key; empty for nodes created without one (not through `upsert`).
    pub key: String,
    /// Labels, sorted.
    pub labels: Vec<String>,
    /// Properties, without the reserved `key` property.
    pub properties: Properties,
}

/// A relationship as returned by queries.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Relationship {
    /// Relationship type.
    pub rel_type: String,
    /// Key of the start node.
    pub start_key: String,
    /// Key of the end node.
    pub end_key: String,
    /// Properties.
    pub properties: Properties,
}

/// A path: `relationships[i]` connects `nodes[i]` and `nodes[i + 1]`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Path {
    /// Nodes along the path, start first.
    pub nodes: Vec<Node>,
    /// Relationships along the path.
    pub relationships: Vec<Relationship>,
}

/// A node to create or merge; identity is `key` alone.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NodeInput {
    /// Unique key (identifier rule).
    pub key: String,
    /// Labels to add (never removed by an upsert).
    pub labels: Vec<String>,
    /// Properties to set; `Value::Null` removes one.
    pub properties: Properties,
}

/// A relationship to create or merge; identity is `(start_key, rel_type, end_key)`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RelInput {
    /// Key of the start node.
    pub start_key: String,
    /// Relationship type (identifier rule).
    pub rel_type: String,
    /// Key of the end node.
    pub end_key: String,
    /// Properties to set; `Value::Null` removes one.
    pub properties: Properties,
}

/// Everything one upsert writes, in one transaction.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct UpsertBatch {
    /// Nodes, merged in order.
    pub nodes: Vec<NodeInput>,
    /// Relationships, merged in order after the nodes.
    pub rels: Vec<RelInput>,
}

/// What an upsert changed.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpsertCounts {
    /// Nodes that did not exist before.
    pub nodes_created: u64,
    /// Nodes that existed and were merged.
    pub nodes_updated: u64,
    /// Relationships that did not exist before.
    pub rels_created: u64,
    /// Relationships that existed and were merged.
    pub rels_updated: u64,
}

/// A read-only query.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadQuery {
    /// openCypher text.
    pub cypher: String,
    /// Parameters referenced as `$name`.
    pub params: BTreeMap<String, Value>,
    /// Maximum rows to return (already resolved: 1..=`MAX_ROW_LIMIT`).
    pub row_limit: u32,
    /// When the caller stops waiting; `None` means the backend's own cap only.
    pub deadline: Option<Instant>,
    /// Who asks (the token's subject), for per-caller admission; `None` is the service's own
    /// work (see [`crate::admission`]).
    pub caller: Option<String>,
}

/// Rows of a query.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// True when the query produced more rows than `row_limit`.
    pub truncated: bool,
}

/// A relationship to delete, identified by `(start_key, rel_type, end_key)`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RelRef {
    /// Key of the start node.
    pub start_key: String,
    /// Relationship type.
    pub rel_type: String,
    /// Key of the end node.
    pub end_key: String,
}

/// Everything one delete removes, in one transaction.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteBatch {
    /// Keys of nodes to delete.
    pub node_keys: Vec<String>,
    /// Relationships to delete (removed before the nodes).
    pub rels: Vec<RelRef>,
    /// Also delete the remaining relationships of the deleted nodes.
    pub detach: bool,
}

/// What a delete removed.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteCounts {
    /// Nodes deleted.
    pub nodes_deleted: u64,
    /// Relationships deleted, including those removed by `detach`.
    pub rels_deleted: u64,
    /// Node keys and relationships of the request that did not exist.
    pub not_found: u64,
}

/// Size of the graph.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    /// Number of nodes.
    pub node_count: u64,
    /// Number of relationships.
    pub rel_count: u64,
    /// Nodes per label (a node with two labels counts for both).
    pub label_counts: BTreeMap<String, u64>,
    /// Relationships per type.
    pub type_counts: BTreeMap<String, u64>,
    /// `2 × rel_count / node_count`, 0 for an empty graph.
    pub average_degree: f64,
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn timestamp_micros_round_trip_including_negative() {
        for micros in [0_i64, 1, -1, 1_700_000_000_123_456, -1_234_567] {
            let ts = Timestamp::from_unix_micros(micros);
            assert!(ts.nanos < 1_000_000_000);
            assert_eq!(ts.to_unix_micros(), Some(micros));
        }
        assert_eq!(
            Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }
            .to_unix_micros(),
            None
        );
    }
}
