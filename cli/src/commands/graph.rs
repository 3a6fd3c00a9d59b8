//! `umcp graph upsert|query|delete|metrics`.

use std::collections::HashMap;

use serde_json::{Value as Json, json};
use umcp_proto::graph::v1 as pb;

use super::input::{assignment, read_json, read_text};
use crate::args::{GlobalOpts, GraphCommand, GraphDeleteArgs, GraphQueryArgs, GraphUpsertArgs};
use crate::error::CliError;
use crate::output::{Output, proto_json, with_spinner};
use crate::session::Session;
use crate::value::{cell, from_json, properties, to_json};

/// Runs one `umcp graph` subcommand.
///
/// # Errors
/// Bad input, no credentials, a failed call.
pub async fn graph(opts: &GlobalOpts, command: &GraphCommand, out: Output) -> Result<(), CliError> {
    match command {
        GraphCommand::Upsert(args) => upsert(opts, args, out).await,
        GraphCommand::Query(args) => query(opts, args, out).await,
        GraphCommand::Delete(args) => delete(opts, args, out).await,
        GraphCommand::Metrics => metrics(opts, out).await,
    }
}

/// The upsert file as a request: `{"nodes": [...], "relationships": [...]}`.
///
/// # Errors
/// What is wrong and where (`nodes[2].key: ...`).
pub fn upsert_request(document: &Json) -> Result<pb::UpsertRequest, String> {
    let root = document
        .as_object()
        .ok_or("the document must be a JSON object with `nodes` and/or `relationships`")?;
    if let Some(unknown) = root.keys().find(|k| *k != "nodes" && *k != "relationships") {
        return Err(format!(
            "unknown top-level field `{unknown}` (expected nodes, relationships)"
        ));
    }
    let list = |name: &str| -> Result<Vec<Json>, String> {
        match root.get(name) {
            None => Ok(Vec::new()),
            Some(Json::Array(items)) => Ok(items.clone()),
            Some(_) => Err(format!("`{name}` must be an array")),
        }
    };
    let nodes = list("nodes")?
        .iter()
        .enumerate()
        .map(|(i, n)| node(n, &format!("nodes[{i}]")))
        .collect::<Result<_, _>>()?;
    let relationships = list("relationships")?
        .iter()
        .enumerate()
        .map(|(i, r)| relationship(r, &format!("relationships[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(pb::UpsertRequest {
        nodes,
        relationships,
    })
}

fn text_field(
    object: &serde_json::Map<String, Json>,
    name: &str,
    at: &str,
) -> Result<String, String> {
    match object.get(name) {
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{at}.{name} must be a string")),
        None => Err(format!("{at}.{name} is missing")),
    }
}

fn props(
    object: &serde_json::Map<String, Json>,
    at: &str,
) -> Result<HashMap<String, umcp_proto::common::v1::Value>, String> {
    match object.get("properties") {
        None | Some(Json::Null) => Ok(HashMap::new()),
        Some(Json::Object(fields)) => properties(fields, &format!("{at}.properties")),
        Some(_) => Err(format!("{at}.properties must be an object")),
    }
}

fn node(value: &Json, at: &str) -> Result<pb::NodeInput, String> {
    let object = value.as_object().ok_or(format!("{at} must be an object"))?;
    let labels = match object.get("labels") {
        None => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{at}.labels must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{at}.labels must be an array of strings")),
    };
    Ok(pb::NodeInput {
        key: text_field(object, "key", at)?,
        labels,
        properties: props(object, at)?,
    })
}

fn relationship(value: &Json, at: &str) -> Result<pb::RelationshipInput, String> {
    let object = value.as_object().ok_or(format!("{at} must be an object"))?;
    Ok(pb::RelationshipInput {
        start_key: text_field(object, "start", at)?,
        r#type: text_field(object, "type", at)?,
        end_key: text_field(object, "end", at)?,
        properties: props(object, at)?,
    })
}

async fn upsert(opts: &GlobalOpts, args: &GraphUpsertArgs, out: Output) -> Result<(), CliError> {
    let document = read_json(&args.file)?;
    let request = upsert_request(&document)
        .map_err(|e| CliError::BadInput(format!("{}: {e}", args.file.display())))?;
    let session = Session::load(opts)?;
    let answer = with_spinner("upserting", async {
        session
            .connection()
            .graph()
            .upsert(session.request(request).await?)
            .await
            .map_err(CliError::rpc("GraphService/Upsert", session.endpoint()))
    })
    .await?
    .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(&answer, "umcp.graph.v1.UpsertResponse"));
    }
    out.line(format!(
        "nodes: {} created, {} updated; relationships: {} created, {} updated",
        answer.nodes_created,
        answer.nodes_updated,
        answer.relationships_created,
        answer.relationships_updated
    ))
}

async fn query(opts: &GlobalOpts, args: &GraphQueryArgs, out: Output) -> Result<(), CliError> {
    let cypher = if args.cypher == "-" {
        read_text(std::path::Path::new("-"))?
    } else {
        args.cypher.clone()
    };
    let mut parameters = HashMap::new();
    for item in &args.params {
        let (name, value) = assignment(item, "--param")?;
        let value = from_json(&value, &format!("--param {name}")).map_err(CliError::BadInput)?;
        parameters.insert(name, value);
    }
    let session = Session::load(opts)?;
    let request = pb::QueryRequest {
        cypher,
        parameters,
        row_limit: args.limit.unwrap_or(0),
    };
    let answer = with_spinner("querying", async {
        session
            .connection()
            .graph()
            .query(session.request(request).await?)
            .await
            .map_err(CliError::rpc("GraphService/Query", session.endpoint()))
    })
    .await?
    .into_inner();
    if out.is_json() {
        // Plain JSON values (integers stay integers), not the tagged proto form.
        let rows: Vec<Json> = answer
            .rows
            .iter()
            .map(|r| Json::Array(r.values.iter().map(to_json).collect()))
            .collect();
        return out.print_json(&json!({
            "columns": answer.columns,
            "rows": rows,
            "truncated": answer.truncated,
            "elapsedMicros": answer.elapsed_micros,
        }));
    }
    let headers: Vec<&str> = answer.columns.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|r| r.values.iter().map(cell).collect())
        .collect();
    out.table(&headers, &rows)?;
    let more = if answer.truncated {
        " (truncated: raise --limit)"
    } else {
        ""
    };
    eprintln!(
        "{} row(s){more} in {} µs",
        rows.len(),
        answer.elapsed_micros
    );
    Ok(())
}

/// `start:TYPE:end` → a relationship reference.
///
/// # Errors
/// Not three non-empty parts.
pub fn relationship_ref(text: &str) -> Result<pb::RelationshipRef, CliError> {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [start, kind, end] if !start.is_empty() && !kind.is_empty() && !end.is_empty() => {
            Ok(pb::RelationshipRef {
                start_key: (*start).to_owned(),
                r#type: (*kind).to_owned(),
                end_key: (*end).to_owned(),
            })
        }
        _ => Err(CliError::Usage(format!(
            "--rel `{text}`: expected start:TYPE:end"
        ))),
    }
}

async fn delete(opts: &GlobalOpts, args: &GraphDeleteArgs, out: Output) -> Result<(), CliError> {
    if args.nodes.is_empty() && args.relationships.is_empty() {
        return Err(CliError::Usage(
            "nothing to delete: pass --node KEY and/or --rel start:TYPE:end".into(),
        ));
    }
    let request = pb::DeleteRequest {
        node_keys: args.nodes.clone(),
        relationships: args
            .relationships
            .iter()
            .map(|r| relationship_ref(r))
            .collect::<Result<_, _>>()?,
        detach: args.detach,
    };
    let session = Session::load(opts)?;
    let answer = session
        .connection()
        .graph()
        .delete(session.request(request).await?)
        .await
        .map_err(CliError::rpc("GraphService/Delete", session.endpoint()))?
        .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(&answer, "umcp.graph.v1.DeleteResponse"));
    }
    out.line(format!(
        "deleted {} node(s) and {} relationship(s); {} not found",
        answer.nodes_deleted, answer.relationships_deleted, answer.not_found
    ))
}

async fn metrics(opts: &GlobalOpts, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    let answer = session
        .connection()
        .graph()
        .get_metrics(session.request(pb::GetMetricsRequest {}).await?)
        .await
        .map_err(CliError::rpc("GraphService/GetMetrics", session.endpoint()))?
        .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(&answer, "umcp.graph.v1.GetMetricsResponse"));
    }
    out.line(format!(
        "{} node(s), {} relationship(s), average degree {:.2}",
        answer.node_count, answer.relationship_count, answer.average_degree
    ))?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut labels: Vec<_> = answer.label_counts.iter().collect();
    labels.sort();
    rows.extend(
        labels
            .into_iter()
            .map(|(l, n)| vec!["label".into(), l.clone(), n.to_string()]),
    );
    let mut types: Vec<_> = answer.relationship_type_counts.iter().collect();
    types.sort();
    rows.extend(
        types
            .into_iter()
            .map(|(t, n)| vec!["type".into(), t.clone(), n.to_string()]),
    );
    if !rows.is_empty() {
        out.table(&["KIND", "NAME", "COUNT"], &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_files_map_onto_the_request_and_errors_say_where() {
        let request = upsert_request(&json!({
            "nodes": [{"key": "a", "labels": ["L"], "properties": {"n": 1}}, {"key": "b"}],
            "relationships": [{"start": "a", "type": "T", "end": "b"}],
        }))
        .unwrap();
        assert_eq!(request.nodes.len(), 2);
        assert_eq!(request.relationships[0].r#type, "T");
        let error = upsert_request(&json!({"nodes": [{"labels": []}]})).unwrap_err();
        assert_eq!(error, "nodes[0].key is missing");
        let error = upsert_request(&json!({"node": []})).unwrap_err();
        assert!(error.contains("`node`"), "{error}");
    }

    #[test]
    fn relationship_refs_need_three_parts() {
        assert_eq!(relationship_ref("a:T:b").unwrap().r#type, "T");
        assert!(relationship_ref("a:T").is_err());
    }
}
