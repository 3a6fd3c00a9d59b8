//! Read-only queries and metrics on Grafeo.

use std::collections::{BTreeMap, HashMap};

use grafeo::{GrafeoDB, Role, Session};
use grafeo_common::utils::error::{Error as GError, QueryErrorKind, TransactionError};

use super::convert::{ResultDecoder, to_engine};
use super::{engine_error, quirks};
use crate::error::StoreError;
use crate::model::{Metrics, QueryResult, ReadQuery};
use crate::readonly;

type Result<T> = std::result::Result<T, StoreError>;

/// A session the engine itself refuses writes in (the second layer under [`readonly::check`]).
fn read_session(db: &GrafeoDB) -> Session {
    db.session_with_role(Role::ReadOnly)
}

/// Runs a query that has passed validation. Blocking: call from a blocking thread.
pub(super) fn query(db: &GrafeoDB, q: &ReadQuery, max_query_time_secs: u64) -> Result<QueryResult> {
    let statement = readonly::check_parsed(&q.cypher)?;
    quirks::check_bare_parameters(&statement, &q.params)?;
    let mut params = HashMap::with_capacity(q.params.len());
    for (name, value) in &q.params {
        params.insert(
            name.clone(),
            to_engine(&format!("parameters.{name}"), value)?,
        );
    }
    let session = read_session(db);
    let result = session
        .execute_cypher_with_params(&q.cypher, params)
        .map_err(|e| query_error(e, max_query_time_secs))?;

    // Grafeo materialises the whole result before returning it; the limit bounds what is
    // decoded and sent (decoding resolves relationship endpoints to keys, the costly part).
    let limit = q.row_limit as usize;
    let rows = result.rows();
    let mut decoder = ResultDecoder::new(&session);
    let decoded = rows
        .iter()
        .take(limit)
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, v)| decoder.cell(result.column_types.get(i), v))
                .collect()
        })
        .collect();
    Ok(QueryResult {
        columns: result.columns.clone(),
        rows: decoded,
        truncated: rows.len() > limit,
    })
}

/// Maps an engine error from running caller-supplied Cypher.
fn query_error(err: GError, max_query_time_secs: u64) -> StoreError {
    match err {
        GError::Query(q) => match q.kind {
            QueryErrorKind::Lexer | QueryErrorKind::Syntax => {
                readonly::syntax_error(GError::Query(q))
            }
            QueryErrorKind::Timeout => StoreError::DeadlineExceeded(format!(
                "the query ran longer than the server's limit of {max_query_time_secs}s"
            )),
            QueryErrorKind::Semantic if q.message.contains("permission denied") => {
                StoreError::WriteInReadOnlyQuery {
                    clause: "a write".into(),
                    line: None,
                    column: None,
                }
            }
            QueryErrorKind::Semantic => readonly::syntax_error(GError::Query(q)),
            // Execution and planning errors about the query itself (a type error, a missing
            // parameter): the caller can fix them, so the engine's message is theirs to see.
            _ => StoreError::QueryFailed(q.message),
        },
        GError::Transaction(TransactionError::ReadOnly) => StoreError::WriteInReadOnlyQuery {
            clause: "a write".into(),
            line: None,
            column: None,
        },
        GError::TypeMismatch { expected, found } => {
            StoreError::QueryFailed(format!("type mismatch: expected {expected}, found {found}"))
        }
        GError::InvalidValue(msg) => StoreError::QueryFailed(format!("invalid value: {msg}")),
        other => engine_error(other, "query"),
    }
}

/// Counts through read-only Cypher so MVCC visibility is the same as for queries.
pub(super) fn metrics(db: &GrafeoDB) -> Result<Metrics> {
    let session = read_session(db);
    let run = |cypher: &str| {
        session
            .execute_cypher(cypher)
            .map_err(|e| engine_error(e, "metrics"))
    };
    let count = |cypher: &str| -> Result<u64> {
        let r = run(cypher)?;
        Ok(r.rows()
            .first()
            .and_then(|row| row.first())
            .and_then(|v| v.as_int64())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    };
    let grouped = |cypher: &str| -> Result<BTreeMap<String, u64>> {
        let r = run(cypher)?;
        Ok(r.rows()
            .iter()
            .filter_map(|row| {
                let name = row.first()?.as_str()?.to_string();
                let n = u64::try_from(row.get(1)?.as_int64()?).ok()?;
                Some((name, n))
            })
            .collect())
    };
    let node_count = count("MATCH (n) RETURN count(n)")?;
    let rel_count = count("MATCH ()-[r]->() RETURN count(r)")?;
    let label_counts = grouped("MATCH (n) UNWIND labels(n) AS l RETURN l, count(*)")?;
    let type_counts = grouped("MATCH ()-[r]->() RETURN type(r) AS t, count(*)")?;
    let average_degree = if node_count == 0 {
        0.0
    } else {
        2.0 * rel_count as f64 / node_count as f64
    };
    Ok(Metrics {
        node_count,
        rel_count,
        label_counts,
        type_counts,
        average_degree,
    })
}

/// Liveness: a trivial query through the engine.
pub(super) fn health(db: &GrafeoDB) -> Result<()> {
    read_session(db)
        .execute_cypher("RETURN 1")
        .map(|_| ())
        .map_err(|e| engine_error(e, "health"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine layer on its own (without the parser check) refuses writes too.
    #[test]
    fn read_session_refuses_writes_by_itself() {
        let db = GrafeoDB::new_in_memory();
        for cypher in [
            "CREATE (n)",
            "MATCH (n) SET n.x = 1",
            "MATCH (n) CALL { WITH n CREATE (m) } RETURN n",
        ] {
            let err = read_session(&db)
                .execute_cypher(cypher)
                .map_err(|e| query_error(e, 30))
                .expect_err(cypher);
            assert!(
                matches!(err, StoreError::WriteInReadOnlyQuery { .. }),
                "{cypher}: {err:?}"
            );
        }
        assert_eq!(metrics(&db).map(|m| m.node_count), Ok(0));
    }
}
