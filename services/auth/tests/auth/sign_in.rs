//! Login, throttling, refresh rotation and reuse, logout, disabling.

use super::*;

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
