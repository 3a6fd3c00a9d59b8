//! The mesh as it runs in production, in one process: the real auth service, the graph service
//! and the gateway, each verifying tokens with the JWKS it fetches from auth and following its
//! revocation stream with the bootstrap service key. Flows that need the real auth service:
//! logout, refresh reuse, disabled users and key rotation, checked at the gateway AND at the
//! graph service's own port.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request};
use umcp_auth::{AuthConfig, PasswordConfig, Secret};
use umcp_authz::AuthClientConfig;
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::graph::v1::GetMetricsRequest;
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_testkit::{Spawned, eventually};

const ADMIN_PW: &str = "mesh-admin-password";
const USER_PW: &str = "mesh developer password";

pub(crate) struct Mesh {
    _dir: tempfile::TempDir,
    pub(crate) auth: Spawned,
    pub(crate) graph: Spawned,
    pub(crate) gateway: Spawned,
}

/// These tests are about tokens; the audit tests run the mesh with a real audit service.
fn no_audit() -> umcp_audit_client::AuditClientConfig {
    umcp_audit_client::AuditClientConfig {
        url: String::new(),
        ..umcp_audit_client::AuditClientConfig::default()
    }
}

fn client_config(auth: &Spawned, key_file: &std::path::Path) -> AuthClientConfig {
    AuthClientConfig {
        url: auth.url(),
        api_key_file: key_file.display().to_string(),
        leeway_secs: 0,
        jwks_refresh_secs: 1,
        ..AuthClientConfig::default()
    }
}

pub(crate) async fn start_mesh(access_ttl_secs: u64) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let key_file: PathBuf = dir.path().join("service-api-key.txt");
    let auth_config = AuthConfig {
        data_root: dir.path().to_path_buf(),
        bootstrap_admin_password: Some(Secret::new(ADMIN_PW)),
        bootstrap_service_key_file: Some(key_file.clone()),
        password: PasswordConfig::fast_for_tests(),
        access_ttl_secs,
        clock_leeway_secs: 0,
        janitor_interval_secs: 1,
        trust_forwarded_for: true,
        audit: no_audit(),
        ..AuthConfig::default()
    };
    let auth = Spawned::start(|l, stop| umcp_auth::run(l, auth_config, stop.wait())).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let ready = key_file.exists();
            async move { ready }
        })
        .await,
        "auth never wrote the service key"
    );

    let graph_config = umcp_graph::GraphConfig {
        data_dir: dir.path().join("graph"),
        auth: client_config(&auth, &key_file),
        audit: no_audit(),
        ..umcp_graph::GraphConfig::default()
    };
    let graph = Spawned::start(|l, stop| umcp_graph::run(l, graph_config, stop.wait())).await;

    let mut gw_config = umcp_gateway::GatewayConfig::default();
    gw_config.backends.auth = auth.url();
    gw_config.backends.graph = graph.url();
    gw_config.backends.execution = String::new();
    gw_config.backends.audit = String::new();
    gw_config.auth = client_config(&auth, &key_file);
    gw_config.audit = no_audit();
    // Token flows under load, with many logins: rate limits have their own tests.
    gw_config.rate_limits.enabled = false;
    let gateway = Spawned::start(|l, stop| umcp_gateway::run(l, gw_config, stop.wait())).await;
    Mesh {
        _dir: dir,
        auth,
        graph,
        gateway,
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) async fn login(channel: Channel, user: &str, password: &str) -> pb::Tokens {
    AuthServiceClient::new(channel)
        .login(pb::LoginRequest {
            username: user.into(),
            password: password.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("login {user}: {s:?}"))
        .into_inner()
        .tokens
        .unwrap()
}

/// Creates `name` as a developer through the gateway and returns its user id.
async fn create_developer(mesh: &Mesh, admin: &str, name: &str) -> String {
    AuthServiceClient::new(mesh.gateway.channel())
        .create_user(with_token(
            pb::CreateUserRequest {
                username: name.into(),
                password: USER_PW.into(),
                roles: vec![pb::Role::Developer as i32],
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id
}

async fn metrics(channel: Channel, token: &str) -> Code {
    match GraphServiceClient::new(channel)
        .get_metrics(with_token(GetMetricsRequest {}, token))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Asserts `token` works at the gateway and at the graph port now.
async fn accepted_everywhere(mesh: &Mesh, token: &str, what: &str) {
    assert_eq!(
        metrics(mesh.gateway.channel(), token).await,
        Code::Ok,
        "gateway: {what}"
    );
    assert_eq!(
        metrics(mesh.graph.channel(), token).await,
        Code::Ok,
        "graph: {what}"
    );
}

/// Asserts `token` is refused at the gateway and at the graph port within one second.
async fn refused_everywhere_within_a_second(mesh: &Mesh, token: &str, what: &str) {
    let started = Instant::now();
    for (name, channel) in [
        ("gateway", mesh.gateway.channel()),
        ("graph", mesh.graph.channel()),
    ] {
        let refused = eventually(Duration::from_secs(1), || {
            let channel = channel.clone();
            async move { metrics(channel, token).await == Code::Unauthenticated }
        })
        .await;
        assert!(
            refused,
            "{name}: {what} still accepted after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refresh_reuse_and_disabling_reach_every_verifier_within_a_second() {
    let mesh = start_mesh(900).await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW)
        .await
        .access_token;
    let dev_id = create_developer(&mesh, &admin, "dev").await;

    // Logout: the presented token and its session die everywhere.
    let session = login(mesh.gateway.channel(), "dev", USER_PW).await;
    accepted_everywhere(&mesh, &session.access_token, "fresh login").await;
    AuthServiceClient::new(mesh.gateway.channel())
        .logout(with_token(
            pb::LogoutRequest::default(),
            &session.access_token,
        ))
        .await
        .unwrap();
    refused_everywhere_within_a_second(&mesh, &session.access_token, "token after logout").await;

    // Refresh reuse: presenting a rotated refresh token revokes the whole family.
    let first = login(mesh.gateway.channel(), "dev", USER_PW).await;
    let mut auth = AuthServiceClient::new(mesh.gateway.channel());
    let second = auth
        .refresh(pb::RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    accepted_everywhere(&mesh, &second.access_token, "rotated session").await;
    let reuse = auth
        .refresh(pb::RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    refused_everywhere_within_a_second(
        &mesh,
        &first.access_token,
        "first token of a reused family",
    )
    .await;
    refused_everywhere_within_a_second(
        &mesh,
        &second.access_token,
        "second token of a reused family",
    )
    .await;
    let after = auth
        .refresh(pb::RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the family's newest refresh token is dead too"
    );

    // Disabling: every token of the user stops working.
    let live = login(mesh.gateway.channel(), "dev", USER_PW).await;
    accepted_everywhere(&mesh, &live.access_token, "before disabling").await;
    auth.disable_user(with_token(
        pb::DisableUserRequest { user_id: dev_id },
        &admin,
    ))
    .await
    .unwrap();
    refused_everywhere_within_a_second(&mesh, &live.access_token, "token of a disabled user").await;
    let status = AuthServiceClient::new(mesh.gateway.channel())
        .login(pb::LoginRequest {
            username: "dev".into(),
            password: USER_PW.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_fails_no_valid_token() {
    let mesh = start_mesh(900).await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW)
        .await
        .access_token;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (gateway, graph) = (mesh.gateway.channel(), mesh.graph.channel());
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            let mut token = login(gateway.clone(), "admin", ADMIN_PW).await.access_token;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Fresh logins during the rotation get tokens signed by the newest key, which
                // every verifier must learn on first sight of its kid.
                if (n + worker).is_multiple_of(20) {
                    token = login(gateway.clone(), "admin", ADMIN_PW).await.access_token;
                }
                let target = if n.is_multiple_of(2) {
                    gateway.clone()
                } else {
                    graph.clone()
                };
                match metrics(target, &token).await {
                    Code::Ok => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    let mut auth = AuthServiceClient::new(mesh.gateway.channel());
    let mut kids = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let rotated = auth
            .rotate_signing_key(with_token(pb::RotateSigningKeyRequest {}, &admin))
            .await
            .unwrap()
            .into_inner();
        kids.push(rotated.kid);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} valid calls failed during 3 rotations",
        ok + failed
    );
    let jwks = auth
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    for kid in kids {
        assert!(
            jwks.keys.iter().any(|k| k.kid == kid),
            "{kid} not published"
        );
    }
}

/// Takes a bit over a minute: the shortest access-token lifetime the auth service accepts is
/// 60 s, and a retired key is published for that long after a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_out_after_its_grace_period_is_refused() {
    let mesh = start_mesh(60).await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW)
        .await
        .access_token;
    let old_token = login(mesh.gateway.channel(), "admin", ADMIN_PW)
        .await
        .access_token;
    let mut auth = AuthServiceClient::new(mesh.auth.channel());
    let old_kid = auth
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .kid
        .clone();
    auth.rotate_signing_key(with_token(pb::RotateSigningKeyRequest {}, &admin))
        .await
        .unwrap();
    accepted_everywhere(&mesh, &old_token, "old key within its grace period").await;
    let retired = eventually(Duration::from_secs(75), || {
        let mut auth = auth.clone();
        let old_kid = old_kid.clone();
        async move {
            let keys = auth
                .get_jwks(pb::GetJwksRequest {})
                .await
                .unwrap()
                .into_inner()
                .keys;
            !keys.iter().any(|k| k.kid == old_kid)
        }
    })
    .await;
    assert!(retired, "the old key was never retired");
    refused_everywhere_within_a_second(&mesh, &old_token, "token of a retired key").await;
}
