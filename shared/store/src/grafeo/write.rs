//! Upsert and delete on Grafeo, through the session's direct write API inside one explicit
//! transaction (no Cypher text is built from caller input).

use std::collections::{HashMap, HashSet};

use grafeo::{EdgeId, GrafeoDB, NodeId, Session};
use grafeo_common::types::{PropertyKey, Value as GValue};

use super::convert::to_engine;
use super::engine_error;
use crate::error::StoreError;
use crate::limits::KEY_PROPERTY;
use crate::model::{DeleteBatch, DeleteCounts, Properties, UpsertBatch, UpsertCounts};

type Result<T> = std::result::Result<T, StoreError>;

/// Runs `work` in one transaction and commits it, or rolls everything back on the first error.
/// The caller holds the store's write lock, so the WAL record count can tell whether the commit
/// reached the log (Grafeo only logs a warning when writing the commit group fails).
pub(super) fn in_transaction<T>(
    db: &GrafeoDB,
    work: impl FnOnce(&Session) -> Result<T>,
) -> Result<T> {
    let mut session = db.session();
    session
        .begin_transaction()
        .map_err(|e| engine_error(e, "begin transaction"))?;
    let out = match work(&session) {
        Ok(out) => out,
        Err(e) => {
            if let Err(rollback) = session.rollback() {
                tracing::error!(error = %rollback, "graph transaction rollback failed");
            }
            return Err(e);
        }
    };
    let logged_before = db.wal().map(|w| w.record_count());
    session.commit().map_err(|e| engine_error(e, "commit"))?;
    let logged_after = db.wal().map(|w| w.record_count());
    if logged_before.is_some() && logged_before == logged_after {
        tracing::error!("graph commit was not written to the write-ahead log");
        return Err(StoreError::Unavailable(
            "the change could not be written to the write-ahead log".into(),
        ));
    }
    Ok(out)
}

pub(super) fn find_node(session: &Session, key: &str) -> Option<NodeId> {
    session
        .find_nodes_by_property(KEY_PROPERTY, &GValue::String(key.into()))
        .into_iter()
        .next()
}

/// The relationship of `rel_type` from `start` to `end`, if it exists (visible to the session).
fn find_edge(session: &Session, start: NodeId, rel_type: &str, end: NodeId) -> Option<EdgeId> {
    session
        .get_neighbors_outgoing(start)
        .into_iter()
        .filter(|(dst, _)| *dst == end)
        .find_map(|(_, edge)| {
            session
                .get_edge(edge)
                .filter(|e| e.edge_type.as_str() == rel_type)
                .map(|e| e.id)
        })
}

/// Live relationships touching `node` (adjacency may still list ones deleted in this
/// transaction, so each is checked through the versioned lookup; self-loops count once).
fn live_edges(session: &Session, node: NodeId) -> Vec<EdgeId> {
    let mut seen = HashSet::new();
    session
        .get_neighbors_outgoing(node)
        .into_iter()
        .chain(session.get_neighbors_incoming(node))
        .filter(|(_, edge)| seen.insert(*edge) && session.get_edge(*edge).is_some())
        .map(|(_, edge)| edge)
        .collect()
}

/// Property changes of one input: values to set, and names to remove (given as null).
type PropertyChanges = (Vec<(String, GValue)>, Vec<String>);

/// Properties to set (non-null) and names to remove (null), converted for the engine.
fn split_properties(field: &str, props: &Properties) -> Result<PropertyChanges> {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (name, value) in props {
        let converted = to_engine(&format!("{field}.{name}"), value)?;
        if converted.is_null() {
            remove.push(name.clone());
        } else {
            set.push((name.clone(), converted));
        }
    }
    Ok((set, remove))
}

pub(super) fn upsert(db: &GrafeoDB, batch: &UpsertBatch) -> Result<UpsertCounts> {
    in_transaction(db, |session| {
        let mut counts = UpsertCounts::default();
        let mut ids: HashMap<&str, NodeId> = HashMap::new();
        let ctx = |what: &'static str| move |e| engine_error(e, what);

        for (i, input) in batch.nodes.iter().enumerate() {
            let (set, remove) =
                split_properties(&format!("nodes[{i}].properties"), &input.properties)?;
            let existing = ids
                .get(input.key.as_str())
                .copied()
                .or_else(|| find_node(session, &input.key));
            let id = match existing {
                Some(id) => {
                    let current: HashSet<String> = session
                        .get_node(id)
                        .map(|n| n.labels.iter().map(|l| l.to_string()).collect())
                        .unwrap_or_default();
                    for label in input.labels.iter().filter(|l| !current.contains(*l)) {
                        session
                            .add_node_label(id, label)
                            .map_err(ctx("add label"))?;
                    }
                    for (name, value) in set {
                        session
                            .set_node_property(id, &name, value)
                            .map_err(ctx("set node property"))?;
                    }
                    for name in remove {
                        session
                            .remove_node_property(id, &name)
                            .map_err(ctx("remove node property"))?;
                    }
                    counts.nodes_updated += 1;
                    id
                }
                None => {
                    let mut labels: Vec<&str> = input.labels.iter().map(String::as_str).collect();
                    labels.sort_unstable();
                    labels.dedup();
                    let props = set
                        .into_iter()
                        .map(|(k, v)| (PropertyKey::new(k), v))
                        .chain([(
                            PropertyKey::new(KEY_PROPERTY),
                            GValue::String(input.key.as_str().into()),
                        )]);
                    let id = session
                        .create_node_with_props(&labels, props)
                        .map_err(ctx("create node"))?;
                    counts.nodes_created += 1;
                    id
                }
            };
            ids.insert(input.key.as_str(), id);
        }

        for (i, rel) in batch.rels.iter().enumerate() {
            let endpoint = |key: &str, side: &str| -> Result<NodeId> {
                if let Some(id) = ids.get(key) {
                    return Ok(*id);
                }
                find_node(session, key).ok_or_else(|| StoreError::MissingEndpoint {
                    field: format!("relationships[{i}].{side}"),
                    key: key.to_string(),
                })
            };
            let start = endpoint(&rel.start_key, "start_key")?;
            let end = endpoint(&rel.end_key, "end_key")?;
            let (set, remove) =
                split_properties(&format!("relationships[{i}].properties"), &rel.properties)?;
            match find_edge(session, start, &rel.rel_type, end) {
                Some(edge) => {
                    for (name, value) in set {
                        session
                            .set_edge_property(edge, &name, value)
                            .map_err(ctx("set relationship property"))?;
                    }
                    for name in remove {
                        session
                            .remove_edge_property(edge, &name)
                            .map_err(ctx("remove relationship property"))?;
                    }
                    counts.rels_updated += 1;
                }
                None => {
                    let props = set.into_iter().map(|(k, v)| (PropertyKey::new(k), v));
                    session
                        .create_edge_with_props(start, end, &rel.rel_type, props)
                        .map_err(ctx("create relationship"))?;
                    counts.rels_created += 1;
                }
            }
        }
        Ok(counts)
    })
}

pub(super) fn delete(db: &GrafeoDB, batch: &DeleteBatch) -> Result<DeleteCounts> {
    in_transaction(db, |session| {
        let mut counts = DeleteCounts::default();
        let ctx = |what: &'static str| move |e| engine_error(e, what);

        for rel in &batch.rels {
            let edge = match (
                find_node(session, &rel.start_key),
                find_node(session, &rel.end_key),
            ) {
                (Some(start), Some(end)) => find_edge(session, start, &rel.rel_type, end),
                _ => None,
            };
            match edge {
                Some(edge) => {
                    session
                        .delete_edge(edge)
                        .map_err(ctx("delete relationship"))?;
                    counts.rels_deleted += 1;
                }
                None => counts.not_found += 1,
            }
        }

        for key in &batch.node_keys {
            let Some(node) = find_node(session, key) else {
                counts.not_found += 1;
                continue;
            };
            let edges = live_edges(session, node);
            if !edges.is_empty() {
                if !batch.detach {
                    return Err(StoreError::NodeHasRelationships {
                        key: key.clone(),
                        count: edges.len() as u64,
                    });
                }
                for edge in edges {
                    session
                        .delete_edge(edge)
                        .map_err(ctx("delete relationship"))?;
                    counts.rels_deleted += 1;
                }
            }
            if session.delete_node(node).map_err(ctx("delete node"))? {
                counts.nodes_deleted += 1;
            } else {
                counts.not_found += 1;
            }
        }
        Ok(counts)
    })
}
