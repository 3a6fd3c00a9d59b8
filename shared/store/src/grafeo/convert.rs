//! Conversions between the domain [`Value`] and Grafeo's value type.
//!
//! Grafeo returns nodes and relationships in results as maps with metadata entries (`_id`,
//! `_labels` for nodes; `_id`, `_type`, `_source`, `_target` for relationships) next to the
//! properties; property names starting with `_` are refused on input so these maps are never
//! ambiguous for stored data. Relationship endpoints come back as internal node ids, which are
//! resolved to keys through the reading session.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use grafeo::{NodeId, Session};
use grafeo_common::types::{LogicalType, PropertyKey, Timestamp as GTimestamp, Value as GValue};

use crate::error::StoreError;
use crate::limits::KEY_PROPERTY;
use crate::model::{Node, Path, Properties, Relationship, Timestamp, Value};

/// Converts a domain value (already validated) into a Grafeo value. `field` names it in errors.
pub(crate) fn to_engine(field: &str, v: &Value) -> Result<GValue, StoreError> {
    Ok(match v {
        Value::Null => GValue::Null,
        Value::Bool(b) => GValue::Bool(*b),
        Value::Int(i) => GValue::Int64(*i),
        Value::Float(f) => GValue::Float64(*f),
        Value::String(s) => GValue::String(s.as_str().into()),
        Value::Bytes(b) => GValue::Bytes(Arc::from(b.as_slice())),
        Value::Timestamp(ts) => GValue::Timestamp(GTimestamp::from_micros(
            ts.to_unix_micros().ok_or_else(|| {
                StoreError::invalid(
                    field,
                    "timestamp is out of range; allowed: about ±292,000 years around 1970",
                )
            })?,
        )),
        Value::List(items) => GValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_engine(&format!("{field}[{i}]"), item))
                .collect::<Result<Vec<_>, _>>()?
                .into(),
        ),
        Value::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, item) in m {
                out.insert(
                    PropertyKey::new(k.as_str()),
                    to_engine(&format!("{field}.{k}"), item)?,
                );
            }
            GValue::Map(Arc::new(out))
        }
        Value::Node(_) | Value::Relationship(_) | Value::Path(_) => {
            return Err(StoreError::invalid(
                field,
                format!("a {} cannot be sent to the store", v.kind_name()),
            ));
        }
    })
}

/// Turns Grafeo result values into domain values, resolving node ids to keys with the reading
/// session (cached, since the same endpoints tend to repeat across rows).
pub(crate) struct ResultDecoder<'a> {
    session: &'a Session,
    keys: HashMap<u64, String>,
}

impl<'a> ResultDecoder<'a> {
    pub(crate) fn new(session: &'a Session) -> Self {
        Self {
            session,
            keys: HashMap::new(),
        }
    }

    /// Decodes one cell; `ty` is the column's declared type (it tells bare ids of nodes and
    /// relationships apart from integers).
    pub(crate) fn cell(&mut self, ty: Option<&LogicalType>, v: &GValue) -> Value {
        match (ty, v) {
            (Some(LogicalType::Node), GValue::Int64(id)) => self.node_by_id(*id),
            (Some(LogicalType::Edge), GValue::Int64(id)) => self.edge_by_id(*id),
            _ => self.value(v),
        }
    }

    fn value(&mut self, v: &GValue) -> Value {
        match v {
            GValue::Null => Value::Null,
            GValue::Bool(b) => Value::Bool(*b),
            GValue::Int64(i) => Value::Int(*i),
            GValue::Float64(f) => Value::Float(*f),
            GValue::String(s) => Value::String(s.to_string()),
            GValue::Bytes(b) => Value::Bytes(b.to_vec()),
            GValue::Timestamp(ts) => Value::Timestamp(Timestamp::from_unix_micros(ts.as_micros())),
            GValue::ZonedDatetime(z) => {
                Value::Timestamp(Timestamp::from_unix_micros(z.as_timestamp().as_micros()))
            }
            // The API has no date, time-of-day or duration kinds: they are returned in their
            // ISO 8601 text form rather than dropped.
            GValue::Date(_) | GValue::Time(_) | GValue::Duration(_) => Value::String(v.to_string()),
            GValue::Vector(xs) => {
                Value::List(xs.iter().map(|x| Value::Float(f64::from(*x))).collect())
            }
            GValue::List(items) => Value::List(items.iter().map(|i| self.value(i)).collect()),
            GValue::Map(m) => self.map(m),
            GValue::Path { nodes, edges } => {
                let mut path = Path::default();
                // Paths hold bare ids (Grafeo 0.5.44) or entity maps; accept both.
                for n in nodes.iter() {
                    if let Value::Node(node) = self.cell(Some(&LogicalType::Node), n) {
                        path.nodes.push(node);
                    }
                }
                for e in edges.iter() {
                    if let Value::Relationship(rel) = self.cell(Some(&LogicalType::Edge), e) {
                        path.relationships.push(rel);
                    }
                }
                Value::Path(path)
            }
            // Counters and any kind added by a later engine version: their text form.
            other => Value::String(other.to_string()),
        }
    }

    fn map(&mut self, m: &BTreeMap<PropertyKey, GValue>) -> Value {
        let get = |name: &str| m.get(&PropertyKey::new(name));
        let is_node = matches!(get("_id"), Some(GValue::Int64(_)))
            && matches!(get("_labels"), Some(GValue::List(_)));
        let is_rel = matches!(get("_id"), Some(GValue::Int64(_)))
            && matches!(get("_type"), Some(GValue::String(_)))
            && matches!(get("_source"), Some(GValue::Int64(_)))
            && matches!(get("_target"), Some(GValue::Int64(_)));
        if is_node {
            let labels = match get("_labels") {
                Some(GValue::List(ls)) => ls
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let key = match get(KEY_PROPERTY) {
                Some(GValue::String(s)) => s.to_string(),
                _ => String::new(),
            };
            let props = m
                .iter()
                .filter(|(k, _)| !is_metadata(k.as_str()) && k.as_str() != KEY_PROPERTY)
                .map(|(k, v)| (k.as_str().to_string(), self.value(v)))
                .collect();
            return Value::Node(node(key, labels, props));
        }
        if is_rel {
            let id_of = |name: &str| match get(name) {
                Some(GValue::Int64(i)) => u64::try_from(*i).ok(),
                _ => None,
            };
            let rel_type = match get("_type") {
                Some(GValue::String(s)) => s.to_string(),
                _ => String::new(),
            };
            let (src, dst) = (id_of("_source"), id_of("_target"));
            let properties = m
                .iter()
                .filter(|(k, _)| !is_metadata(k.as_str()))
                .map(|(k, v)| (k.as_str().to_string(), self.value(v)))
                .collect();
            return Value::Relationship(Relationship {
                rel_type,
                start_key: self.key_of(src),
                end_key: self.key_of(dst),
                properties,
            });
        }
        Value::Map(
            m.iter()
                .map(|(k, v)| (k.as_str().to_string(), self.value(v)))
                .collect(),
        )
    }

    fn key_of(&mut self, id: Option<u64>) -> String {
        let Some(id) = id else {
            return String::new();
        };
        if let Some(k) = self.keys.get(&id) {
            return k.clone();
        }
        let key = match self
            .session
            .get_node_property(NodeId::new(id), KEY_PROPERTY)
        {
            Some(GValue::String(s)) => s.to_string(),
            _ => String::new(),
        };
        self.keys.insert(id, key.clone());
        key
    }

    fn node_by_id(&mut self, id: i64) -> Value {
        let Ok(raw) = u64::try_from(id) else {
            return Value::Null;
        };
        match self.session.get_node(NodeId::new(raw)) {
            None => Value::Null,
            Some(n) => {
                let key = match n.properties.get(&PropertyKey::new(KEY_PROPERTY)) {
                    Some(GValue::String(s)) => s.to_string(),
                    _ => String::new(),
                };
                let labels = n.labels.iter().map(|l| l.to_string()).collect();
                let props = n
                    .properties
                    .iter()
                    .filter(|(k, _)| k.as_str() != KEY_PROPERTY)
                    .map(|(k, v)| (k.as_str().to_string(), self.value(v)))
                    .collect();
                Value::Node(node(key, labels, props))
            }
        }
    }

    fn edge_by_id(&mut self, id: i64) -> Value {
        let Ok(raw) = u64::try_from(id) else {
            return Value::Null;
        };
        match self.session.get_edge(grafeo::EdgeId::new(raw)) {
            None => Value::Null,
            Some(e) => {
                let properties = e
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), self.value(v)))
                    .collect();
                Value::Relationship(Relationship {
                    rel_type: e.edge_type.to_string(),
                    start_key: self.key_of(Some(e.src.as_u64())),
                    end_key: self.key_of(Some(e.dst.as_u64())),
                    properties,
                })
            }
        }
    }
}

fn is_metadata(name: &str) -> bool {
    matches!(name, "_id" | "_labels" | "_type" | "_source" | "_target")
}

fn node(key: String, mut labels: Vec<String>, properties: Properties) -> Node {
    labels.sort();
    labels.dedup();
    Node {
        key,
        labels,
        properties,
    }
}
