use super::*;
use crate::model::{NodeInput, RelInput, RelRef, Timestamp};
use std::collections::BTreeMap;

fn field_of(r: Result<()>) -> String {
    match r {
        Err(StoreError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn node(key: &str) -> NodeInput {
    NodeInput {
        key: key.into(),
        ..NodeInput::default()
    }
}

#[test]
fn identifiers_accept_the_rule_and_refuse_everything_else() {
    for ok in ["a", "A_1", "_x", "x".repeat(64).as_str(), "123"] {
        assert!(identifier("f", "key", ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "a-b",
        "a:b",
        "a b",
        "`a`",
        "é",
        "a\n",
        &"x".repeat(65),
        "a.b",
    ] {
        assert!(identifier("f", "key", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn messages_say_what_is_allowed() {
    let err = identifier("nodes[0].key", "key", "a-b").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("nodes[0].key: key contains '-'"), "{text}");
    assert!(text.contains("ASCII letters, digits and `_`"), "{text}");
}

#[test]
fn property_names_reserve_key_and_underscore() {
    assert!(property_name("p", "name").is_ok());
    assert!(property_name("p", "key").is_err());
    assert!(property_name("p", "_labels").is_err());
    assert!(property_name("p", "a-b").is_err());
}

#[test]
fn property_values_allow_scalars_timestamps_and_homogeneous_lists() {
    let ok = [
        Value::Null,
        Value::Bool(true),
        Value::Int(-3),
        Value::Float(1.5),
        Value::String("s".into()),
        Value::Bytes(vec![0, 1]),
        Value::Timestamp(Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        Value::List(vec![]),
        Value::List(vec![Value::Int(1), Value::Int(2)]),
        Value::List(vec![Value::String("a".into())]),
    ];
    for v in ok {
        assert!(property_value("p", &v).is_ok(), "{v:?}");
    }
}

#[test]
fn property_values_refuse_nesting_graph_elements_and_non_finite() {
    let bad = [
        (Value::Map(BTreeMap::new()), "p"),
        (Value::Node(Default::default()), "p"),
        (Value::Relationship(Default::default()), "p"),
        (Value::Path(Default::default()), "p"),
        (Value::Float(f64::NAN), "p"),
        (Value::Float(f64::INFINITY), "p"),
        (
            Value::List(vec![Value::Int(1), Value::String("x".into())]),
            "p[1]",
        ),
        (Value::List(vec![Value::List(vec![])]), "p[0]"),
        (Value::List(vec![Value::Null]), "p[0]"),
        (Value::List(vec![Value::Float(f64::NEG_INFINITY)]), "p[0]"),
        (Value::String("x".repeat(MAX_VALUE_BYTES + 1)), "p"),
    ];
    for (v, field) in bad {
        assert_eq!(field_of(property_value("p", &v)), field, "{v:?}");
    }
}

#[test]
fn upsert_limits_and_field_paths() {
    assert_eq!(field_of(upsert(&UpsertBatch::default())), "nodes");
    let many = UpsertBatch {
        nodes: (0..=MAX_NODES_PER_REQUEST)
            .map(|i| node(&format!("n{i}")))
            .collect(),
        rels: vec![],
    };
    assert_eq!(field_of(upsert(&many)), "nodes");
    let many_rels = UpsertBatch {
        nodes: vec![],
        rels: vec![RelInput::default(); MAX_RELS_PER_REQUEST + 1],
    };
    assert_eq!(field_of(upsert(&many_rels)), "relationships");

    let mut b = UpsertBatch {
        nodes: vec![node("a"), node("b"), node("c"), node("bad key")],
        rels: vec![],
    };
    assert_eq!(field_of(upsert(&b)), "nodes[3].key");
    b.nodes[3].key = "d".into();
    b.nodes[1].labels = vec!["Ok".into(), "no-dash".into()];
    assert_eq!(field_of(upsert(&b)), "nodes[1].labels[1]");
    b.nodes[1].labels = (0..=MAX_LABELS_PER_NODE).map(|i| format!("L{i}")).collect();
    assert_eq!(field_of(upsert(&b)), "nodes[1].labels");
    b.nodes[1].labels = vec![];
    b.nodes[2]
        .properties
        .insert("key".into(), Value::String("x".into()));
    assert_eq!(field_of(upsert(&b)), "nodes[2].properties.key");
    b.nodes[2].properties = (0..=MAX_PROPERTIES)
        .map(|i| (format!("p{i}"), Value::Int(1)))
        .collect();
    assert_eq!(field_of(upsert(&b)), "nodes[2].properties");
    b.nodes[2].properties.clear();
    b.rels.push(RelInput {
        start_key: "a".into(),
        rel_type: "HAS-DASH".into(),
        end_key: "b".into(),
        properties: BTreeMap::new(),
    });
    assert_eq!(field_of(upsert(&b)), "relationships[0].type");
    b.rels[0].rel_type = "OK".into();
    b.rels[0].end_key = String::new();
    assert_eq!(field_of(upsert(&b)), "relationships[0].end_key");
    b.rels[0].end_key = "b".into();
    assert!(upsert(&b).is_ok());
}

#[test]
fn delete_validation() {
    assert_eq!(field_of(delete(&DeleteBatch::default())), "node_keys");
    let b = DeleteBatch {
        node_keys: vec!["a".into(), "b c".into()],
        rels: vec![],
        detach: false,
    };
    assert_eq!(field_of(delete(&b)), "node_keys[1]");
    let b = DeleteBatch {
        node_keys: vec![],
        rels: vec![RelRef {
            start_key: "a".into(),
            rel_type: "T:X".into(),
            end_key: "b".into(),
        }],
        detach: false,
    };
    assert_eq!(field_of(delete(&b)), "relationships[0].type");
}

#[test]
fn row_limit_defaults_and_caps() {
    assert_eq!(row_limit(0).ok(), Some(DEFAULT_ROW_LIMIT));
    assert_eq!(row_limit(5).ok(), Some(5));
    assert_eq!(row_limit(MAX_ROW_LIMIT).ok(), Some(MAX_ROW_LIMIT));
    assert_eq!(
        field_of(row_limit(MAX_ROW_LIMIT + 1).map(|_| ())),
        "row_limit"
    );
}

#[test]
fn query_validation() {
    let q = |cypher: &str, params: BTreeMap<String, Value>| ReadQuery {
        cypher: cypher.into(),
        params,
        row_limit: 10,
        deadline: None,
        caller: None,
    };
    assert!(query(&q("RETURN 1", BTreeMap::new())).is_ok());
    assert_eq!(field_of(query(&q("  ", BTreeMap::new()))), "cypher");
    assert_eq!(
        field_of(query(&q(
            &"x".repeat(MAX_CYPHER_BYTES + 1),
            BTreeMap::new()
        ))),
        "cypher"
    );
    let many: BTreeMap<_, _> = (0..=MAX_PARAMS)
        .map(|i| (format!("p{i}"), Value::Int(1)))
        .collect();
    assert_eq!(field_of(query(&q("RETURN 1", many))), "parameters");
    let bad_name = BTreeMap::from([("a-b".to_string(), Value::Int(1))]);
    assert_eq!(field_of(query(&q("RETURN 1", bad_name))), "parameters.a-b");
    let nested_node = BTreeMap::from([(
        "m".to_string(),
        Value::Map(BTreeMap::from([(
            "n".to_string(),
            Value::Node(Default::default()),
        )])),
    )]);
    assert_eq!(
        field_of(query(&q("RETURN 1", nested_node))),
        "parameters.m.n"
    );
    let maps_ok = BTreeMap::from([(
        "m".to_string(),
        Value::Map(BTreeMap::from([(
            "n".to_string(),
            Value::List(vec![Value::Null]),
        )])),
    )]);
    assert!(query(&q("RETURN $m", maps_ok)).is_ok());
}
