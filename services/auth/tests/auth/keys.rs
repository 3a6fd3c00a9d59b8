//! API keys, signing-key rotation and the bootstrap files.

use super::*;

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
