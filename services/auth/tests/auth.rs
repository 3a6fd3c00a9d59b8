//! The auth service end to end: a real server on 127.0.0.1:0 with its data in a temp dir.

#[path = "auth/admin.rs"]
mod admin;
#[path = "auth/keys.rs"]
mod keys;
#[path = "auth/shared.rs"]
mod shared;
#[path = "auth/sign_in.rs"]
mod sign_in;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use umcp_auth::{AuthConfig, PasswordConfig, Secret, ThrottleConfig};
use umcp_authz::claims::Claims;
use umcp_authz::jws;
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_proto::common::v1::PageRequest;
use umcp_testkit::Spawned;

const ADMIN_PW: &str = "bootstrap-admin-pw";
const USER_PW: &str = "a long user password";

type Client = AuthServiceClient<Channel>;

fn config(dir: &Path) -> AuthConfig {
    AuthConfig {
        data_root: dir.to_path_buf(),
        bootstrap_admin_password: Some(Secret::new(ADMIN_PW)),
        password: PasswordConfig::fast_for_tests(),
        janitor_interval_secs: 1,
        // These tests are about auth alone; the mesh tests run it with a real audit service.
        audit: umcp_audit_client::AuditClientConfig {
            url: String::new(),
            ..umcp_audit_client::AuditClientConfig::default()
        },
        ..AuthConfig::default()
    }
}

async fn start(config: AuthConfig) -> (Spawned, Client) {
    let server =
        Spawned::start(|listener, stop| umcp_auth::run(listener, config, stop.wait())).await;
    let client = AuthServiceClient::new(server.channel());
    (server, client)
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii token");
    request.metadata_mut().insert("authorization", value);
    request
}

async fn login(c: &mut Client, username: &str, password: &str) -> Result<pb::Tokens, Status> {
    let request = pb::LoginRequest {
        username: username.into(),
        password: password.into(),
    };
    Ok(c.login(request).await?.into_inner().tokens.expect("tokens"))
}

async fn admin(c: &mut Client) -> String {
    login(c, "admin", ADMIN_PW)
        .await
        .expect("admin login")
        .access_token
}

async fn create_user(c: &mut Client, admin: &str, name: &str, roles: &[pb::Role]) -> pb::User {
    let request = pb::CreateUserRequest {
        username: name.into(),
        password: USER_PW.into(),
        roles: roles.iter().map(|r| *r as i32).collect(),
    };
    c.create_user(authed(request, admin))
        .await
        .expect("create user")
        .into_inner()
        .user
        .unwrap()
}

async fn whoami(c: &mut Client, token: &str) -> Result<pb::WhoAmIResponse, Status> {
    Ok(c.who_am_i(authed(pb::WhoAmIRequest {}, token))
        .await?
        .into_inner())
}

/// Verifies a token the way any other service does: with a key from `GetJwks`.
async fn claims(c: &mut Client, token: &str) -> Claims {
    let jwks = c
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let parsed = jws::parse(token).unwrap();
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == parsed.header.kid)
        .expect("kid published");
    let validation = jws::validation(
        umcp_authz::claims::DEFAULT_ISSUER,
        umcp_authz::claims::DEFAULT_AUDIENCE,
        0,
    );
    parsed
        .verify(&jws::decode_public_key(&jwk.x).unwrap(), &validation)
        .unwrap()
}

async fn create_key(
    c: &mut Client,
    token: &str,
    req: pb::CreateApiKeyRequest,
) -> Result<pb::CreateApiKeyResponse, Status> {
    Ok(c.create_api_key(authed(req, token)).await?.into_inner())
}

async fn exchange(c: &mut Client, key: &str) -> Result<pb::Tokens, Status> {
    let request = pb::ExchangeApiKeyRequest {
        api_key: key.into(),
    };
    Ok(c.exchange_api_key(request)
        .await?
        .into_inner()
        .tokens
        .unwrap())
}

fn key_req(name: &str, roles: &[pb::Role]) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name: name.into(),
        roles: roles.iter().map(|r| *r as i32).collect(),
        ..Default::default()
    }
}

/// A `WatchRevocations` stream opened by a fresh service-role user, with its snapshot.
async fn watch(
    c: &mut Client,
    admin: &str,
    name: &str,
) -> (
    tonic::Streaming<pb::WatchRevocationsResponse>,
    pb::WatchRevocationsResponse,
) {
    create_user(c, admin, name, &[pb::Role::Service]).await;
    let token = login(c, name, USER_PW).await.unwrap().access_token;
    let mut stream = c
        .watch_revocations(authed(pb::WatchRevocationsRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    let snapshot = stream.message().await.unwrap().unwrap();
    assert!(snapshot.snapshot);
    (stream, snapshot)
}

async fn next_revocation(
    stream: &mut tonic::Streaming<pb::WatchRevocationsResponse>,
) -> pb::Revocation {
    let batch = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a revocation within 5 s")
        .unwrap()
        .unwrap();
    assert!(!batch.snapshot);
    batch.revocations.into_iter().next().unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("call must fail").code()
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
