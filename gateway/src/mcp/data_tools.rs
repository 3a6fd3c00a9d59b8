//! The graph, audit and auth tools: `graph_upsert`, `graph_query`, `graph_delete`,
//! `graph_metrics`, `audit_query`, `whoami`.

use std::fmt::Write as _;
use std::str::FromStr as _;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use serde_json::{Value as Json, json};
use umcp_proto::audit::v1 as audit;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::auth::v1 as auth;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::graph::v1 as graph;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;

use super::args::{AuditQueryArgs, DeleteArgs, OutcomeArg, QueryArgs, UpsertArgs};
use super::link::failure;
use super::render::{enum_name, result, screaming, table_text, to_json, to_values};
use super::server::McpServer;

/// Rows shown in a query's text rendering (all rows are in the structured result).
const TEXT_ROWS: usize = 50;
/// Events shown in an audit query's text rendering.
const TEXT_EVENTS: usize = 100;

fn invalid(field: &str, message: &str) -> ErrorData {
    ErrorData::invalid_params(
        format!("invalid argument `{field}`: {message}"),
        Some(json!({ "field": field })),
    )
}

fn timestamp(
    field: &str,
    value: Option<String>,
) -> Result<Option<prost_types::Timestamp>, ErrorData> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            prost_types::Timestamp::from_str(&v).map_err(|_| {
                invalid(
                    field,
                    "must be an RFC 3339 time such as 2026-12-04T10:00:00Z",
                )
            })
        })
        .transpose()
}

fn counts(fields: &[(&str, u64)]) -> (Json, String) {
    let structured: serde_json::Map<String, Json> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let text = fields
        .iter()
        .map(|(k, v)| format!("{}: {v}", k.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ");
    (Json::Object(structured), text)
}

#[tool_router(router = data_router, vis = "pub(crate)")]
impl McpServer {
    /// `graph_upsert`.
    #[tool(
        description = "Create or merge nodes (by key) and relationships (by start, type, end) in \
            the knowledge graph, all in one transaction. Properties merge; null removes one. \
            Needs graph:upsert (admin).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn graph_upsert(
        &self,
        Parameters(args): Parameters<UpsertArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let nodes = args.nodes.unwrap_or_default();
        let relationships = args.relationships.unwrap_or_default();
        if nodes.is_empty() && relationships.is_empty() {
            return Err(invalid("nodes", "give at least one node or relationship"));
        }
        let request = graph::UpsertRequest {
            nodes: nodes
                .into_iter()
                .map(|n| graph::NodeInput {
                    key: n.key,
                    labels: n.labels.unwrap_or_default(),
                    properties: to_values(&n.properties.unwrap_or_default()),
                })
                .collect(),
            relationships: relationships
                .into_iter()
                .map(|r| graph::RelationshipInput {
                    start_key: r.start_key,
                    r#type: r.r#type,
                    end_key: r.end_key,
                    properties: to_values(&r.properties.unwrap_or_default()),
                })
                .collect(),
        };
        let who = self.link.who(&ctx).await?;
        let mut client = GraphServiceClient::new(self.link.channel.clone());
        match client.upsert(self.link.request(&who, request)).await {
            Ok(response) => {
                let r = response.into_inner();
                let (structured, text) = counts(&[
                    ("nodes_created", r.nodes_created),
                    ("nodes_updated", r.nodes_updated),
                    ("relationships_created", r.relationships_created),
                    ("relationships_updated", r.relationships_updated),
                ]);
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `graph_query`.
    #[tool(
        description = "Run a read-only openCypher query on the knowledge graph (writes are \
            refused) and return its columns and rows. Parameters are referenced as $name. \
            Needs graph:query (viewer and up).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn graph_query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = graph::QueryRequest {
            cypher: args.cypher,
            parameters: to_values(&args.parameters.unwrap_or_default()),
            row_limit: args.row_limit.unwrap_or(0),
        };
        let who = self.link.who(&ctx).await?;
        let mut client = GraphServiceClient::new(self.link.channel.clone());
        match client.query(self.link.request(&who, request)).await {
            Ok(response) => {
                let r = response.into_inner();
                let rows: Vec<Vec<Json>> = r
                    .rows
                    .iter()
                    .map(|row| row.values.iter().map(to_json).collect())
                    .collect();
                let mut text = table_text(&r.columns, &rows, TEXT_ROWS);
                let _ = write!(text, "({} rows", rows.len());
                text.push_str(if r.truncated { ", truncated)" } else { ")" });
                let structured = json!({
                    "columns": r.columns, "rows": rows, "truncated": r.truncated,
                    "elapsed_micros": r.elapsed_micros,
                });
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `graph_delete`.
    #[tool(
        description = "Delete nodes by key and relationships by (start, type, end) in one \
            transaction; unknown keys are counted, not errors. A node that still has \
            relationships is refused unless detach is true. Needs graph:delete (admin).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn graph_delete(
        &self,
        Parameters(args): Parameters<DeleteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let node_keys = args.node_keys.unwrap_or_default();
        let relationships = args.relationships.unwrap_or_default();
        if node_keys.is_empty() && relationships.is_empty() {
            return Err(invalid(
                "node_keys",
                "give at least one node key or relationship",
            ));
        }
        let request = graph::DeleteRequest {
            node_keys,
            relationships: relationships
                .into_iter()
                .map(|r| graph::RelationshipRef {
                    start_key: r.start_key,
                    r#type: r.r#type,
                    end_key: r.end_key,
                })
                .collect(),
            detach: args.detach.unwrap_or(false),
        };
        let who = self.link.who(&ctx).await?;
        let mut client = GraphServiceClient::new(self.link.channel.clone());
        match client.delete(self.link.request(&who, request)).await {
            Ok(response) => {
                let r = response.into_inner();
                let (structured, text) = counts(&[
                    ("nodes_deleted", r.nodes_deleted),
                    ("relationships_deleted", r.relationships_deleted),
                    ("not_found", r.not_found),
                ]);
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `graph_metrics`.
    #[tool(
        description = "Count the knowledge graph's nodes and relationships, per label and per \
            relationship type, with the average degree. Needs graph:query (viewer and up).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn graph_metrics(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        match self.metrics(&who).await {
            Ok(metrics) => {
                let structured = metrics_json(&metrics);
                let text = format!(
                    "{} nodes, {} relationships, average degree {:.2}\nlabels: {}\ntypes: {}",
                    metrics.node_count,
                    metrics.relationship_count,
                    metrics.average_degree,
                    structured["label_counts"],
                    structured["relationship_type_counts"]
                );
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `audit_query`.
    #[tool(
        description = "Search the security audit log (newest first) by event type, user, \
            correlation id, resource, time range and outcome, a page at a time. Needs \
            system:admin (admin).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn audit_query(
        &self,
        Parameters(args): Parameters<AuditQueryArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let event_types = args
            .event_types
            .unwrap_or_default()
            .iter()
            .map(|t| {
                let name = format!("EVENT_TYPE_{}", screaming(&format!("{t:?}")));
                audit::EventType::from_str_name(&name).map_or(0, |t| t as i32)
            })
            .collect();
        let outcome = match args.outcome.unwrap_or(OutcomeArg::Any) {
            OutcomeArg::Any => audit::OutcomeFilter::Unspecified,
            OutcomeArg::Success => audit::OutcomeFilter::Success,
            OutcomeArg::Failure => audit::OutcomeFilter::Failure,
        };
        let request = audit::QueryRequest {
            event_types,
            user_id: args.user_id.unwrap_or_default(),
            correlation_id: args.correlation_id.unwrap_or_default(),
            since: timestamp("since", args.since)?,
            until: timestamp("until", args.until)?,
            failures_only: false,
            page: Some(umcp_proto::common::v1::PageRequest {
                page_size: args.page_size.unwrap_or(100),
                page_token: args.page_token.unwrap_or_default(),
            }),
            resource: args.resource.unwrap_or_default(),
            outcome: outcome as i32,
        };
        let who = self.link.who(&ctx).await?;
        let mut client = AuditServiceClient::new(self.link.channel.clone());
        match client.query(self.link.request(&who, request)).await {
            Ok(response) => {
                let r = response.into_inner();
                let events: Vec<Json> = r.events.iter().map(event_json).collect();
                let mut text = format!("{} event(s)", events.len());
                for e in events.iter().take(TEXT_EVENTS) {
                    let _ = write!(
                        text,
                        "\n- #{} {} {} {} by {} → {}",
                        e["sequence"],
                        e["timestamp"].as_str().unwrap_or(""),
                        e["event_type"].as_str().unwrap_or(""),
                        e["resource"].as_str().unwrap_or(""),
                        e["actor"]["user_id"]
                            .as_str()
                            .filter(|u| !u.is_empty())
                            .unwrap_or("anonymous"),
                        if e["outcome"]["success"] == json!(true) {
                            "ok"
                        } else {
                            "failed"
                        },
                    );
                }
                let next = r.page.map(|p| p.next_page_token).unwrap_or_default();
                let structured = json!({ "events": events, "next_page_token": next });
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `whoami`.
    #[tool(
        description = "Show who the caller is: user id, name, roles, the permissions they \
            grant, how the session was established and when its token expires.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn whoami(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        let mut client = AuthServiceClient::new(self.link.channel.clone());
        match client
            .who_am_i(self.link.request(&who, auth::WhoAmIRequest {}))
            .await
        {
            Ok(response) => {
                let me = response.into_inner();
                let roles: Vec<String> = me
                    .roles
                    .iter()
                    .map(|r| {
                        auth::Role::try_from(*r).map_or_else(
                            |_| "unknown".into(),
                            |r| enum_name(r.as_str_name(), "ROLE_"),
                        )
                    })
                    .collect();
                let expires = me
                    .token_expires_at
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                let text = format!(
                    "{} ({}), roles: {}; permissions: {}; via {}; token expires {}",
                    me.username,
                    me.user_id,
                    roles.join(", "),
                    me.permissions.join(", "),
                    me.auth_method,
                    expires
                );
                let structured = json!({
                    "user_id": me.user_id, "username": me.username, "roles": roles,
                    "permissions": me.permissions, "auth_method": me.auth_method,
                    "token_expires_at": expires,
                });
                Ok(result(structured, text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }
}

impl McpServer {
    /// `GetMetrics` for `who` (the `graph_metrics` tool and the graph schema resource).
    pub(crate) async fn metrics(
        &self,
        who: &super::link::Who,
    ) -> Result<graph::GetMetricsResponse, tonic::Status> {
        let mut client = GraphServiceClient::new(self.link.channel.clone());
        let request = self.link.request(who, graph::GetMetricsRequest {});
        client
            .get_metrics(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Metrics as JSON, label and type counts sorted by name.
pub(crate) fn metrics_json(m: &graph::GetMetricsResponse) -> Json {
    let sorted = |map: &std::collections::HashMap<String, u64>| {
        let mut pairs: Vec<(&String, &u64)> = map.iter().collect();
        pairs.sort();
        pairs
            .into_iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "node_count": m.node_count,
        "relationship_count": m.relationship_count,
        "label_counts": sorted(&m.label_counts),
        "relationship_type_counts": sorted(&m.relationship_type_counts),
        "average_degree": m.average_degree,
    })
}

fn event_json(e: &audit::AuditEvent) -> Json {
    let event_type = audit::EventType::try_from(e.event_type).map_or_else(
        |_| "unspecified".into(),
        |t| enum_name(t.as_str_name(), "EVENT_TYPE_"),
    );
    let severity = audit::Severity::try_from(e.severity).map_or_else(
        |_| "unspecified".into(),
        |s| enum_name(s.as_str_name(), "SEVERITY_"),
    );
    let actor = e.actor.clone().unwrap_or_default();
    let outcome = e.outcome.clone().unwrap_or_default();
    let mut details: Vec<(&String, &umcp_proto::common::v1::Value)> = e.details.iter().collect();
    details.sort_by(|a, b| a.0.cmp(b.0));
    json!({
        "event_id": e.event_id,
        "sequence": e.sequence,
        "timestamp": e.timestamp.map(|t| t.to_string()).unwrap_or_default(),
        "event_type": event_type,
        "severity": severity,
        "service": e.service,
        "actor": { "user_id": actor.user_id, "roles": actor.roles, "auth_method": actor.auth_method },
        "peer_address": e.peer_address,
        "user_agent": e.user_agent,
        "resource": e.resource,
        "action": e.action,
        "outcome": { "success": outcome.success, "grpc_code": outcome.grpc_code, "reason": outcome.reason },
        "duration_micros": e.duration_micros,
        "correlation_id": e.correlation_id,
        "details": details.into_iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<serde_json::Map<_, _>>(),
    })
}
