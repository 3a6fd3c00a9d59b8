//! Administration and persistence across restarts.

use super::*;

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
