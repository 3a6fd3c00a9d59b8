//! The auth service end to end: a real server on 127.0.0.1:0 with its data in a temp dir.

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
    parsed
        .verify(&jws::decode_public_key(&jwk.x).unwrap())
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

#[tokio::test]
async fn login_succeeds_and_unknown_user_looks_like_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    // Real OWASP parameters here, so equal timing is measured on the production path.
    let cfg = AuthConfig {
        password: PasswordConfig::default(),
        ..config(dir.path())
    };
    let (server, mut c) = start(cfg).await;
    let tokens = login(&mut c, "ADMIN", ADMIN_PW).await.unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in_seconds, 900);
    assert_eq!(tokens.refresh_expires_in_seconds, 7 * 24 * 3600);
    assert!(tokens.refresh_token.starts_with("umcp_rt_"));
    let me = whoami(&mut c, &tokens.access_token).await.unwrap();
    assert_eq!(
        (me.username.as_str(), me.auth_method.as_str()),
        ("admin", "password")
    );
    assert_eq!(me.roles, vec![pb::Role::Admin as i32]);
    assert!(me.permissions.contains(&"system:admin".to_owned()));
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
    let check = tonic_health::pb::HealthCheckRequest {
        service: "umcp.auth.v1.AuthService".into(),
    };
    let serving = health.check(check).await.unwrap().into_inner().status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let cl = claims(&mut c, &tokens.access_token).await;
    assert_eq!(
        (cl.iss.as_str(), cl.aud.as_str(), cl.exp - cl.iat),
        ("umcp-auth", "umcp", 900)
    );
    assert_eq!(uuid::Uuid::parse_str(&cl.jti).unwrap().get_version_num(), 7);

    let (mut unknown, mut wrong) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let t = Instant::now();
        let a = login(&mut c, "nobody", "whatever").await.unwrap_err();
        unknown = unknown.min(t.elapsed());
        let t = Instant::now();
        let b = login(&mut c, "admin", "wrong password").await.unwrap_err();
        wrong = wrong.min(t.elapsed());
        assert_eq!(
            (a.code(), a.message()),
            (Code::Unauthenticated, "invalid username or password")
        );
        assert_eq!((b.code(), b.message()), (a.code(), a.message()));
    }
    assert!(
        unknown * 2 > wrong,
        "unknown user {unknown:?} vs wrong password {wrong:?}"
    );

    for (user, pw) in [
        ("", "x"),
        ("a b", "x"),
        (&*"u".repeat(65), "x"),
        ("admin", ""),
        ("admin", &*"p".repeat(1025)),
    ] {
        let status = login(&mut c, user, pw).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{user:?}: {status:?}");
    }
    assert_eq!(
        code(whoami(&mut c, "not-a-token").await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.who_am_i(pb::WhoAmIRequest {}).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_user_and_per_peer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuthConfig {
        login_throttle: ThrottleConfig {
            free_failures_per_user: 3,
            free_failures_per_peer: 8,
            base_delay_ms: 1000,
            ..ThrottleConfig::default()
        },
        ..config(dir.path())
    };
    let (_server, mut c) = start(cfg).await;
    for _ in 0..3 {
        assert_eq!(
            code(login(&mut c, "admin", "wrong").await),
            Code::Unauthenticated
        );
    }
    let status = login(&mut c, "admin", ADMIN_PW).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login(&mut c, "admin", ADMIN_PW)
        .await
        .expect("lock expired");

    // Five more failures from this address, each for a different name: the address locks.
    for i in 0..5 {
        assert_eq!(
            code(login(&mut c, &format!("ghost{i}"), "x").await),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        code(login(&mut c, "admin", ADMIN_PW).await),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    let (mut stream, _) = watch(&mut c, &admin, "watcher").await;
    create_user(&mut c, &admin, "dev", &[pb::Role::Developer]).await;
    let first = login(&mut c, "dev", USER_PW).await.unwrap();
    let sid = claims(&mut c, &first.access_token).await.sid;

    let refresh = |t: &str| pb::RefreshRequest {
        refresh_token: t.into(),
    };
    let second = c
        .refresh(refresh(&first.refresh_token))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    let cl = claims(&mut c, &second.access_token).await;
    assert_eq!(cl.sid, sid, "the family id carries over");
    assert_eq!(
        whoami(&mut c, &second.access_token)
            .await
            .unwrap()
            .auth_method,
        "refresh"
    );

    // Reuse of the rotated token: the whole family dies, and verifiers hear about it.
    let reuse = c.refresh(refresh(&first.refresh_token)).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("already used"), "{reuse:?}");
    let r = next_revocation(&mut stream).await;
    assert_eq!(
        (r.kind, r.id.as_str()),
        (pb::RevocationKind::Session as i32, sid.as_str())
    );
    assert!(r.expires_at.unwrap().seconds > r.revoked_at.unwrap().seconds);
    assert_eq!(
        code(c.refresh(refresh(&second.refresh_token)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(whoami(&mut c, &second.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(whoami(&mut c, &first.access_token).await),
        Code::Unauthenticated
    );

    assert_eq!(code(c.refresh(refresh("")).await), Code::InvalidArgument);
    assert_eq!(
        code(c.refresh(refresh("umcp_rt_garbage")).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn logout_revokes_the_token_and_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = start(config(dir.path())).await;
    let tokens = login(&mut c, "admin", ADMIN_PW).await.unwrap();
    let other = login(&mut c, "admin", ADMIN_PW).await.unwrap();
    let logout = |refresh: &str| pb::LogoutRequest {
        refresh_token: refresh.into(),
    };
    let status = c
        .logout(authed(logout("umcp_rt_nope"), &tokens.access_token))
        .await;
    assert_eq!(code(status), Code::Unauthenticated);
    create_user(&mut c, &tokens.access_token, "someone", &[pb::Role::Viewer]).await;
    let someone = login(&mut c, "someone", USER_PW).await.unwrap();
    let status = c
        .logout(authed(logout(&someone.refresh_token), &tokens.access_token))
        .await;
    assert_eq!(
        code(status),
        Code::PermissionDenied,
        "another user's refresh token"
    );
    assert_eq!(
        code(c.logout(pb::LogoutRequest::default()).await),
        Code::Unauthenticated
    );
    c.logout(authed(pb::LogoutRequest::default(), &tokens.access_token))
        .await
        .unwrap();
    assert_eq!(
        code(whoami(&mut c, &tokens.access_token).await),
        Code::Unauthenticated
    );
    let refresh = pb::RefreshRequest {
        refresh_token: tokens.refresh_token.clone(),
    };
    assert_eq!(code(c.refresh(refresh).await), Code::Unauthenticated);
    // Another session of the same user is untouched.
    whoami(&mut c, &other.access_token).await.unwrap();
    let refresh = pb::RefreshRequest {
        refresh_token: other.refresh_token,
    };
    c.refresh(refresh).await.unwrap();
}

#[tokio::test]
async fn api_keys_are_created_once_listed_exchanged_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    let dev_user = create_user(
        &mut c,
        &admin,
        "dev",
        &[pb::Role::Viewer, pb::Role::Developer],
    )
    .await;
    let dev = login(&mut c, "dev", USER_PW).await.unwrap().access_token;

    let created = create_key(&mut c, &dev, key_req("ci", &[pb::Role::Viewer]))
        .await
        .unwrap();
    let info = created.key.unwrap();
    assert!(created.api_key.starts_with("umcp_") && created.api_key.len() == 51);
    assert!(created.api_key.starts_with(&info.prefix) && info.prefix.len() < 20);
    assert_eq!(
        (info.owner_user_id.as_str(), info.revoked),
        (dev_user.id.as_str(), false)
    );
    assert!(info.last_used_at.is_none() && info.expires_at.is_none());

    let tokens = exchange(&mut c, &created.api_key).await.unwrap();
    assert!(tokens.refresh_token.is_empty());
    let me = whoami(&mut c, &tokens.access_token).await.unwrap();
    assert_eq!(
        (me.auth_method.as_str(), me.roles.clone()),
        ("api_key", vec![pb::Role::Viewer as i32])
    );
    assert!(
        !me.permissions.contains(&"tools:execute".to_owned()),
        "the key's subset applies"
    );
    assert_eq!(
        claims(&mut c, &tokens.access_token).await.sid,
        format!("key:{}", info.id)
    );

    let list = |token: &str, owner: &str| {
        authed(
            pb::ListApiKeysRequest {
                owner_user_id: owner.into(),
                page: None,
            },
            token,
        )
    };
    let listed = c
        .list_api_keys(list(&dev, ""))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].prefix.as_str()),
        (info.id.as_str(), info.prefix.as_str())
    );
    assert!(listed[0].last_used_at.is_some());
    assert!(!format!("{listed:?}").contains(&created.api_key[info.prefix.len()..]));

    // A key can only grant a subset of its owner's roles, and the token it came from bounds it.
    let status = create_key(&mut c, &dev, key_req("too much", &[pb::Role::Admin]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = create_key(
        &mut c,
        &tokens.access_token,
        key_req("escalate", &[pb::Role::Developer]),
    )
    .await;
    assert_eq!(code(status), Code::PermissionDenied);
    let chained = create_key(&mut c, &tokens.access_token, key_req("chained", &[]))
        .await
        .unwrap();
    assert_eq!(chained.key.unwrap().roles, vec![pb::Role::Viewer as i32]);

    // Garbage is refused offline; a well-formed unknown key is unauthenticated.
    let mut tampered = created.api_key.clone().into_bytes();
    tampered[12] = if tampered[12] == b'a' { b'b' } else { b'a' };
    for garbage in [
        String::new(),
        "umcp_nope".into(),
        String::from_utf8(tampered).unwrap(),
        "ghp_x".into(),
    ] {
        assert_eq!(
            code(exchange(&mut c, &garbage).await),
            Code::InvalidArgument,
            "{garbage}"
        );
    }
    let unknown = umcp_auth::api_keys::generate().unwrap();
    assert_eq!(
        code(exchange(&mut c, &unknown).await),
        Code::Unauthenticated
    );

    // Expiry.
    // 1.5 s from now, to the nanosecond (a whole-second expiry could be only 1 ns away).
    let soon =
        prost_types::Timestamp::from(std::time::SystemTime::now() + Duration::from_millis(1500));
    let expiring = create_key(
        &mut c,
        &dev,
        pb::CreateApiKeyRequest {
            expires_at: Some(soon),
            ..key_req("short", &[])
        },
    )
    .await
    .unwrap();
    exchange(&mut c, &expiring.api_key).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let status = exchange(&mut c, &expiring.api_key).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "api key has expired")
    );
    let past = prost_types::Timestamp {
        seconds: chrono_now() - 10,
        nanos: 0,
    };
    let req = pb::CreateApiKeyRequest {
        expires_at: Some(past),
        ..key_req("past", &[])
    };
    assert_eq!(
        code(create_key(&mut c, &dev, req).await),
        Code::InvalidArgument
    );
    for bad in [
        key_req("", &[]),
        key_req(&"n".repeat(65), &[]),
        pb::CreateApiKeyRequest {
            roles: vec![0],
            ..key_req("x", &[])
        },
    ] {
        assert_eq!(
            code(create_key(&mut c, &dev, bad).await),
            Code::InvalidArgument
        );
    }

    // Revocation: the key stops exchanging and tokens already exchanged stop working.
    let revoke =
        |token: &str, id: &str| authed(pb::RevokeApiKeyRequest { key_id: id.into() }, token);
    c.revoke_api_key(revoke(&dev, &info.id)).await.unwrap();
    let status = exchange(&mut c, &created.api_key).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "api key has been revoked")
    );
    assert_eq!(
        code(whoami(&mut c, &tokens.access_token).await),
        Code::Unauthenticated
    );
    let listed = c
        .list_api_keys(list(&dev, ""))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(listed.iter().any(|k| k.id == info.id && k.revoked));
    assert_eq!(
        code(c.revoke_api_key(revoke(&dev, "bad id")).await),
        Code::InvalidArgument
    );
    let missing = "0".repeat(32);
    assert_eq!(
        code(c.revoke_api_key(revoke(&dev, &missing)).await),
        Code::NotFound
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn admin_calls_need_system_admin_and_validate_input() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    let admin_id = whoami(&mut c, &admin).await.unwrap().user_id;
    let dev_user = create_user(&mut c, &admin, "dev", &[pb::Role::Developer]).await;
    let dev = login(&mut c, "dev", USER_PW).await.unwrap().access_token;

    let user_req = |name: &str, pw: &str, roles: Vec<i32>| pb::CreateUserRequest {
        username: name.into(),
        password: pw.into(),
        roles,
    };
    let cases = [
        (user_req("DEV", USER_PW, vec![1]), Code::AlreadyExists),
        (user_req("new", "short", vec![1]), Code::InvalidArgument),
        (user_req("new", USER_PW, vec![]), Code::InvalidArgument),
        (user_req("new", USER_PW, vec![7]), Code::InvalidArgument),
        (
            user_req("bad name", USER_PW, vec![1]),
            Code::InvalidArgument,
        ),
    ];
    for (req, expected) in cases {
        assert_eq!(
            code(c.create_user(authed(req.clone(), &admin)).await),
            expected,
            "{req:?}"
        );
    }
    assert_eq!(
        code(
            c.create_user(authed(user_req("x", USER_PW, vec![1]), &dev))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.create_user(user_req("x", USER_PW, vec![1])).await),
        Code::Unauthenticated
    );

    // Paging.
    let page = |size, token: &str| pb::ListUsersRequest {
        page: Some(PageRequest {
            page_size: size,
            page_token: token.into(),
        }),
    };
    let first = c
        .list_users(authed(page(1, ""), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.users.len(), 1);
    let next = first.page.unwrap().next_page_token;
    let rest = c
        .list_users(authed(page(10, &next), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.users.len(), 1);
    assert_eq!(rest.users[0].username, "dev");
    assert!(rest.page.unwrap().next_page_token.is_empty());
    assert_eq!(
        code(c.list_users(authed(page(1001, ""), &admin)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.list_users(authed(page(1, "zz"), &admin)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.list_users(authed(page(1, ""), &dev)).await),
        Code::PermissionDenied
    );

    // Other users' keys need system:admin.
    let admin_key = create_key(&mut c, &admin, key_req("admin key", &[]))
        .await
        .unwrap()
        .key
        .unwrap();
    let list = |owner: &str| pb::ListApiKeysRequest {
        owner_user_id: owner.into(),
        page: None,
    };
    assert_eq!(
        code(c.list_api_keys(authed(list(&admin_id), &dev)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.list_api_keys(authed(list("*"), &dev)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.list_api_keys(authed(list("bob"), &dev)).await),
        Code::InvalidArgument
    );
    let revoke = pb::RevokeApiKeyRequest {
        key_id: admin_key.id.clone(),
    };
    assert_eq!(
        code(c.revoke_api_key(authed(revoke, &dev)).await),
        Code::PermissionDenied
    );
    let for_admin = pb::CreateApiKeyRequest {
        owner_user_id: admin_id.clone(),
        ..key_req("sneaky", &[])
    };
    assert_eq!(
        code(create_key(&mut c, &dev, for_admin).await),
        Code::PermissionDenied
    );
    let for_dev = pb::CreateApiKeyRequest {
        owner_user_id: dev_user.id.clone(),
        ..key_req("issued", &[])
    };
    create_key(&mut c, &admin, for_dev).await.unwrap();
    let unknown_owner = pb::CreateApiKeyRequest {
        owner_user_id: "0".repeat(32),
        ..key_req("x", &[])
    };
    assert_eq!(
        code(create_key(&mut c, &admin, unknown_owner).await),
        Code::NotFound
    );
    let bad_owner = pb::CreateApiKeyRequest {
        owner_user_id: "bob".into(),
        ..key_req("x", &[])
    };
    assert_eq!(
        code(create_key(&mut c, &admin, bad_owner).await),
        Code::InvalidArgument
    );
    let bad_time = prost_types::Timestamp {
        seconds: chrono_now() + 60,
        nanos: -1,
    };
    let bad_time = pb::CreateApiKeyRequest {
        expires_at: Some(bad_time),
        ..key_req("x", &[])
    };
    assert_eq!(
        code(create_key(&mut c, &admin, bad_time).await),
        Code::InvalidArgument
    );
    let page = Some(PageRequest {
        page_size: 5000,
        page_token: String::new(),
    });
    let big_page = pb::ListApiKeysRequest {
        owner_user_id: String::new(),
        page,
    };
    assert_eq!(
        code(c.list_api_keys(authed(big_page, &admin)).await),
        Code::InvalidArgument
    );
    let devs = c
        .list_api_keys(authed(list(&dev_user.id), &admin))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(devs.len(), 1);
    let all = c
        .list_api_keys(authed(list("*"), &admin))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(all.len(), 2);

    // Role changes revoke the user's older tokens.
    let set = |id: &str, roles: Vec<i32>| pb::SetUserRolesRequest {
        user_id: id.into(),
        roles,
    };
    assert_eq!(
        code(
            c.set_user_roles(authed(set(&"0".repeat(32), vec![1]), &admin))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(c.set_user_roles(authed(set("nope", vec![1]), &admin)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.set_user_roles(authed(set(&dev_user.id, vec![]), &admin))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.set_user_roles(authed(set(&admin_id, vec![1]), &admin))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.set_user_roles(authed(set(&dev_user.id, vec![1]), &dev))
                .await
        ),
        Code::PermissionDenied
    );
    let updated = c
        .set_user_roles(authed(set(&dev_user.id, vec![1]), &admin))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.roles, vec![pb::Role::Viewer as i32]);
    assert_eq!(code(whoami(&mut c, &dev).await), Code::Unauthenticated);
    let dev = login(&mut c, "dev", USER_PW).await.unwrap().access_token;
    assert_eq!(
        whoami(&mut c, &dev).await.unwrap().roles,
        vec![pb::Role::Viewer as i32]
    );

    let disable = |id: &str| pb::DisableUserRequest { user_id: id.into() };
    assert_eq!(
        code(c.disable_user(authed(disable(&admin_id), &admin)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.disable_user(authed(disable(&admin_id), &dev)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c.disable_user(authed(disable(&"0".repeat(32)), &admin))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            c.rotate_signing_key(authed(pb::RotateSigningKeyRequest {}, &dev))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.disable_user(authed(disable("x"), &admin)).await),
        Code::InvalidArgument
    );
    let huge = user_req(&"u".repeat(100_000), USER_PW, vec![1]);
    let status = c.create_user(authed(huge, &admin)).await;
    // tonic answers an oversized request with OUT_OF_RANGE before any handler runs.
    assert_eq!(code(status), Code::OutOfRange, "64 KiB request limit");
    let watch = pb::WatchRevocationsRequest {};
    assert_eq!(
        code(c.watch_revocations(authed(watch, &admin)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.watch_revocations(pb::WatchRevocationsRequest {}).await),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn disabling_a_user_revokes_tokens_refresh_and_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    let (mut stream, _) = watch(&mut c, &admin, "watcher").await;
    let user = create_user(&mut c, &admin, "leaver", &[pb::Role::Developer]).await;
    let tokens = login(&mut c, "leaver", USER_PW).await.unwrap();
    let key = create_key(&mut c, &tokens.access_token, key_req("k", &[]))
        .await
        .unwrap()
        .api_key;
    let key_token = exchange(&mut c, &key).await.unwrap().access_token;

    let disabled = c
        .disable_user(authed(
            pb::DisableUserRequest {
                user_id: user.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(disabled.disabled);
    let r = next_revocation(&mut stream).await;
    assert_eq!(
        (r.kind, r.id.as_str()),
        (pb::RevocationKind::User as i32, user.id.as_str())
    );

    assert_eq!(
        code(whoami(&mut c, &tokens.access_token).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(whoami(&mut c, &key_token).await),
        Code::Unauthenticated
    );
    let refresh = pb::RefreshRequest {
        refresh_token: tokens.refresh_token,
    };
    assert_eq!(code(c.refresh(refresh).await), Code::Unauthenticated);
    assert_eq!(code(exchange(&mut c, &key).await), Code::Unauthenticated);
    let status = login(&mut c, "leaver", USER_PW).await.unwrap_err();
    assert_eq!(status.message(), "invalid username or password");

    // An open watch stream does not hold up a graceful stop; it ends cleanly.
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
    stopped.expect("stopped within 5 s").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn bootstrap_generates_a_private_password_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuthConfig {
        bootstrap_admin_password: None,
        ..config(dir.path())
    };
    let (server, mut c) = start(cfg.clone()).await;
    let file = dir.path().join("bootstrap-admin.txt");
    let health = c.get_jwks(pb::GetJwksRequest {}).await;
    health.expect("server is up, so bootstrap has run");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    assert!(password.len() >= 20);
    login(&mut c, "admin", &password).await.unwrap();
    server.stop().await.unwrap();

    // A second start with users present creates nothing and leaves the file alone.
    std::fs::remove_file(&file).unwrap();
    let (_server, mut c) = start(cfg).await;
    login(&mut c, "admin", &password).await.unwrap();
    assert!(!file.exists());
}

#[tokio::test]
async fn bootstrap_writes_a_service_key_that_can_watch_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service-api-key.txt");
    let cfg = AuthConfig {
        bootstrap_service_key_file: Some(file.clone()),
        ..config(dir.path())
    };
    let (server, mut c) = start(cfg.clone()).await;
    c.get_jwks(pb::GetJwksRequest {})
        .await
        .expect("server is up");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(key.starts_with("umcp_"), "{key}");
    let tokens = exchange(&mut c, &key).await.unwrap();
    let me = whoami(&mut c, &tokens.access_token).await.unwrap();
    assert_eq!(me.username, "mesh-services");
    assert_eq!(me.roles, vec![pb::Role::Service as i32]);
    let stream = c
        .watch_revocations(authed(pb::WatchRevocationsRequest {}, &tokens.access_token))
        .await;
    assert!(stream.is_ok(), "the service key may watch revocations");
    // Nobody can log in as the service account.
    assert_eq!(
        code(login(&mut c, "mesh-services", "").await),
        Code::InvalidArgument
    );
    server.stop().await.unwrap();

    // An existing file is kept: restarts do not mint a new key.
    let (_server, mut c) = start(cfg).await;
    c.get_jwks(pb::GetJwksRequest {})
        .await
        .expect("server is up");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_published_and_tokens_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    let before = c
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.keys.len(), 1);
    let old = before.keys[0].clone();
    assert_eq!(
        (
            old.kty.as_str(),
            old.crv.as_str(),
            old.alg.as_str(),
            old.r#use.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );
    let doc: serde_json::Value = serde_json::from_str(&before.jwks_json).unwrap();
    assert_eq!(doc["keys"][0]["kid"], old.kid.as_str());

    let rotated = c
        .rotate_signing_key(authed(pb::RotateSigningKeyRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.kid, old.kid);
    assert_eq!(
        rotated.published_kids,
        vec![rotated.kid.clone(), old.kid.clone()]
    );
    let after = c
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.keys.len(), 2);
    whoami(&mut c, &admin)
        .await
        .expect("a token of the old key still works");
    let fresh = login(&mut c, "admin", ADMIN_PW).await.unwrap().access_token;
    assert_eq!(jws::parse(&fresh).unwrap().header.kid, rotated.kid);
    whoami(&mut c, &fresh)
        .await
        .expect("the new key verifies at once");
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut c) = start(config(dir.path())).await;
    let admin = admin(&mut c).await;
    create_user(&mut c, &admin, "keeper", &[pb::Role::Viewer]).await;
    let keeper = login(&mut c, "keeper", USER_PW).await.unwrap();
    let key = create_key(&mut c, &keeper.access_token, key_req("k", &[]))
        .await
        .unwrap()
        .api_key;
    let doomed = login(&mut c, "keeper", USER_PW).await.unwrap();
    c.logout(authed(pb::LogoutRequest::default(), &doomed.access_token))
        .await
        .unwrap();
    let rotated = c
        .rotate_signing_key(authed(pb::RotateSigningKeyRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    let kids = rotated.published_kids;
    server.stop().await.unwrap();
    for entry in std::fs::read_dir(dir.path().join("auth-keys")).unwrap() {
        assert_eq!(
            entry.unwrap().metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Restart with stronger hashing: stored hashes still verify and are upgraded on login.
    let mut stronger = config(dir.path());
    stronger.password.memory_kib = 128;
    let (_server, mut c) = start(stronger).await;
    let jwks = c
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jwks.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        kids
    );
    whoami(&mut c, &keeper.access_token)
        .await
        .expect("signing keys persisted");
    whoami(&mut c, &admin)
        .await
        .expect("the pre-rotation key is still published");
    assert_eq!(
        code(whoami(&mut c, &doomed.access_token).await),
        Code::Unauthenticated
    );
    let refresh = pb::RefreshRequest {
        refresh_token: doomed.refresh_token,
    };
    assert_eq!(code(c.refresh(refresh).await), Code::Unauthenticated);
    let refresh = pb::RefreshRequest {
        refresh_token: keeper.refresh_token,
    };
    c.refresh(refresh).await.expect("refresh tokens persisted");
    exchange(&mut c, &key).await.expect("api keys persisted");
    login(&mut c, "keeper", USER_PW)
        .await
        .expect("users persisted");
    login(&mut c, "keeper", USER_PW)
        .await
        .expect("the upgraded hash verifies");

    let admin = login(&mut c, "admin", ADMIN_PW).await.unwrap().access_token;
    let (_, snapshot) = watch(&mut c, &admin, "watcher").await;
    let doomed_sid = claims(&mut c, &doomed.access_token).await.sid;
    assert!(
        snapshot
            .revocations
            .iter()
            .any(|r| r.id == doomed_sid && r.kind == pb::RevocationKind::Session as i32)
    );
    assert_eq!(
        snapshot.revocations.len(),
        2,
        "the session and the logged-out token"
    );
}
