//! Conversions between the domain [`Value`] and Bolt values, both ways.
//!
//! Results: integers, floats, strings, bytes, lists and maps map one to one; nodes carry their
//! key (the `key` property) and labels without the store's own [`NODE_LABEL`]; relationships
//! get their endpoint keys (resolved from the node ids Bolt sends, see [`Decoder`]); paths are
//! rebuilt from Bolt's node, relationship and index lists. Instants (`datetime()` with an offset
//! or a zone id) become [`Value::Timestamp`]; kinds the API has no type for come back in
//! ISO 8601 text, as on the embedded store: dates (`2024-01-31`), local date-times, times
//! of day, and durations (`PT3600.5S`: neo4rs exposes a duration's total length only, months
//! counted as 2,629,800 s and days as 86,400 s). Points become maps `{srid, x, y[, z]}`.
//! Parameters: timestamps are sent as UTC `datetime`s; nodes, relationships and paths
//! cannot be sent.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use neo4rs::{
    BoltBoolean, BoltBytes, BoltDateTime, BoltFloat, BoltInteger, BoltList, BoltMap, BoltNode,
    BoltNull, BoltPath, BoltString, BoltType,
};

use crate::error::StoreError;
use crate::limits::KEY_PROPERTY;
use crate::model::{Node, Path, Properties, Relationship, Timestamp, Value};

/// The label every node written through `upsert` carries, under the uniqueness constraint on
/// `key`. A `:` cannot appear in caller labels (see `validate::identifier`), so it never
/// collides; it is hidden from results and metrics.
pub const NODE_LABEL: &str = "umcp:Node";

/// `label` quoted for Cypher. Only for identifiers that passed `validate::identifier` (or the
/// constant above); backticks are doubled anyway, so nothing can escape the quotes.
pub(crate) fn quoted(label: &str) -> String {
    format!("`{}`", label.replace('`', "``"))
}

/// A domain value (already validated) as a Bolt parameter; `field` names it in errors.
pub(crate) fn to_bolt(field: &str, v: &Value) -> Result<BoltType, StoreError> {
    Ok(match v {
        Value::Null => BoltType::Null(BoltNull),
        Value::Bool(b) => BoltType::Boolean(BoltBoolean::new(*b)),
        Value::Int(i) => BoltType::Integer(BoltInteger::new(*i)),
        Value::Float(f) => BoltType::Float(BoltFloat::new(*f)),
        Value::String(s) => BoltType::String(BoltString::new(s)),
        Value::Bytes(b) => BoltType::Bytes(BoltBytes::new(bytes::Bytes::copy_from_slice(b))),
        Value::Timestamp(ts) => {
            let at = DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos).ok_or_else(|| {
                StoreError::invalid(field, "timestamp is out of the range Neo4j can store")
            })?;
            BoltType::DateTime(BoltDateTime::from(at))
        }
        Value::List(items) => {
            let mut list = BoltList::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                list.push(to_bolt(&format!("{field}[{i}]"), item)?);
            }
            BoltType::List(list)
        }
        Value::Map(m) => BoltType::Map(map_to_bolt(field, m)?),
        Value::Node(_) | Value::Relationship(_) | Value::Path(_) => {
            return Err(StoreError::invalid(
                field,
                format!("a {} cannot be sent to the store", v.kind_name()),
            ));
        }
    })
}

/// A map of domain values as a Bolt map (`Null` entries kept: in `SET n += $map` they remove).
pub(crate) fn map_to_bolt(field: &str, m: &BTreeMap<String, Value>) -> Result<BoltMap, StoreError> {
    let mut out = BoltMap::with_capacity(m.len());
    for (k, item) in m {
        out.put(BoltString::new(k), to_bolt(&format!("{field}.{k}"), item)?);
    }
    Ok(out)
}

/// Builds a Bolt map from `(name, value)` pairs of Bolt values.
pub(crate) fn bolt_map<const N: usize>(entries: [(&str, BoltType); N]) -> BoltType {
    let mut m = BoltMap::with_capacity(N);
    for (k, v) in entries {
        m.put(BoltString::new(k), v);
    }
    BoltType::Map(m)
}

/// A Bolt string.
pub(crate) fn bolt_str(s: &str) -> BoltType {
    BoltType::String(BoltString::new(s))
}

/// Node ids seen in a result that relationships point at, and the keys known for them.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    keys: HashMap<i64, String>,
}

impl Decoder {
    /// Remembers the keys of every node inside `v`, and collects the endpoint ids of
    /// relationships whose nodes are not in the result (to look up before decoding).
    pub(crate) fn scan(&mut self, v: &BoltType, wanted: &mut Vec<i64>) {
        match v {
            BoltType::Node(n) => {
                self.keys.insert(n.id.value, node_key(n));
            }
            BoltType::Relation(r) => {
                wanted.push(r.start_node_id.value);
                wanted.push(r.end_node_id.value);
            }
            BoltType::Path(p) => {
                for n in &p.nodes.value {
                    self.scan(n, wanted);
                }
            }
            BoltType::List(l) => l.value.iter().for_each(|i| self.scan(i, wanted)),
            BoltType::Map(m) => m.value.values().for_each(|i| self.scan(i, wanted)),
            _ => {}
        }
    }

    /// Whether `id`'s key is known.
    pub(crate) fn knows(&self, id: i64) -> bool {
        self.keys.contains_key(&id)
    }

    /// Records a key looked up separately.
    pub(crate) fn learn(&mut self, id: i64, key: String) {
        self.keys.insert(id, key);
    }

    fn key(&self, id: i64) -> String {
        self.keys.get(&id).cloned().unwrap_or_default()
    }

    /// Decodes one result value.
    pub(crate) fn value(&self, v: &BoltType) -> Value {
        match v {
            BoltType::Null(_) => Value::Null,
            BoltType::Boolean(b) => Value::Bool(b.value),
            BoltType::Integer(i) => Value::Int(i.value),
            BoltType::Float(f) => Value::Float(f.value),
            BoltType::String(s) => Value::String(s.value.clone()),
            BoltType::Bytes(b) => Value::Bytes(b.value.to_vec()),
            BoltType::List(l) => Value::List(l.value.iter().map(|i| self.value(i)).collect()),
            BoltType::Map(m) => Value::Map(self.map(m)),
            BoltType::Node(n) => Value::Node(node(n, |v| self.value(v))),
            BoltType::Relation(r) => Value::Relationship(Relationship {
                rel_type: r.typ.value.clone(),
                start_key: self.key(r.start_node_id.value),
                end_key: self.key(r.end_node_id.value),
                properties: self.map(&r.properties),
            }),
            // Only inside paths (decoded there with their endpoints); on its own it has none.
            BoltType::UnboundedRelation(r) => Value::Relationship(Relationship {
                rel_type: r.typ.value.clone(),
                properties: self.map(&r.properties),
                ..Relationship::default()
            }),
            BoltType::Path(p) => Value::Path(self.path(p)),
            BoltType::Point2D(p) => Value::Map(BTreeMap::from([
                ("srid".to_string(), Value::Int(p.sr_id.value)),
                ("x".to_string(), Value::Float(p.x.value)),
                ("y".to_string(), Value::Float(p.y.value)),
            ])),
            BoltType::Point3D(p) => Value::Map(BTreeMap::from([
                ("srid".to_string(), Value::Int(p.sr_id.value)),
                ("x".to_string(), Value::Float(p.x.value)),
                ("y".to_string(), Value::Float(p.y.value)),
                ("z".to_string(), Value::Float(p.z.value)),
            ])),
            temporal => decode_temporal(temporal),
        }
    }

    fn map(&self, m: &BoltMap) -> BTreeMap<String, Value> {
        m.value
            .iter()
            .map(|(k, v)| (k.value.clone(), self.value(v)))
            .collect()
    }

    /// Bolt sends a path as its distinct nodes and relationships plus an index list:
    /// `[rel₁, node₁, rel₂, node₂, …]`, relationship indices 1-based and negative when the
    /// relationship points backwards along the path, node indices 0-based.
    fn path(&self, p: &BoltPath) -> Path {
        let nodes: Vec<&BoltNode> = p
            .nodes
            .value
            .iter()
            .filter_map(|n| match n {
                BoltType::Node(n) => Some(n),
                _ => None,
            })
            .collect();
        let rels: Vec<&neo4rs::BoltUnboundedRelation> = p
            .rels
            .value
            .iter()
            .filter_map(|r| match r {
                BoltType::UnboundedRelation(r) => Some(r),
                _ => None,
            })
            .collect();
        let indices: Vec<i64> = p
            .indices
            .value
            .iter()
            .filter_map(|i| match i {
                BoltType::Integer(i) => Some(i.value),
                _ => None,
            })
            .collect();
        let decode_node = |n: &BoltNode| node(n, |v| self.value(v));
        let mut out = Path::default();
        let Some(first) = nodes.first() else {
            return out;
        };
        out.nodes.push(decode_node(first));
        let mut previous = *first;
        for pair in indices.chunks(2) {
            let [rel_index, node_index] = pair else { break };
            let rel = usize::try_from(rel_index.unsigned_abs())
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| rels.get(i));
            let next = usize::try_from(*node_index).ok().and_then(|i| nodes.get(i));
            let (Some(rel), Some(next)) = (rel, next) else {
                break;
            };
            let (start, end) = if *rel_index > 0 {
                (previous, *next)
            } else {
                (*next, previous)
            };
            out.relationships.push(Relationship {
                rel_type: rel.typ.value.clone(),
                start_key: node_key(start),
                end_key: node_key(end),
                properties: self.map(&rel.properties),
            });
            out.nodes.push(decode_node(next));
            previous = next;
        }
        out
    }
}

fn node_key(n: &BoltNode) -> String {
    match n.properties.value.get(KEY_PROPERTY) {
        Some(BoltType::String(s)) => s.value.clone(),
        _ => String::new(),
    }
}

fn node(n: &BoltNode, decode: impl Fn(&BoltType) -> Value) -> Node {
    let mut labels: Vec<String> = n
        .labels
        .value
        .iter()
        .filter_map(|l| match l {
            BoltType::String(s) if s.value != NODE_LABEL => Some(s.value.clone()),
            _ => None,
        })
        .collect();
    labels.sort();
    labels.dedup();
    let properties: Properties = n
        .properties
        .value
        .iter()
        .filter(|(k, _)| k.value != KEY_PROPERTY)
        .map(|(k, v)| (k.value.clone(), decode(v)))
        .collect();
    Node {
        key: node_key(n),
        labels,
        properties,
    }
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::Timestamp(Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos(),
    })
}

/// Temporal kinds (see the module docs); anything unknown becomes a descriptive string.
fn decode_temporal(v: &BoltType) -> Value {
    let text = |s: String| Value::String(s);
    match v {
        BoltType::DateTime(d) => match DateTime::<FixedOffset>::try_from(d) {
            Ok(at) => timestamp(at.with_timezone(&Utc)),
            Err(_) => Value::Null,
        },
        // Not `DateTime<Utc>::try_from`: neo4rs 0.9.0-rc.11 reads the zone's local seconds as
        // UTC there. Through the fixed offset, the zone is applied; a local time the zone
        // makes ambiguous or skips (daylight saving) comes back as text instead.
        BoltType::DateTimeZoneId(d) => match DateTime::<FixedOffset>::try_from(d) {
            Ok(at) => timestamp(at.with_timezone(&Utc)),
            Err(_) => match NaiveDateTime::try_from(d) {
                Ok(local) => text(format!(
                    "{}[{}]",
                    local.format("%Y-%m-%dT%H:%M:%S%.f"),
                    d.tz_id()
                )),
                Err(_) => Value::Null,
            },
        },
        BoltType::LocalDateTime(d) => match NaiveDateTime::try_from(d) {
            Ok(at) => text(at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Err(_) => Value::Null,
        },
        BoltType::Date(d) => match NaiveDate::try_from(d) {
            Ok(day) => text(day.format("%Y-%m-%d").to_string()),
            Err(_) => Value::Null,
        },
        BoltType::Time(t) => {
            let (time, offset): (NaiveTime, FixedOffset) = t.into();
            text(format!("{}{offset}", time.format("%H:%M:%S%.f")))
        }
        BoltType::LocalTime(t) => {
            let time: NaiveTime = t.into();
            text(time.format("%H:%M:%S%.f").to_string())
        }
        BoltType::Duration(d) => {
            let length: std::time::Duration = d.clone().into();
            let nanos = length.subsec_nanos();
            if nanos == 0 {
                text(format!("PT{}S", length.as_secs()))
            } else {
                let fraction = format!("{nanos:09}");
                text(format!(
                    "PT{}.{}S",
                    length.as_secs(),
                    fraction.trim_end_matches('0')
                ))
            }
        }
        other => text(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_through_bolt_kinds() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let v = to_bolt("p", &Value::Timestamp(ts)).expect("timestamp");
        assert_eq!(Decoder::default().value(&v), Value::Timestamp(ts));
        let list = Value::List(vec![Value::Int(i64::MAX), Value::Bytes(vec![0, 255])]);
        let v = to_bolt("p", &list).expect("list");
        assert_eq!(Decoder::default().value(&v), list);
        let err = to_bolt("p.x", &Value::Node(Node::default())).expect_err("node");
        assert!(matches!(err, StoreError::InvalidInput { field, .. } if field == "p.x"));
        assert_eq!(quoted("a`b"), "`a``b`");
    }
}
