//! MCP through the whole mesh with the audit service: an MCP call records exactly the events
//! its gRPC call records (same services, same types, same correlation id); refusals at the MCP
//! door are recorded too; an API key works as it does over gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use umcp_audit_client::AuditClientConfig;
use umcp_authz::remote::{GrpcKeySource, ServiceCredentials};
use umcp_authz::revocations::RevocationSet;
use umcp_authz::{AuthClientConfig, Verifier};
use umcp_gateway::HttpConfig;
use umcp_proto::audit::v1::{AuditEvent, EventType, QueryRequest};
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_testkit::{Spawned, eventually};

use super::client::Client;
use crate::audit::{ADMIN_PW, Mesh, call, login, query};

const VIEWER_PW: &str = "mcp viewer password";

/// The audit mesh plus an MCP port with its own verifier (keys from the auth service) and its
/// own audit spool written with the service key, as `run_with_http` wires them.
pub(crate) struct McpMesh {
    pub(crate) mesh: Mesh,
    pub(crate) mcp: Spawned,
}

pub(crate) async fn start() -> McpMesh {
    let mesh = crate::audit::start(true, 64 << 20).await;
    let root = mesh.dir.path();
    let auth_channel = mesh.auth.channel();
    let config = AuthClientConfig {
        url: mesh.auth.url(),
        ..AuthClientConfig::default()
    };
    let verifier = Arc::new(Verifier::new(
        config.verifier_config(),
        Arc::new(GrpcKeySource::new(auth_channel.clone())),
        Arc::new(RevocationSet::new()),
    ));
    let key = std::fs::read_to_string(root.join("service-api-key.txt")).unwrap();
    let credentials: Arc<dyn umcp_audit_client::TokenProvider> =
        Arc::new(ServiceCredentials::new(auth_channel, key.trim().to_owned()));
    let audit = AuditClientConfig {
        url: mesh.audit.as_ref().unwrap().url(),
        spool_dir: root.join("spool/mcp"),
        batch_delay_ms: 5,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..AuditClientConfig::default()
    };
    let emitter = umcp_audit_client::start_emitter(&audit, Some(credentials), "gateway").unwrap();
    let mcp = super::mcp_port(&mesh.gateway, verifier, emitter, HttpConfig::default()).await;
    McpMesh { mesh, mcp }
}

/// Creates user `name` with `role` and returns its access token.
pub(crate) async fn user(mesh: &Mesh, admin: &str, name: &str, role: pb::Role) -> String {
    AuthServiceClient::new(mesh.gateway.channel())
        .create_user(call(
            pb::CreateUserRequest {
                username: name.into(),
                password: VIEWER_PW.into(),
                roles: vec![role as i32],
            },
            Some(admin),
            "mcp-setup",
        ))
        .await
        .unwrap();
    login(mesh.gateway.channel(), name, VIEWER_PW, "mcp-login").await
}

type Tally = BTreeMap<(String, EventType), usize>;

fn tally(events: &[AuditEvent]) -> Tally {
    let mut tally = BTreeMap::new();
    for e in events {
        let kind = EventType::try_from(e.event_type).unwrap();
        *tally.entry((e.service.clone(), kind)).or_insert(0) += 1;
    }
    tally
}

/// The events of `correlation` once `want` of them arrived and nothing more did for 200 ms.
pub(crate) async fn events_of(
    mesh: &Mesh,
    admin: &str,
    correlation: &str,
    want: usize,
) -> Vec<AuditEvent> {
    let filter = QueryRequest {
        correlation_id: correlation.to_owned(),
        ..Default::default()
    };
    let channel = mesh.gateway.channel();
    let arrived = eventually(Duration::from_secs(10), || {
        let (channel, filter) = (channel.clone(), filter.clone());
        async move { query(channel, admin, filter).await.len() >= want }
    })
    .await;
    assert!(arrived, "{correlation}: fewer than {want} events arrived");
    tokio::time::sleep(Duration::from_millis(200)).await;
    query(channel, admin, filter).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_record_the_events_of_their_grpc_calls() {
    let McpMesh { mesh, mcp } = start().await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW, "mcp-admin").await;
    let viewer = user(&mesh, &admin, "mcp-viewer", pb::Role::Viewer).await;

    // Anonymous: refused at the door, recorded as the gRPC auth layer records it.
    let reply = Client::new(mcp.addr, None)
        .with("x-correlation-id", "mcp-anon")
        .rpc("tools/list", json!({}))
        .await;
    assert_eq!(reply.status, 401);
    let events = events_of(&mesh, &admin, "mcp-anon", 1).await;
    assert_eq!(
        tally(&events),
        [(("gateway".to_owned(), EventType::AuthFailure), 1)].into()
    );
    assert_eq!(events[0].resource, "/mcp");
    assert!(!events[0].outcome.as_ref().unwrap().success);

    // Under-privileged: the gateway's denial, exactly as for the gRPC call.
    let reply = Client::new(mcp.addr, Some(&format!("Bearer {viewer}")))
        .with("x-correlation-id", "mcp-denied")
        .call(
            "execute_code",
            json!({ "language": "python", "code": "print(1)" }),
            false,
        )
        .await;
    assert_eq!(
        reply.result()["structuredContent"]["error"]["code"],
        "PERMISSION_DENIED"
    );
    let events = events_of(&mesh, &admin, "mcp-denied", 1).await;
    assert_eq!(
        tally(&events),
        [(("gateway".to_owned(), EventType::AuthzDenied), 1)].into()
    );
    assert_eq!(events[0].actor.as_ref().unwrap().roles, ["viewer"]);
    assert_eq!(
        events[0].resource,
        "/umcp.execution.v1.ExecutionService/ExecuteStream"
    );

    // A write: the same four events as the gRPC upsert (gateway and graph decisions, the
    // graph's before and after records).
    let node = json!({ "nodes": [{ "key": "m1", "labels": ["Doc"] }] });
    let reply = Client::new(mcp.addr, Some(&format!("Bearer {admin}")))
        .with("x-correlation-id", "mcp-write")
        .call("graph_upsert", node, false)
        .await;
    assert_eq!(reply.result()["structuredContent"]["nodes_created"], 1);
    let events = events_of(&mesh, &admin, "mcp-write", 4).await;
    let expected: Tally = [
        (("gateway".to_owned(), EventType::AuthzGranted), 1),
        (("graph".to_owned(), EventType::AuthzGranted), 1),
        (("graph".to_owned(), EventType::GraphUpsert), 1),
        (("graph".to_owned(), EventType::DataWrite), 1),
    ]
    .into();
    assert_eq!(tally(&events), expected);

    // The admin reads them back through MCP too.
    let reply = Client::new(mcp.addr, Some(&format!("Bearer {admin}")))
        .call(
            "audit_query",
            json!({ "correlation_id": "mcp-denied", "event_types": ["authz_denied"] }),
            false,
        )
        .await;
    let found = &reply.result()["structuredContent"]["events"];
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["event_type"], "authz_denied");
    assert_eq!(found[0]["outcome"]["success"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_accepted_like_a_token() {
    let McpMesh { mesh, mcp } = start().await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW, "mcp-admin").await;
    let created = AuthServiceClient::new(mesh.gateway.channel())
        .create_api_key(call(
            pb::CreateApiKeyRequest {
                name: "mcp-agent".into(),
                ..Default::default()
            },
            Some(&admin),
            "mcp-key",
        ))
        .await
        .unwrap()
        .into_inner();
    for client in [
        Client::new(mcp.addr, Some(&format!("Bearer {}", created.api_key))),
        Client::new(mcp.addr, None).with("x-api-key", &created.api_key),
    ] {
        for _ in 0..2 {
            let reply = client.call("whoami", json!({}), false).await;
            let me = &reply.result()["structuredContent"];
            assert_eq!(me["username"], "admin", "{}", reply.text);
            assert_eq!(me["auth_method"], "api_key", "{me}");
        }
    }
    let revoked = format!("Bearer {}x", created.api_key);
    let reply = Client::new(mcp.addr, Some(&revoked))
        .rpc("tools/list", json!({}))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}
