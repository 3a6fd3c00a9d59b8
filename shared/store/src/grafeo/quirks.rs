//! Workarounds for known defects of Grafeo 0.5.44 that would otherwise return wrong data.
//!
//! A parameter projected as it is (`RETURN $p`, `WITH $p AS x`) becomes a constant column whose
//! type the planner derives from the value, and it types lists, maps and bytes as strings: the
//! caller silently gets `""`. Used inside an expression (`UNWIND $p`, `size($p)`, `$p.k`,
//! `[x IN $p | x]`) the value is intact. Such queries are refused with an explanation instead.

use std::collections::BTreeMap;

use grafeo_adapters::query::cypher::ast;

use crate::error::StoreError;
use crate::model::Value;

/// Refuses queries that project a list, map or bytes parameter directly.
pub(super) fn check_bare_parameters(
    statement: &ast::Statement,
    params: &BTreeMap<String, Value>,
) -> Result<(), StoreError> {
    let mut bare = Vec::new();
    statement_params(statement, &mut bare);
    for name in bare {
        if let Some(v @ (Value::List(_) | Value::Map(_) | Value::Bytes(_))) = params.get(name) {
            return Err(StoreError::QueryFailed(format!(
                "parameter ${name} is a {} projected as it is, which the embedded engine \
                 returns as an empty string; use it in an expression instead, e.g. \
                 [x IN ${name} | x] for a list or {{k: ${name}.k}} for a map",
                v.kind_name()
            )));
        }
    }
    Ok(())
}

fn statement_params<'a>(statement: &'a ast::Statement, out: &mut Vec<&'a str>) {
    match statement {
        ast::Statement::Query(q) => query_params(q, out),
        ast::Statement::Union { queries, .. } => queries.iter().for_each(|q| query_params(q, out)),
        ast::Statement::Explain(inner) | ast::Statement::Profile(inner) => {
            statement_params(inner, out);
        }
        _ => {}
    }
}

fn query_params<'a>(q: &'a ast::Query, out: &mut Vec<&'a str>) {
    for clause in &q.clauses {
        match clause {
            ast::Clause::With(w) => items(&w.items, out),
            ast::Clause::Return(r) => {
                if let ast::ReturnItems::Explicit(list) = &r.items {
                    items(list, out);
                }
            }
            ast::Clause::CallSubquery { query, unions, .. } => {
                query_params(query, out);
                unions.iter().for_each(|u| query_params(u, out));
            }
            _ => {}
        }
    }
}

fn items<'a>(list: &'a [ast::ProjectionItem], out: &mut Vec<&'a str>) {
    out.extend(list.iter().filter_map(|item| match &item.expression {
        ast::Expression::Parameter(name) => Some(name.as_str()),
        _ => None,
    }));
}
