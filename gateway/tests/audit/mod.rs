//! Audit events through the whole mesh, in one process: the real auth, audit, graph, execution
//! services and the gateway, each producer with its own spool and the service key. One scenario
//! (login, a denied call, a graph write, an execute, a lint) must produce exactly the expected
//! events, each with the request's correlation id, and stay queryable by every filter. Then the
//! fail-closed rule: with audit down and the spool full, executing code is refused while a read
//! still works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Request};
use umcp_audit_client::AuditClientConfig;
use umcp_auth::{AuthConfig, PasswordConfig, Secret};
use umcp_authz::AuthClientConfig;
use umcp_proto::audit::v1::audit_service_client::AuditServiceClient;
use umcp_proto::audit::v1::{AuditEvent, EventType, QueryRequest};
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use umcp_proto::execution::v1::{ExecuteRequest, Language, LintRequest};
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{GetMetricsRequest, NodeInput, UpsertRequest};
use umcp_testkit::{Spawned, eventually};

pub(crate) const ADMIN_PW: &str = "audit-admin-password";
const DEV_PW: &str = "audit developer password";

pub(crate) struct Mesh {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) audit: Option<Spawned>,
    pub(crate) auth: Spawned,
    pub(crate) graph: Spawned,
    pub(crate) execution: Spawned,
    pub(crate) gateway: Spawned,
}

fn audit_client(url: &str, spool: PathBuf, max_bytes: u64) -> AuditClientConfig {
    AuditClientConfig {
        url: url.to_owned(),
        spool_dir: spool,
        spool_max_bytes: max_bytes,
        batch_delay_ms: 5,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..AuditClientConfig::default()
    }
}

fn verifier(auth: &Spawned, key_file: &Path) -> AuthClientConfig {
    AuthClientConfig {
        url: auth.url(),
        api_key_file: key_file.display().to_string(),
        jwks_refresh_secs: 1,
        ..AuthClientConfig::default()
    }
}

/// The mesh; `audit_up` false leaves the audit URL pointing at a closed port and gives every
/// producer a spool of `spool_bytes`.
pub(crate) async fn start(audit_up: bool, spool_bytes: u64) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key_file = root.join("service-api-key.txt");
    let audit_port = umcp_testkit::free_port();
    let audit_url = format!("http://127.0.0.1:{audit_port}");
    let spool = |name: &str| audit_client(&audit_url, root.join("spool").join(name), spool_bytes);

    let auth_config = AuthConfig {
        data_root: root.to_path_buf(),
        bootstrap_admin_password: Some(Secret::new(ADMIN_PW)),
        bootstrap_service_key_file: Some(key_file.clone()),
        password: PasswordConfig::fast_for_tests(),
        trust_forwarded_for: true,
        audit: spool("auth"),
        ..AuthConfig::default()
    };
    let auth = Spawned::start(|l, stop| umcp_auth::run(l, auth_config, stop.wait())).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let ready = key_file.exists();
            async move { ready }
        })
        .await
    );

    let audit = if audit_up {
        let config = umcp_audit::AuditConfig {
            listen: format!("127.0.0.1:{audit_port}"),
            data_dir: root.join("audit"),
            key_file: root.join("audit/chain.key"),
            auth: verifier(&auth, &key_file),
            ..umcp_audit::AuditConfig::default()
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", audit_port))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            umcp_audit::run(listener, config, async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        Some(Spawned::adopt(
            ([127, 0, 0, 1], audit_port).into(),
            tx,
            handle,
        ))
    } else {
        None
    };

    let graph_config = umcp_graph::GraphConfig {
        data_dir: root.join("graph"),
        auth: verifier(&auth, &key_file),
        audit: spool("graph"),
        ..umcp_graph::GraphConfig::default()
    };
    let graph = Spawned::start(|l, stop| umcp_graph::run(l, graph_config, stop.wait())).await;

    let execution_config = umcp_execution::ExecutionConfig {
        max_concurrent: 2,
        max_per_user: 2,
        max_queue: 4,
        uid_base: 59_000,
        tools_venv: Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
        graph_url: String::new(),
        auth: verifier(&auth, &key_file),
        audit: spool("execution"),
        ..umcp_execution::ExecutionConfig::default()
    };
    let execution =
        Spawned::start(|l, stop| umcp_execution::run(l, execution_config, stop.wait())).await;

    let mut gw_config = umcp_gateway::GatewayConfig::default();
    gw_config.backends.auth = auth.url();
    gw_config.backends.graph = graph.url();
    gw_config.backends.execution = execution.url();
    gw_config.backends.audit = audit_url.clone();
    gw_config.auth = verifier(&auth, &key_file);
    gw_config.audit = spool("gateway");
    // The hardening walk calls every RPC many times: rate limits have their own tests.
    gw_config.rate_limits.enabled = false;
    let gateway = Spawned::start(|l, stop| umcp_gateway::run(l, gw_config, stop.wait())).await;
    Mesh {
        dir,
        audit,
        auth,
        graph,
        execution,
        gateway,
    }
}

fn one_node() -> UpsertRequest {
    UpsertRequest {
        nodes: vec![NodeInput {
            key: "n1".into(),
            ..Default::default()
        }],
        relationships: vec![],
    }
}

pub(crate) fn call<T>(message: T, token: Option<&str>, correlation: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation.parse().unwrap());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

pub(crate) async fn login(
    channel: Channel,
    user: &str,
    password: &str,
    correlation: &str,
) -> String {
    AuthServiceClient::new(channel)
        .login(call(
            pb::LoginRequest {
                username: user.into(),
                password: password.into(),
            },
            None,
            correlation,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

pub(crate) async fn query(channel: Channel, admin: &str, filter: QueryRequest) -> Vec<AuditEvent> {
    AuditServiceClient::new(channel)
        .query(call(filter, Some(admin), "audit-reader"))
        .await
        .unwrap()
        .into_inner()
        .events
}

/// `(service, event type)` → count, for the events of one correlation id.
type Tally = BTreeMap<(String, EventType), usize>;

fn tally(events: &[AuditEvent]) -> Tally {
    let mut tally = BTreeMap::new();
    for e in events {
        let kind = EventType::try_from(e.event_type).unwrap();
        *tally.entry((e.service.clone(), kind)).or_insert(0) += 1;
    }
    tally
}

fn expect(rows: &[(&str, EventType, usize)]) -> Tally {
    rows.iter()
        .map(|(s, t, n)| (((*s).to_owned(), *t), *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scenario_produces_exactly_the_expected_events() {
    let mesh = start(true, 64 << 20).await;
    let gw = mesh.gateway.channel();
    let admin = login(gw.clone(), "admin", ADMIN_PW, "scn-login").await;
    AuthServiceClient::new(gw.clone())
        .create_user(call(
            pb::CreateUserRequest {
                username: "dev".into(),
                password: DEV_PW.into(),
                roles: vec![pb::Role::Developer as i32],
            },
            Some(&admin),
            "scn-setup",
        ))
        .await
        .unwrap();
    let dev = login(gw.clone(), "dev", DEV_PW, "scn-login-dev").await;

    let denied = GraphServiceClient::new(gw.clone())
        .upsert(call(one_node(), Some(&dev), "scn-denied"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    GraphServiceClient::new(gw.clone())
        .upsert(call(one_node(), Some(&admin), "scn-write"))
        .await
        .unwrap();
    let ran = ExecutionServiceClient::new(gw.clone())
        .execute(call(
            ExecuteRequest {
                language: Language::Python as i32,
                code: "print(6 * 7)".into(),
                ..Default::default()
            },
            Some(&dev),
            "scn-exec",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ran.stdout, b"42\n");
    ExecutionServiceClient::new(gw.clone())
        .lint(call(
            LintRequest {
                language: Language::Python as i32,
                code: "import os\n".into(),
            },
            Some(&dev),
            "scn-lint",
        ))
        .await
        .unwrap();

    use EventType::{
        AuthSuccess, AuthzDenied, AuthzGranted, CodeExecution, CodeLint, DataWrite, GraphUpsert,
    };
    let scenario: Vec<(&str, Tally)> = vec![
        ("scn-login", expect(&[("auth", AuthSuccess, 1)])),
        ("scn-denied", expect(&[("gateway", AuthzDenied, 1)])),
        (
            "scn-write",
            expect(&[
                ("gateway", AuthzGranted, 1),
                ("graph", AuthzGranted, 1),
                ("graph", GraphUpsert, 1),
                ("graph", DataWrite, 1),
            ]),
        ),
        (
            "scn-exec",
            expect(&[
                ("gateway", AuthzGranted, 1),
                ("execution", AuthzGranted, 1),
                ("execution", CodeExecution, 2),
            ]),
        ),
        (
            "scn-lint",
            expect(&[
                ("gateway", AuthzGranted, 1),
                ("execution", AuthzGranted, 1),
                ("execution", CodeLint, 1),
            ]),
        ),
    ];
    for (correlation, wanted) in &scenario {
        let filter = QueryRequest {
            correlation_id: (*correlation).to_owned(),
            ..Default::default()
        };
        let arrived = eventually(Duration::from_secs(10), || {
            let (gw, admin, filter) = (gw.clone(), admin.clone(), filter.clone());
            let want: usize = wanted.values().sum();
            async move { query(gw, &admin, filter).await.len() >= want }
        })
        .await;
        let events = query(gw.clone(), &admin, filter).await;
        assert!(
            arrived,
            "{correlation}: events did not arrive: {:?}",
            tally(&events)
        );
        // Settle: nothing more may arrive for this request.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events = query(
            gw.clone(),
            &admin,
            QueryRequest {
                correlation_id: (*correlation).to_owned(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(&tally(&events), wanted, "{correlation}");
        for e in &events {
            assert_eq!(e.correlation_id, *correlation);
            assert!(!e.event_id.is_empty() && e.sequence > 0 && !e.chain_hash.is_empty());
        }
    }

    // Each filter finds its events.
    let denied = query(
        gw.clone(),
        &admin,
        QueryRequest {
            event_types: vec![AuthzDenied as i32],
            ..Default::default()
        },
    )
    .await;
    assert!(denied.iter().any(|e| e.correlation_id == "scn-denied"));
    let dev_id = denied[0].actor.as_ref().unwrap().user_id.clone();
    let by_user = query(
        gw.clone(),
        &admin,
        QueryRequest {
            user_id: dev_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        by_user
            .iter()
            .all(|e| e.actor.as_ref().unwrap().user_id == dev_id)
    );
    assert!(by_user.iter().any(|e| e.event_type == CodeExecution as i32));
    let failures = query(
        gw.clone(),
        &admin,
        QueryRequest {
            failures_only: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        failures
            .iter()
            .all(|e| !e.outcome.as_ref().unwrap().success)
    );
    assert!(failures.iter().any(|e| e.correlation_id == "scn-denied"));
    let since =
        prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(3600));
    let recent = query(
        gw.clone(),
        &admin,
        QueryRequest {
            since: Some(since),
            ..Default::default()
        },
    )
    .await;
    assert!(recent.len() >= 12, "{}", recent.len());
    // Code is never in an event, only its digest.
    for e in &recent {
        for value in e.details.values() {
            assert!(!format!("{value:?}").contains("print(6 * 7)"));
        }
    }
    drop(mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_audit_down_and_the_spool_full_execution_is_refused_but_reads_work() {
    // A spool of 4 KiB holds a few events; the audit service never comes up.
    let mesh = start(false, 4096).await;
    assert!(mesh.audit.is_none());
    let gw = mesh.gateway.channel();
    let admin = login(gw.clone(), "admin", ADMIN_PW, "fc-login").await;
    let mut refused = None;
    for i in 0..50 {
        let result = ExecutionServiceClient::new(gw.clone())
            .execute(call(
                ExecuteRequest {
                    language: Language::Bash as i32,
                    code: "echo hi".into(),
                    ..Default::default()
                },
                Some(&admin),
                &format!("fc-exec-{i}"),
            ))
            .await;
        if let Err(status) = result {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("execution kept running although nothing could be audited");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit"), "{}", status.message());
    // Reads fail open.
    GraphServiceClient::new(gw.clone())
        .get_metrics(call(GetMetricsRequest {}, Some(&admin), "fc-read"))
        .await
        .expect("a read works while audit is down");
    assert!(mesh.dir.path().join("spool").exists());
}
