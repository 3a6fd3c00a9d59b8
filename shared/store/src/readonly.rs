//! Parser-level read-only check for openCypher queries.
//!
//! The query is parsed with the Cypher parser of `grafeo-adapters` (the parser the embedded engine
//! itself uses) and the syntax tree is walked: only reading clauses are accepted. Keywords are
//! matched by the parser, so letter case, comments and whitespace cannot hide a clause, and a
//! string literal that merely contains `CREATE` is not mistaken for one. Writes nested in
//! `CALL { … }` subqueries, `EXISTS { … }` / `COUNT { … }` subqueries and `FOREACH` are found
//! because the walk descends into them.
//!
//! Refused: CREATE, MERGE, SET, DELETE, DETACH DELETE, REMOVE, FOREACH (it exists only to run
//! updates), LOAD CSV (it reads files on the server, even in the engine's read-only session),
//! schema commands (CREATE/DROP INDEX, CONSTRAINT, TYPE) and procedure calls outside
//! [`ALLOWED_PROCEDURES`]. Backends also run queries in a read-only transaction where the engine
//! offers one; this check is the layer that is the same for every backend.

use grafeo_adapters::query::cypher::{self, ast};
use grafeo_adapters::query::schema::SchemaStatement;

use crate::error::StoreError;

/// Procedures a read-only query may `CALL` (lowercase, dotted). Empty on purpose: the embedded
/// engine is built without its procedure library, and every procedure admitted here must be
/// reviewed to be side-effect free on every backend.
pub const ALLOWED_PROCEDURES: &[&str] = &[];

/// Parses `cypher` and refuses it unless it only reads.
///
/// # Errors
/// [`StoreError::Syntax`] when the text does not parse (with the parser's position), or
/// [`StoreError::WriteInReadOnlyQuery`] naming the first refused clause.
pub fn check(cypher: &str) -> Result<(), StoreError> {
    check_parsed(cypher).map(|_| ())
}

/// [`check`], returning the syntax tree for backends that inspect it further.
pub(crate) fn check_parsed(cypher: &str) -> Result<ast::Statement, StoreError> {
    let statement = cypher::parse(cypher).map_err(syntax_error)?;
    statement_ok(&statement)?;
    Ok(statement)
}

/// Converts a parser or engine error about the query text into [`StoreError::Syntax`].
pub(crate) fn syntax_error(err: grafeo_common::utils::error::Error) -> StoreError {
    use grafeo_common::utils::error::Error;
    match err {
        Error::Query(q) => StoreError::Syntax {
            message: strip_language_tag(&q.message),
            line: q.span.map(|s| s.line),
            column: q.span.map(|s| s.column),
        },
        other => StoreError::Syntax {
            message: other.to_string(),
            line: None,
            column: None,
        },
    }
}

/// The parser prefixes its messages with `[Cypher] `; callers already know the language.
fn strip_language_tag(message: &str) -> String {
    message
        .strip_prefix("[Cypher] ")
        .unwrap_or(message)
        .to_string()
}

fn refuse(clause: impl Into<String>) -> StoreError {
    StoreError::WriteInReadOnlyQuery {
        clause: clause.into(),
        line: None,
        column: None,
    }
}

fn refuse_at(clause: &str, span: Option<grafeo_common::utils::error::SourceSpan>) -> StoreError {
    StoreError::WriteInReadOnlyQuery {
        clause: clause.to_string(),
        line: span.map(|s| s.line),
        column: span.map(|s| s.column),
    }
}

fn statement_ok(statement: &ast::Statement) -> Result<(), StoreError> {
    use ast::Statement as S;
    match statement {
        S::Query(q) => query_ok(q),
        S::Union { queries, .. } => queries.iter().try_for_each(query_ok),
        // EXPLAIN does not run the query, but answering it for a write would still let callers
        // probe write plans; PROFILE runs it. Both are judged by what they wrap.
        S::Explain(inner) | S::Profile(inner) => statement_ok(inner),
        S::Create(c) => Err(refuse_at("CREATE", c.span)),
        S::Merge(m) => Err(refuse_at("MERGE", m.span)),
        S::Delete(d) => Err(refuse_at(delete_name(d), d.span)),
        S::Set(s) => Err(refuse_at("SET", s.span)),
        S::Remove(r) => Err(refuse_at("REMOVE", r.span)),
        S::Schema(schema) => Err(refuse(schema_name(schema))),
        S::ShowIndexes | S::ShowConstraints | S::ShowCurrentGraphType => Ok(()),
    }
}

fn delete_name(d: &ast::DeleteClause) -> &'static str {
    if d.detach { "DETACH DELETE" } else { "DELETE" }
}

fn schema_name(schema: &SchemaStatement) -> &'static str {
    match schema {
        SchemaStatement::DropNodeType { .. }
        | SchemaStatement::DropEdgeType { .. }
        | SchemaStatement::DropIndex { .. }
        | SchemaStatement::DropConstraint { .. } => "DROP",
        _ => "CREATE (schema definition)",
    }
}

fn query_ok(q: &ast::Query) -> Result<(), StoreError> {
    q.clauses.iter().try_for_each(clause_ok)
}

fn clause_ok(clause: &ast::Clause) -> Result<(), StoreError> {
    use ast::Clause as C;
    match clause {
        C::Match(m) | C::OptionalMatch(m) => m.patterns.iter().try_for_each(pattern_ok),
        C::Where(w) => expr_ok(&w.predicate),
        C::With(w) => {
            w.items.iter().try_for_each(|i| expr_ok(&i.expression))?;
            w.where_clause
                .as_ref()
                .map_or(Ok(()), |wc| expr_ok(&wc.predicate))
        }
        C::Return(r) => match &r.items {
            ast::ReturnItems::All => Ok(()),
            ast::ReturnItems::Explicit(items) => {
                items.iter().try_for_each(|i| expr_ok(&i.expression))
            }
        },
        C::Unwind(u) => expr_ok(&u.expression),
        C::OrderBy(o) => o.items.iter().try_for_each(|i| expr_ok(&i.expression)),
        C::Skip(e) | C::Limit(e) => expr_ok(e),
        C::Create(c) => Err(refuse_at("CREATE", c.span)),
        C::Merge(m) => Err(refuse_at("MERGE", m.span)),
        C::Delete(d) => Err(refuse_at(delete_name(d), d.span)),
        C::Set(s) => Err(refuse_at("SET", s.span)),
        C::Remove(r) => Err(refuse_at("REMOVE", r.span)),
        C::ForEach(_) => Err(refuse("FOREACH")),
        C::LoadCsv(l) => Err(refuse_at("LOAD CSV", l.span)),
        C::Call(call) => {
            let name = call.procedure_name.join(".");
            if ALLOWED_PROCEDURES.contains(&name.to_ascii_lowercase().as_str()) {
                call.arguments.iter().try_for_each(expr_ok)
            } else {
                Err(refuse_at(
                    &format!("CALL {name} (no procedures are allowed in read-only queries)"),
                    call.span,
                ))
            }
        }
        C::CallSubquery { query, unions, .. } => {
            query_ok(query)?;
            unions.iter().try_for_each(query_ok)
        }
    }
}

fn pattern_ok(p: &ast::Pattern) -> Result<(), StoreError> {
    match p {
        ast::Pattern::Node(n) => node_ok(n),
        ast::Pattern::Path(path) => path_ok(path),
        ast::Pattern::NamedPath { pattern, .. } => pattern_ok(pattern),
    }
}

fn node_ok(n: &ast::NodePattern) -> Result<(), StoreError> {
    n.properties.iter().try_for_each(|(_, e)| expr_ok(e))
}

fn path_ok(p: &ast::PathPattern) -> Result<(), StoreError> {
    node_ok(&p.start)?;
    for rel in &p.chain {
        rel.properties.iter().try_for_each(|(_, e)| expr_ok(e))?;
        if let Some(w) = &rel.where_clause {
            expr_ok(w)?;
        }
        node_ok(&rel.target)?;
    }
    Ok(())
}

/// Expressions cannot write by themselves, but `EXISTS { … }` and `COUNT { … }` hold whole
/// queries, so the walk must reach every nested expression.
fn expr_ok(e: &ast::Expression) -> Result<(), StoreError> {
    use ast::Expression as E;
    match e {
        E::Literal(_) | E::Variable(_) | E::Parameter(_) => Ok(()),
        E::PropertyAccess { base, .. } => expr_ok(base),
        E::IndexAccess { base, index } => {
            expr_ok(base)?;
            expr_ok(index)
        }
        E::SliceAccess { base, start, end } => {
            expr_ok(base)?;
            start.as_deref().map_or(Ok(()), expr_ok)?;
            end.as_deref().map_or(Ok(()), expr_ok)
        }
        E::Binary { left, right, .. } => {
            expr_ok(left)?;
            expr_ok(right)
        }
        E::Unary { operand, .. } => expr_ok(operand),
        E::FunctionCall { args, .. } | E::List(args) => args.iter().try_for_each(expr_ok),
        E::Map(entries) => entries.iter().try_for_each(|(_, v)| expr_ok(v)),
        E::ListComprehension {
            list,
            filter,
            projection,
            ..
        } => {
            expr_ok(list)?;
            filter.as_deref().map_or(Ok(()), expr_ok)?;
            projection.as_deref().map_or(Ok(()), expr_ok)
        }
        E::PatternComprehension {
            pattern,
            where_clause,
            projection,
        } => {
            pattern_ok(pattern)?;
            where_clause.as_deref().map_or(Ok(()), expr_ok)?;
            expr_ok(projection)
        }
        E::Case {
            input,
            whens,
            else_clause,
        } => {
            input.as_deref().map_or(Ok(()), expr_ok)?;
            for (when, then) in whens {
                expr_ok(when)?;
                expr_ok(then)?;
            }
            else_clause.as_deref().map_or(Ok(()), expr_ok)
        }
        E::ListPredicate {
            list, predicate, ..
        } => {
            expr_ok(list)?;
            expr_ok(predicate)
        }
        E::Exists(q) | E::CountSubquery(q) => query_ok(q),
        E::MapProjection { entries, .. } => entries.iter().try_for_each(|entry| match entry {
            ast::MapProjectionEntry::LiteralEntry(_, v) => expr_ok(v),
            ast::MapProjectionEntry::PropertySelector(_)
            | ast::MapProjectionEntry::AllProperties => Ok(()),
        }),
        E::Reduce {
            initial,
            list,
            expression,
            ..
        } => {
            expr_ok(initial)?;
            expr_ok(list)?;
            expr_ok(expression)
        }
    }
}

#[cfg(test)]
#[path = "readonly_tests.rs"]
mod tests;
