//! Upsert and delete on Neo4j: each request is one explicit write transaction of a few
//! `UNWIND` statements over parameter lists. Labels and relationship types are the only names
//! put into Cypher text: they passed `validate::identifier` and are backtick-quoted.
//!
//! Counts (created vs updated, not found) are decided from what existed when the transaction
//! began, read inside the same transaction, so a retried request counts the same way.

use std::collections::HashSet;

use neo4rs::{BoltList, BoltType, Query, Row, Txn};

use super::guard::{Failure, classify};
use super::values::{NODE_LABEL, bolt_map, bolt_str, map_to_bolt, quoted};
use crate::error::StoreError;
use crate::model::{DeleteBatch, DeleteCounts, RelInput, UpsertBatch, UpsertCounts};

type Result<T> = std::result::Result<T, Failure>;

/// Runs `q` in `txn` and collects its rows.
pub(super) async fn rows(txn: &mut Txn, q: Query, context: &str) -> Result<Vec<Row>> {
    let mut stream = txn.execute(q).await.map_err(|e| classify(e, context))?;
    let mut out = Vec::new();
    while let Some(row) = stream
        .next(txn.handle())
        .await
        .map_err(|e| classify(e, context))?
    {
        out.push(row);
    }
    Ok(out)
}

fn list(items: impl IntoIterator<Item = BoltType>) -> BoltType {
    let mut l = BoltList::new();
    for item in items {
        l.push(item);
    }
    BoltType::List(l)
}

fn get<'r, T: serde::Deserialize<'r>>(row: &'r Row, column: &str) -> Result<T> {
    row.get::<T>(column).map_err(|e| {
        Failure::neutral(StoreError::Internal(format!(
            "unexpected neo4j answer in `{column}`: {e}"
        )))
    })
}

/// Keys among `keys` that exist (as keyed nodes).
async fn existing_keys(txn: &mut Txn, keys: &[&str]) -> Result<HashSet<String>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let q = Query::new(format!(
        "UNWIND $keys AS k MATCH (x:{} {{key: k}}) RETURN x.key AS k",
        quoted(NODE_LABEL)
    ))
    .param("keys", list(keys.iter().map(|k| bolt_str(k))));
    rows(txn, q, "upsert")
        .await?
        .iter()
        .map(|r| get::<String>(r, "k"))
        .collect()
}

/// Consecutive runs of items sharing `group(item)`: one statement per run keeps the request's
/// order (a later input for the same key wins) with labels or types fixed in the text.
fn runs<T, G: PartialEq>(items: &[T], group: impl Fn(&T) -> G) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        if i == items.len() || group(&items[i]) != group(&items[start]) {
            if start < i {
                out.push((start, i));
            }
            start = i;
        }
    }
    out
}

pub(super) async fn upsert(txn: &mut Txn, batch: &UpsertBatch) -> Result<UpsertCounts> {
    let mut counts = UpsertCounts::default();
    let mut keys: Vec<&str> = batch.nodes.iter().map(|n| n.key.as_str()).collect();
    keys.extend(
        batch
            .rels
            .iter()
            .flat_map(|r| [r.start_key.as_str(), r.end_key.as_str()]),
    );
    keys.sort_unstable();
    keys.dedup();
    let mut known = existing_keys(txn, &keys).await?;

    for n in &batch.nodes {
        if known.insert(n.key.clone()) {
            counts.nodes_created += 1;
        } else {
            counts.nodes_updated += 1;
        }
    }
    let label_set = |i: usize| {
        let mut l: Vec<&str> = batch.nodes[i].labels.iter().map(String::as_str).collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let indices: Vec<usize> = (0..batch.nodes.len()).collect();
    for (start, end) in runs(&indices, |i| label_set(*i)) {
        let mut set_labels = String::new();
        for label in label_set(start) {
            set_labels.push_str(&format!(" SET x:{}", quoted(label)));
        }
        let mut items = Vec::with_capacity(end - start);
        for i in start..end {
            let n = &batch.nodes[i];
            let props = map_to_bolt(&format!("nodes[{i}].properties"), &n.properties)?;
            items.push(bolt_map([
                ("key", bolt_str(&n.key)),
                ("props", BoltType::Map(props)),
            ]));
        }
        let q = Query::new(format!(
            "UNWIND $rows AS r MERGE (x:{} {{key: r.key}}) SET x += r.props{set_labels}",
            quoted(NODE_LABEL)
        ))
        .param("rows", list(items));
        rows(txn, q, "upsert").await?;
    }

    for (i, rel) in batch.rels.iter().enumerate() {
        for (side, key) in [("start_key", &rel.start_key), ("end_key", &rel.end_key)] {
            if !known.contains(key) {
                return Err(Failure::caller(StoreError::MissingEndpoint {
                    field: format!("relationships[{i}].{side}"),
                    key: key.clone(),
                }));
            }
        }
    }
    if !batch.rels.is_empty() {
        upsert_rels(txn, batch, &mut counts).await?;
    }
    Ok(counts)
}

/// The relationships of an upsert whose endpoints all exist (checked by the caller).
async fn upsert_rels(txn: &mut Txn, batch: &UpsertBatch, counts: &mut UpsertCounts) -> Result<()> {
    let mut existing = existing_rels(txn, &batch.rels).await?;
    for rel in &batch.rels {
        if existing.insert(triple(rel)) {
            counts.rels_created += 1;
        } else {
            counts.rels_updated += 1;
        }
    }
    for (start, end) in runs(&batch.rels, |r| r.rel_type.clone()) {
        let mut items = Vec::with_capacity(end - start);
        for i in start..end {
            let r = &batch.rels[i];
            let props = map_to_bolt(&format!("relationships[{i}].properties"), &r.properties)?;
            items.push(bolt_map([
                ("s", bolt_str(&r.start_key)),
                ("e", bolt_str(&r.end_key)),
                ("props", BoltType::Map(props)),
            ]));
        }
        let node = quoted(NODE_LABEL);
        let q = Query::new(format!(
            "UNWIND $rows AS r MATCH (a:{node} {{key: r.s}}) MATCH (b:{node} {{key: r.e}}) \
             MERGE (a)-[x:{}]->(b) SET x += r.props",
            quoted(&batch.rels[start].rel_type)
        ))
        .param("rows", list(items));
        rows(txn, q, "upsert").await?;
    }
    Ok(())
}

fn triple(r: &RelInput) -> (String, String, String) {
    (r.start_key.clone(), r.rel_type.clone(), r.end_key.clone())
}

fn rel_refs<'a>(refs: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> BoltType {
    list(
        refs.map(|(s, t, e)| {
            bolt_map([("s", bolt_str(s)), ("t", bolt_str(t)), ("e", bolt_str(e))])
        }),
    )
}

async fn existing_rels(
    txn: &mut Txn,
    rels: &[RelInput],
) -> Result<HashSet<(String, String, String)>> {
    let node = quoted(NODE_LABEL);
    let q = Query::new(format!(
        "UNWIND $rels AS r MATCH (:{node} {{key: r.s}})-[x]->(:{node} {{key: r.e}}) \
         WHERE type(x) = r.t RETURN DISTINCT r.s AS s, r.t AS t, r.e AS e"
    ))
    .param(
        "rels",
        rel_refs(rels.iter().map(|r| {
            (
                r.start_key.as_str(),
                r.rel_type.as_str(),
                r.end_key.as_str(),
            )
        })),
    );
    rows(txn, q, "upsert")
        .await?
        .iter()
        .map(|r| Ok((get(r, "s")?, get(r, "t")?, get(r, "e")?)))
        .collect()
}

fn count(rows: &[Row]) -> Result<u64> {
    match rows.first() {
        Some(r) => Ok(u64::try_from(get::<i64>(r, "c")?).unwrap_or(0)),
        None => Ok(0),
    }
}

pub(super) async fn delete(txn: &mut Txn, batch: &DeleteBatch) -> Result<DeleteCounts> {
    let mut counts = DeleteCounts::default();
    let node = quoted(NODE_LABEL);

    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    for r in &batch.rels {
        let t = (
            r.start_key.as_str(),
            r.rel_type.as_str(),
            r.end_key.as_str(),
        );
        if seen.insert(t) {
            unique.push(t);
        } else {
            counts.not_found += 1;
        }
    }
    if !unique.is_empty() {
        let q = Query::new(format!(
            "UNWIND $rels AS r MATCH (:{node} {{key: r.s}})-[x]->(:{node} {{key: r.e}}) \
             WHERE type(x) = r.t DELETE x RETURN count(*) AS c"
        ))
        .param("rels", rel_refs(unique.iter().copied()));
        let deleted = count(&rows(txn, q, "delete").await?)?;
        counts.rels_deleted += deleted;
        counts.not_found += unique.len() as u64 - deleted.min(unique.len() as u64);
    }

    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for k in &batch.node_keys {
        if seen.insert(k.as_str()) {
            keys.push(k.as_str());
        } else {
            counts.not_found += 1;
        }
    }
    if keys.is_empty() {
        return Ok(counts);
    }
    let key_list = || list(keys.iter().map(|k| bolt_str(k)));
    if batch.detach {
        let q = Query::new(format!(
            "UNWIND $keys AS k MATCH (x:{node} {{key: k}})-[r]-() RETURN count(DISTINCT r) AS c"
        ))
        .param("keys", key_list());
        counts.rels_deleted += count(&rows(txn, q, "delete").await?)?;
    } else {
        // The first node of the request (in its order) that still has relationships.
        let q = Query::new(format!(
            "UNWIND range(0, size($keys) - 1) AS i MATCH (x:{node} {{key: $keys[i]}})-[r]-() \
             WITH i, count(DISTINCT r) AS d RETURN i, d ORDER BY i LIMIT 1"
        ))
        .param("keys", key_list());
        if let Some(row) = rows(txn, q, "delete").await?.first() {
            let i = usize::try_from(get::<i64>(row, "i")?).unwrap_or(0);
            return Err(Failure::caller(StoreError::NodeHasRelationships {
                key: keys.get(i).map_or_else(String::new, |k| (*k).to_string()),
                count: u64::try_from(get::<i64>(row, "d")?).unwrap_or(0),
            }));
        }
    }
    let q = Query::new(format!(
        "UNWIND $keys AS k MATCH (x:{node} {{key: k}}) DETACH DELETE x RETURN count(*) AS c"
    ))
    .param("keys", key_list());
    let deleted = count(&rows(txn, q, "delete").await?)?;
    counts.nodes_deleted += deleted;
    counts.not_found += keys.len() as u64 - deleted.min(keys.len() as u64);
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_keep_order_and_group_neighbours_only() {
        assert_eq!(runs(&[1, 1, 2, 1], |x| *x), vec![(0, 2), (2, 3), (3, 4)]);
        assert!(runs::<i32, i32>(&[], |x| *x).is_empty());
    }
}
