//! Request limits shared by every backend and by the graph service (documented in graph.proto).

/// Maximum length of a key, label, relationship type, property name or parameter name.
pub const MAX_IDENTIFIER_LEN: usize = 64;
/// Maximum nodes in one upsert, and node keys in one delete.
pub const MAX_NODES_PER_REQUEST: usize = 1000;
/// Maximum relationships in one upsert or delete.
pub const MAX_RELS_PER_REQUEST: usize = 5000;
/// Maximum labels on one node input.
pub const MAX_LABELS_PER_NODE: usize = 16;
/// Maximum properties on one node or relationship input.
pub const MAX_PROPERTIES: usize = 64;
/// Maximum encoded size of one property value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Maximum length of a Cypher query.
pub const MAX_CYPHER_BYTES: usize = 64 * 1024;
/// Maximum parameters of one query.
pub const MAX_PARAMS: usize = 256;
/// Row limit used when the request asks for 0.
pub const DEFAULT_ROW_LIMIT: u32 = 1000;
/// Largest row limit a request may ask for.
pub const MAX_ROW_LIMIT: u32 = 10_000;
/// The reserved node property that holds the node key.
pub const KEY_PROPERTY: &str = "key";
