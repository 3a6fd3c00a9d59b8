use super::check;
use crate::error::StoreError;

/// (query, refused clause as reported) — every one must be refused before it runs.
const WRITES: &[(&str, &str)] = &[
    ("CREATE (n:Person {key: 'a'})", "CREATE"),
    ("create (n)", "CREATE"),
    ("CrEaTe (n)", "CREATE"),
    ("MATCH (n) CREATE (n)-[:R]->(m)", "CREATE"),
    ("MERGE (n {key: 'a'})", "MERGE"),
    ("match (n) merge (n)-[:R]->(:X)", "MERGE"),
    ("MATCH (n) SET n.x = 1", "SET"),
    ("MATCH (n) set n:Label", "SET"),
    ("MATCH (n) SET n += {a: 1}", "SET"),
    ("MATCH (n) DELETE n", "DELETE"),
    ("MATCH (n) DETACH DELETE n", "DETACH DELETE"),
    ("match (n) detach   delete n", "DETACH DELETE"),
    ("MATCH (n)\n\tDETACH\n DELETE n", "DETACH DELETE"),
    ("MATCH (n) REMOVE n.x", "REMOVE"),
    ("MATCH (n) remove n:Label", "REMOVE"),
    ("MATCH (n) /* harmless? */ SET n.x = 1 RETURN n", "SET"),
    ("MATCH (n) // comment\nDELETE n", "DELETE"),
    ("MATCH (n) WITH n SET n.x = 1 RETURN n", "SET"),
    (
        "MATCH (n) RETURN n UNION MATCH (m) SET m.x = 1 RETURN m",
        "SET",
    ),
    ("MATCH (n) CALL { CREATE (x) } RETURN n", "CREATE"),
    ("MATCH (n) call { with n set n.x = 2 } return n", "SET"),
    (
        "CALL { MATCH (a) CALL { MATCH (b) DETACH DELETE b } RETURN a } RETURN 1",
        "DETACH DELETE",
    ),
    ("MATCH (n) FOREACH (x IN [1,2] | SET n.x = x)", "FOREACH"),
    ("foreach (x in [1] | create (:A))", "FOREACH"),
    ("LOAD CSV FROM '/etc/passwd' AS row RETURN row", "LOAD CSV"),
    (
        "load csv with headers from 'file:///etc/passwd' as row return row",
        "LOAD CSV",
    ),
    ("CALL db.labels()", "CALL db.labels"),
    (
        "CALL grafeo.pagerank() YIELD node RETURN node",
        "CALL grafeo.pagerank",
    ),
    ("EXPLAIN CREATE (n)", "CREATE"),
    ("PROFILE MATCH (n) SET n.x = 1", "SET"),
    (
        "CREATE INDEX idx FOR (n:Person) ON (n.name)",
        "CREATE (schema definition)",
    ),
    ("DROP INDEX idx", "DROP"),
];

const READS: &[&str] = &[
    "MATCH (n) RETURN n",
    "match (n:Person) where n.name = 'CREATE (x)' return n",
    "MATCH (n) RETURN n.created AS createdAt, n.settings",
    "MATCH (a)-[r:KNOWS*1..3]->(b) RETURN a, r, b LIMIT 5",
    "MATCH p = (a)-->(b) RETURN p",
    "OPTIONAL MATCH (n) RETURN count(n)",
    "UNWIND [1, 2, 3] AS x RETURN x ORDER BY x DESC SKIP 1 LIMIT 1",
    "MATCH (n) WITH n WHERE n.x > 1 RETURN n",
    "MATCH (n) RETURN n UNION ALL MATCH (m) RETURN m AS n",
    "MATCH (n) CALL { WITH n MATCH (n)-->(m) RETURN m } RETURN n, m",
    "MATCH (n) WHERE EXISTS { MATCH (n)-->() } RETURN n",
    "RETURN [x IN range(1, 3) WHERE x > 1 | x * 2] AS xs",
    "MATCH (n) RETURN CASE WHEN n.x IS NULL THEN 0 ELSE n.x END",
    "// leading comment\nMATCH (n) /* inline */ RETURN n",
    "RETURN $p AS p",
    "EXPLAIN MATCH (n) RETURN n",
];

#[test]
fn writes_are_refused_with_the_clause_named() {
    for (query, clause) in WRITES {
        match check(query) {
            Err(StoreError::WriteInReadOnlyQuery { clause: got, .. }) => {
                assert!(
                    got.starts_with(clause),
                    "{query:?}: reported {got:?}, want {clause:?}"
                )
            }
            other => panic!("{query:?} was not refused as a write: {other:?}"),
        }
    }
    assert!(WRITES.len() + READS.len() >= 30);
}

/// Writes the parser does not accept where they are hidden: refused before running all the same
/// (as syntax errors), which is what matters.
const UNPARSABLE_WRITES: &[&str] = &[
    "MATCH (n) WHERE EXISTS { MATCH (n) CREATE (m) } RETURN n",
    "MATCH (n) RETURN COUNT { MATCH (n) DETACH DELETE n }",
];

#[test]
fn hidden_writes_the_parser_rejects_are_still_refused() {
    for query in UNPARSABLE_WRITES {
        assert!(
            matches!(
                check(query),
                Err(StoreError::Syntax { .. } | StoreError::WriteInReadOnlyQuery { .. })
            ),
            "{query:?}"
        );
    }
}

#[test]
fn reads_are_accepted() {
    for query in READS {
        assert_eq!(check(query), Ok(()), "{query:?}");
    }
}

#[test]
fn syntax_errors_carry_the_position() {
    match check("MATCH (n\n RETURN n") {
        Err(StoreError::Syntax {
            line,
            column,
            message,
        }) => {
            assert_eq!((line, column), (Some(2), Some(2)), "{message}");
            assert!(!message.starts_with("[Cypher]"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}
