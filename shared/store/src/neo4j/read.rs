//! Read-only queries and metrics on Neo4j, as auto-commit transactions in READ access mode.
//!
//! Why auto-commit: neo4rs sends the access mode only on RUN (`mode: "r"`), never on BEGIN, and
//! Neo4j reads the mode of an explicit transaction from BEGIN alone, so an explicit "read"
//! transaction of neo4rs is a write transaction on the server (the test
//! `explicit_read_transactions_of_neo4rs_still_write` shows it). On an auto-commit RUN the mode
//! is the transaction's, and the server refuses writes with `Neo.ClientError.Statement.AccessMode`
//! (`server_refuses_a_write_that_passes_the_parser`). The caller's deadline goes to the server
//! as `tx_timeout`, so a query past it is stopped and rolled back there, not only abandoned here.

use std::collections::BTreeMap;

use grafeo_adapters::query::cypher::ast;
use neo4rs::{BoltType, DetachedRowStream, Graph, Query, Row};
use tokio::time::Instant;

use super::guard::{Failure, classify};
use super::values::{Decoder, NODE_LABEL, to_bolt};
use crate::error::StoreError;
use crate::model::{Metrics, QueryResult};

type Result<T> = std::result::Result<T, Failure>;

/// Column names of the statement's final `RETURN`, in order, as far as they can be read off
/// the syntax tree: the alias, or the text Neo4j names an unaliased column by for variables,
/// parameters and property accesses (`n`, `$p`, `n.name`); `None` for other unaliased items.
/// `None` overall for `RETURN *` and statements without a final `RETURN` (Neo4j sorts `*`
/// columns by name, and so does [`order`] without a hint).
pub(crate) fn columns(statement: &ast::Statement, cypher: &str) -> Option<Vec<Option<String>>> {
    let query = match statement {
        ast::Statement::Query(q) => q,
        ast::Statement::Union { queries, .. } => queries.first()?,
        _ => return None,
    };
    let ret = query.clauses.iter().rev().find_map(|c| match c {
        ast::Clause::Return(r) => Some(r),
        _ => None,
    })?;
    let ast::ReturnItems::Explicit(items) = &ret.items else {
        return None;
    };
    Some(
        items
            .iter()
            .map(|item| match (&item.alias, item.span) {
                (Some(alias), _) => Some(alias.clone()),
                (None, Some(span)) => cypher
                    .get(span.start..span.end)
                    .map(|s| s.trim().to_string()),
                (None, None) => name_of(&item.expression),
            })
            .collect(),
    )
}

fn name_of(e: &ast::Expression) -> Option<String> {
    match e {
        ast::Expression::Variable(v) => Some(v.clone()),
        ast::Expression::Parameter(p) => Some(format!("${p}")),
        ast::Expression::PropertyAccess { base, property } => {
            Some(format!("{}.{property}", name_of(base)?))
        }
        _ => None,
    }
}

/// Orders a row's column names: known names in their `RETURN` positions, the others (and
/// everything, without a hint or when the hint does not fit) by name.
fn order(row: &Row, expected: Option<&Vec<Option<String>>>) -> Vec<String> {
    let mut names: Vec<String> = row.keys().iter().map(|k| k.value.clone()).collect();
    names.sort();
    let Some(expected) = expected.filter(|e| e.len() == names.len()) else {
        return names;
    };
    let known: Vec<&String> = expected.iter().flatten().collect();
    if !known.iter().all(|k| names.contains(k)) {
        return names;
    }
    let mut rest = names.iter().filter(|n| !known.contains(n));
    expected
        .iter()
        .map(|slot| match slot {
            Some(name) => Some(name.clone()),
            None => rest.next().cloned(),
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or(names)
}

/// Pulls up to `limit + 1` rows (the extra one only tells that more exist).
async fn pull(stream: &mut DetachedRowStream, limit: usize, context: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    while rows.len() <= limit {
        match stream.next().await.map_err(|e| classify(e, context))? {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    Ok(rows)
}

fn cell(row: &Row, column: &str) -> Result<BoltType> {
    row.get::<BoltType>(column).map_err(|e| {
        Failure::neutral(StoreError::Internal(format!(
            "cannot decode column `{column}`: {e}"
        )))
    })
}

/// One attempt of a query: run, pull, resolve relationship endpoints, decode.
pub(super) async fn query(
    graph: &Graph,
    cypher: &str,
    params: &BTreeMap<String, crate::Value>,
    expected: Option<&Vec<Option<String>>>,
    row_limit: usize,
    deadline: Instant,
) -> Result<QueryResult> {
    let mut q = Query::new(cypher.to_string());
    for (name, value) in params {
        q = q.param(name, to_bolt(&format!("parameters.{name}"), value)?);
    }
    let mut stream = graph
        .execute_read(q.extra("tx_timeout", timeout_ms(deadline)))
        .await
        .map_err(|e| classify(e, "query"))?;
    let mut rows = pull(&mut stream, row_limit, "query").await?;
    // Hand the connection back before the endpoint lookup needs one (the pool drains the rest).
    drop(stream);
    let truncated = rows.len() > row_limit;
    rows.truncate(row_limit);
    let columns = match rows.first() {
        Some(row) => order(row, expected),
        None => expected
            .map(|e| e.iter().flatten().cloned().collect())
            .unwrap_or_default(),
    };
    let mut cells = Vec::with_capacity(rows.len());
    let mut decoder = Decoder::default();
    let mut wanted = Vec::new();
    for row in &rows {
        let values = columns
            .iter()
            .map(|c| cell(row, c))
            .collect::<Result<Vec<_>>>()?;
        values.iter().for_each(|v| decoder.scan(v, &mut wanted));
        cells.push(values);
    }
    wanted.retain(|id| !decoder.knows(*id));
    wanted.sort_unstable();
    wanted.dedup();
    if !wanted.is_empty() {
        resolve_keys(graph, &mut decoder, &wanted, deadline).await?;
    }
    Ok(QueryResult {
        columns,
        rows: cells
            .iter()
            .map(|r| r.iter().map(|v| decoder.value(v)).collect())
            .collect(),
        truncated,
    })
}

fn timeout_ms(deadline: Instant) -> i64 {
    let left = deadline.saturating_duration_since(Instant::now());
    i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Keys of the endpoint nodes of relationships returned without their nodes. A node deleted
/// between the query and this lookup (a separate read) is reported with an empty key.
async fn resolve_keys(
    graph: &Graph,
    decoder: &mut Decoder,
    ids: &[i64],
    deadline: Instant,
) -> Result<()> {
    let mut list = neo4rs::BoltList::with_capacity(ids.len());
    ids.iter()
        .for_each(|id| list.push(BoltType::Integer((*id).into())));
    let q = Query::new("UNWIND $ids AS i MATCH (n) WHERE id(n) = i RETURN i, n.key AS k".into())
        .param("ids", BoltType::List(list))
        .extra("tx_timeout", timeout_ms(deadline));
    let mut stream = graph
        .execute_read(q)
        .await
        .map_err(|e| classify(e, "query"))?;
    for row in pull(&mut stream, ids.len(), "query").await? {
        let id: i64 = row.get("i").unwrap_or(-1);
        let key: Option<String> = row.get("k").unwrap_or(None);
        decoder.learn(id, key.unwrap_or_default());
    }
    Ok(())
}

/// Counts in one statement (one transaction, so they agree with each other).
const METRICS: &str = "CALL { MATCH (n) RETURN count(n) AS nodes } \
     CALL { MATCH ()-[r]->() RETURN count(r) AS rels } \
     CALL { MATCH (n) UNWIND labels(n) AS l WITH l, count(*) AS c RETURN collect([l, c]) AS labels } \
     CALL { MATCH ()-[r]->() WITH type(r) AS t, count(*) AS c RETURN collect([t, c]) AS types } \
     RETURN nodes, rels, labels, types";

fn pairs(v: &BoltType) -> BTreeMap<String, u64> {
    let BoltType::List(items) = v else {
        return BTreeMap::new();
    };
    items
        .value
        .iter()
        .filter_map(|pair| match pair {
            BoltType::List(p) => match (p.value.first(), p.value.get(1)) {
                (Some(BoltType::String(name)), Some(BoltType::Integer(n)))
                    if name.value != NODE_LABEL =>
                {
                    Some((name.value.clone(), u64::try_from(n.value).unwrap_or(0)))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

pub(super) async fn metrics(graph: &Graph, deadline: Instant) -> Result<Metrics> {
    let q = Query::new(METRICS.into()).extra("tx_timeout", timeout_ms(deadline));
    let mut stream = graph
        .execute_read(q)
        .await
        .map_err(|e| classify(e, "metrics"))?;
    let rows = pull(&mut stream, 1, "metrics").await?;
    let Some(row) = rows.first() else {
        return Err(Failure::neutral(StoreError::Internal(
            "metrics returned no row".into(),
        )));
    };
    let int = |c: &str| -> Result<u64> {
        match cell(row, c)? {
            BoltType::Integer(i) => Ok(u64::try_from(i.value).unwrap_or(0)),
            other => Err(Failure::neutral(StoreError::Internal(format!(
                "metrics `{c}` is {other:?}"
            )))),
        }
    };
    let node_count = int("nodes")?;
    let rel_count = int("rels")?;
    let average_degree = if node_count == 0 {
        0.0
    } else {
        2.0 * rel_count as f64 / node_count as f64
    };
    Ok(Metrics {
        node_count,
        rel_count,
        label_counts: pairs(&cell(row, "labels")?),
        type_counts: pairs(&cell(row, "types")?),
        average_degree,
    })
}

pub(super) async fn health(graph: &Graph) -> Result<()> {
    let q = Query::new("RETURN 1 AS one".into()).extra("tx_timeout", 5_000_i64);
    let mut stream = graph
        .execute_read(q)
        .await
        .map_err(|e| classify(e, "health"))?;
    pull(&mut stream, 1, "health").await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::columns;

    #[test]
    fn column_names_follow_the_return_clause() {
        let cases = [
            (
                "MATCH p = (a)-[r]->(b) RETURN a, r, p",
                Some(vec![Some("a"), Some("r"), Some("p")]),
            ),
            (
                "MATCH (n) RETURN n.i AS i, count(*), n.x",
                Some(vec![Some("i"), None, Some("n.x")]),
            ),
            ("MATCH (n) RETURN *", None),
        ];
        for (cypher, want) in cases {
            let statement = crate::readonly::check_parsed(cypher).expect(cypher);
            let want = want.map(|w| {
                w.into_iter()
                    .map(|c| c.map(String::from))
                    .collect::<Vec<_>>()
            });
            assert_eq!(columns(&statement, cypher), want, "{cypher}");
        }
    }
}
