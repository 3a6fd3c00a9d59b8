//! MCP over Streamable HTTP on real servers and real HTTP: the MCP port in front of a real
//! gateway (and the real graph service, or the recording execution backend where a test must
//! see what reached it). `audited` runs the whole mesh with the audit service; `python` drives
//! it with the official MCP Python SDK.

mod audited;
mod client;
mod python;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use umcp_authz::Verifier;
use umcp_authz::permissions::Role;
use umcp_gateway::HttpConfig;
use umcp_gateway::mcp::McpWiring;
use umcp_testkit::Spawned;
use umcp_testkit::issuer::TestIssuer;

use crate::recording::Recorder;
use client::{Client, PROTOCOL};

/// The auth URL the metadata names in these tests (nothing listens there).
const AUTH_URL: &str = "http://127.0.0.1:9";

pub(crate) async fn mcp_port(
    gateway: &Spawned,
    verifier: Arc<Verifier>,
    emitter: umcp_audit_client::Emitter,
    config: HttpConfig,
) -> Spawned {
    let wiring = McpWiring {
        verifier,
        emitter,
        gateway_url: gateway.url(),
        auth_url: AUTH_URL.to_owned(),
    };
    Spawned::start(|listener, shutdown| {
        umcp_gateway::mcp::serve(listener, config, wiring, shutdown.wait())
    })
    .await
}

/// A gateway over `graph` and `execution` with its MCP port, both verifying `issuer`'s tokens.
async fn stack(graph: &str, execution: &str, issuer: &TestIssuer) -> (Spawned, Spawned) {
    let gw = crate::gateway(graph, execution, issuer).await;
    let mcp = mcp_port(
        &gw,
        issuer.verifier(),
        umcp_audit_client::Emitter::new(None, "gateway"),
        HttpConfig::default(),
    )
    .await;
    (gw, mcp)
}

fn as_user(addr: SocketAddr, issuer: &TestIssuer, sub: &str, role: Role) -> Client {
    let bearer = issuer.bearer(sub, &[role]);
    Client::new(addr, Some(bearer.to_str().unwrap()))
}

fn initialize() -> Value {
    json!({
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": { "name": "umcp-tests", "version": "1" },
    })
}

async fn tool_names(client: &Client) -> Vec<String> {
    let reply = client.rpc("tools/list", json!({})).await;
    let mut names: Vec<String> = reply.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn anonymous_and_invalid_callers_get_401_with_a_challenge() {
    let issuer = TestIssuer::new();
    let (_gw, mcp) = stack("", "", &issuer).await;
    let metadata_url = format!(
        "http://127.0.0.1:{}/.well-known/oauth-protected-resource",
        mcp.addr.port()
    );

    let anonymous = Client::new(mcp.addr, None).with("x-correlation-id", "anon-1");
    let reply = anonymous.rpc("initialize", initialize()).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"umcp\", resource_metadata=\"{metadata_url}\"")
    );
    assert_eq!(reply.headers["x-correlation-id"], "anon-1");

    let stranger = TestIssuer::new().bearer("x", &[Role::Admin]);
    let reply = Client::new(mcp.addr, Some(stranger.to_str().unwrap()))
        .rpc("initialize", initialize())
        .await;
    assert_eq!(reply.status, 401);
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    for bad in ["Basic abc", "Bearer", "Bearer umcp_not-a-key"] {
        let reply = Client::new(mcp.addr, Some(bad))
            .rpc("initialize", initialize())
            .await;
        // An unknown API key is refused by the exchange; auth is disabled on this gateway, so
        // that exchange itself is unavailable (503), never a pass.
        assert!(
            reply.status == 401 || reply.status == 503,
            "{bad}: {}",
            reply.status
        );
    }

    // RFC 9728 metadata: open, naming this resource and the auth service.
    let reply = Client::new(mcp.addr, None)
        .get("/.well-known/oauth-protected-resource")
        .await;
    assert_eq!(reply.status, 200);
    let metadata: Value = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(
        metadata["resource"],
        format!("http://127.0.0.1:{}/mcp", mcp.addr.port())
    );
    assert_eq!(metadata["authorization_servers"], json!([AUTH_URL]));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert!(
        metadata["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tools:execute"))
    );
}

#[tokio::test]
async fn hosts_and_origins_outside_the_configuration_are_refused() {
    let issuer = TestIssuer::new();
    let (_gw, mcp) = stack("", "", &issuer).await;
    let admin = as_user(mcp.addr, &issuer, "admin-1", Role::Admin);
    let ok = admin.rpc("initialize", initialize()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    let rebound = admin
        .clone()
        .with("host", "attacker.example")
        .rpc("initialize", initialize())
        .await;
    assert_eq!(rebound.status, 403, "{}", rebound.text);
    let browser = admin
        .clone()
        .with("origin", "https://attacker.example")
        .rpc("initialize", initialize())
        .await;
    assert_eq!(browser.status, 403, "{}", browser.text);

    // Behind an ingress: its host and a browser app listed in the configuration pass.
    let gw = crate::gateway("", "", &issuer).await;
    let config = HttpConfig {
        allowed_hosts: vec!["mcp.example.com".into()],
        allowed_origins: vec!["https://app.example.com:443".into()],
        resource_url: "https://mcp.example.com/mcp".into(),
        ..HttpConfig::default()
    };
    let verifier = issuer.verifier();
    let emitter = umcp_audit_client::Emitter::new(None, "gateway");
    let public = mcp_port(&gw, verifier, emitter, config).await;
    let ingress = as_user(public.addr, &issuer, "admin-1", Role::Admin)
        .with("host", "mcp.example.com")
        .with("origin", "https://app.example.com");
    let reply = ingress.rpc("initialize", initialize()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = Client::new(public.addr, None)
        .with("host", "mcp.example.com")
        .rpc("initialize", initialize())
        .await;
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource\""
        ),
        "{challenge}"
    );
}

#[tokio::test]
async fn tools_are_listed_by_role_with_precise_schemas() {
    let issuer = TestIssuer::new();
    let (_gw, mcp) = stack("", "", &issuer).await;
    let viewer = as_user(mcp.addr, &issuer, "viewer-1", Role::Viewer);
    let init = viewer.rpc("initialize", initialize()).await;
    let result = init.result();
    assert_eq!(result["serverInfo"]["name"], "umcp-gateway");
    for capability in ["tools", "prompts", "resources"] {
        assert!(result["capabilities"].get(capability).is_some(), "{result}");
    }

    let viewer_tools = [
        "graph_metrics",
        "graph_query",
        "lint_code",
        "list_languages",
        "whoami",
    ];
    assert_eq!(tool_names(&viewer).await, viewer_tools);
    let developer = as_user(mcp.addr, &issuer, "dev-1", Role::Developer);
    let mut expected: Vec<&str> = viewer_tools.to_vec();
    expected.extend(["execute_code", "generate_code", "run_tests"]);
    expected.sort_unstable();
    assert_eq!(tool_names(&developer).await, expected);
    let admin = as_user(mcp.addr, &issuer, "admin-1", Role::Admin);
    expected.extend(["graph_upsert", "graph_delete", "audit_query"]);
    expected.sort_unstable();
    assert_eq!(tool_names(&admin).await, expected);

    let listed = admin.rpc("tools/list", json!({})).await;
    let tools = listed.result()["tools"].as_array().unwrap().clone();
    let schema =
        |name: &str| tools.iter().find(|t| t["name"] == name).unwrap()["inputSchema"].clone();
    let execute = schema("execute_code");
    assert_eq!(execute["type"], "object");
    assert_eq!(execute["additionalProperties"], false);
    assert_eq!(execute["required"], json!(["language", "code"]));
    let props = &execute["properties"];
    assert_eq!(
        props["language"]["enum"],
        json!(["python", "javascript", "bash"])
    );
    assert_eq!(props["code"]["maxLength"], 262_144);
    assert_eq!(props["timeout_seconds"]["maximum"], 60);
    assert_eq!(props["args"]["maxItems"], 64);
    assert!(
        props["code"]["description"]
            .as_str()
            .unwrap()
            .contains("256 KiB")
    );
    let query = schema("graph_query");
    assert_eq!(query["properties"]["row_limit"]["maximum"], 10_000);
    let audit = schema("audit_query");
    let kinds = audit["properties"]["event_types"]["items"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(kinds.len(), 17);
    assert!(kinds.contains(&json!("authz_denied")));
    let upsert = schema("graph_upsert");
    assert_eq!(
        upsert["properties"]["nodes"]["items"]["required"],
        json!(["key"])
    );
}

#[tokio::test]
async fn arguments_are_checked_before_any_service_sees_them() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let (_gw, mcp) = stack("", &recorder.url(), &issuer).await;
    let developer = as_user(mcp.addr, &issuer, "dev-1", Role::Developer);
    let cases = [
        (json!({ "language": "python" }), "code"),
        (json!({ "language": "cobol", "code": "x" }), "language"),
        (
            json!({ "language": "python", "code": "x", "shell": true }),
            "shell",
        ),
        (
            json!({ "language": "python", "code": "x", "timeout_seconds": 61 }),
            "timeout_seconds",
        ),
        (
            json!({ "language": "python", "code": "x", "args": ["a", 1] }),
            "args[1]",
        ),
        (json!({ "language": "python", "code": "" }), "code"),
    ];
    for (arguments, field) in cases {
        let reply = developer
            .call("execute_code", arguments.clone(), false)
            .await;
        let error = &reply.response()["error"];
        assert_eq!(error["code"], -32602, "{arguments}: {}", reply.text);
        assert_eq!(error["data"]["field"], field, "{arguments}: {}", reply.text);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{error}"
        );
    }
    assert_eq!(
        recorder.seen_count(),
        0,
        "an invalid call reached the backend"
    );

    // A viewer may not execute: the gateway refuses it, as it refuses the gRPC call.
    let viewer = as_user(mcp.addr, &issuer, "viewer-1", Role::Viewer);
    let arguments = json!({ "language": "python", "code": "print(1)" });
    let reply = viewer.call("execute_code", arguments, false).await;
    let result = reply.result();
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(
        result["structuredContent"]["error"]["code"],
        "PERMISSION_DENIED"
    );
    let message = result["structuredContent"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("tools:execute"), "{message}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("PERMISSION_DENIED: "), "{text}");
    assert_eq!(recorder.seen_count(), 0);
}

#[tokio::test]
async fn execute_code_streams_output_as_progress_notifications() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let (_gw, mcp) = stack("", &recorder.url(), &issuer).await;
    let developer = as_user(mcp.addr, &issuer, "dev-1", Role::Developer)
        .with("x-correlation-id", "mcp-stream-1");
    let arguments = json!({ "language": "python", "code": "chunks:3:300" });
    let reply = developer.call("execute_code", arguments, true).await;
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{reply:?}"
    );
    let progress: Vec<&(Value, Duration)> = reply
        .messages
        .iter()
        .filter(|(m, _)| m["method"] == "notifications/progress")
        .collect();
    let messages: Vec<&str> = progress
        .iter()
        .map(|(m, _)| m["params"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["stdout: 0", "stdout: 1", "stdout: 2"]);
    assert!(
        progress
            .iter()
            .all(|(m, _)| m["params"]["progressToken"] == "p1")
    );
    let result = reply.result();
    assert_eq!(result["structuredContent"]["stdout"], "012", "{result}");
    assert_eq!(result["structuredContent"]["output_chunks"], 3);
    assert_eq!(
        result["structuredContent"]["correlation_id"],
        "mcp-stream-1"
    );
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("--- stdout ---\n012")
    );
    // The backend pauses 300 ms between chunks: the first one arrives while the run lasts.
    let first = progress[0].1;
    let done = reply.messages.last().unwrap().1;
    assert!(
        done - first >= Duration::from_millis(400),
        "{first:?} .. {done:?}"
    );
    assert_eq!(
        recorder.last().correlation_id.as_deref(),
        Some("mcp-stream-1"),
        "the correlation id reached the backend"
    );
    assert_eq!(reply.headers["x-correlation-id"], "mcp-stream-1");
}

#[tokio::test]
async fn graph_tools_prompts_and_the_schema_resource_use_the_real_graph() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let graph = crate::graph_service(dir.path(), &issuer).await;
    let (_gw, mcp) = stack(&graph.url(), "", &issuer).await;
    let admin = as_user(mcp.addr, &issuer, "admin-1", Role::Admin);
    let upsert = json!({
        "nodes": [
            { "key": "a", "labels": ["Doc"], "properties": { "n": 1, "title": "first" } },
            { "key": "b", "labels": ["Doc"], "properties": { "n": 2, "score": 0.5 } },
        ],
        "relationships": [{ "start_key": "a", "type": "LINKS", "end_key": "b" }],
    });
    let reply = admin.call("graph_upsert", upsert, false).await;
    let result = reply.result();
    assert_eq!(result["structuredContent"]["nodes_created"], 2, "{result}");
    assert_eq!(result["structuredContent"]["relationships_created"], 1);

    let query = json!({
        "cypher": "MATCH (n:Doc) WHERE n.n >= $min RETURN n.key AS key, n.n AS n ORDER BY n",
        "parameters": { "min": 2 },
    });
    let reply = admin.call("graph_query", query, false).await;
    let result = reply.result();
    assert_eq!(
        result["structuredContent"]["columns"],
        json!(["key", "n"]),
        "{result}"
    );
    // Integers stay integers both ways.
    assert_eq!(result["structuredContent"]["rows"], json!([["b", 2]]));
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("key\tn\nb\t2\n")
    );

    let reply = admin.call("graph_metrics", json!({}), false).await;
    let metrics = &reply.result()["structuredContent"];
    assert_eq!(metrics["node_count"], 2);
    assert_eq!(metrics["label_counts"]["Doc"], 2);
    assert_eq!(metrics["relationship_type_counts"]["LINKS"], 1);

    let write = json!({ "cypher": "CREATE (n:Evil) RETURN n" });
    let reply = admin.call("graph_query", write, false).await;
    assert_eq!(reply.result()["isError"], true);
    assert_eq!(
        reply.result()["structuredContent"]["error"]["code"],
        "PERMISSION_DENIED"
    );
    let viewer = as_user(mcp.addr, &issuer, "viewer-1", Role::Viewer);
    let node = json!({ "nodes": [{ "key": "c" }] });
    let reply = viewer.call("graph_upsert", node, false).await;
    assert_eq!(
        reply.result()["structuredContent"]["error"]["code"],
        "PERMISSION_DENIED"
    );

    let delete = json!({ "node_keys": ["b", "zz"], "detach": true });
    let reply = admin.call("graph_delete", delete, false).await;
    let deleted = &reply.result()["structuredContent"];
    assert_eq!(deleted["nodes_deleted"], 1, "{deleted}");
    assert_eq!(deleted["not_found"], 1);

    let reply = viewer
        .rpc("resources/read", json!({ "uri": "umcp://graph/schema" }))
        .await;
    let content = &reply.result()["contents"][0];
    assert_eq!(content["mimeType"], "application/json");
    let schema: Value = serde_json::from_str(content["text"].as_str().unwrap()).unwrap();
    assert_eq!(schema["node_count"], 1);
    assert_eq!(schema["label_counts"]["Doc"], 1);

    let reply = viewer.rpc("prompts/list", json!({})).await;
    let mut prompts: Vec<&str> = reply.result()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    prompts.sort_unstable();
    assert_eq!(prompts, ["explain_graph", "review_code", "write_tests"]);
    let reply = viewer
        .rpc(
            "prompts/get",
            json!({ "name": "explain_graph", "arguments": {} }),
        )
        .await;
    let text = reply.result()["messages"][0]["content"]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("\"Doc\": 1"), "{text}");
    let review =
        json!({ "name": "review_code", "arguments": { "language": "python", "code": "x=1" } });
    let reply = viewer.rpc("prompts/get", review).await;
    let text = reply.result()["messages"][0]["content"]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("lint_code") && text.contains("x=1"), "{text}");
}
