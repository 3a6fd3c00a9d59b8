//! The keys and revocations shared through a real Redis: a verifier that starts while the
//! auth service is unreachable still verifies its tokens and refuses the revoked ones.

use std::time::Duration;

use umcp_authz::AuthClientConfig;
use umcp_authz::shared::SharedAuthState;
use umcp_authz::verifier::unix_now;
use umcp_redis::{Redis, RedisConfig};

use super::*;

fn redis_config(prefix: &str) -> RedisConfig {
    RedisConfig {
        url: umcp_testkit::redis::standalone().url(),
        key_prefix: prefix.into(),
        ..RedisConfig::default()
    }
}

/// A verifier process whose auth service address leads nowhere.
fn unreachable_auth() -> AuthClientConfig {
    AuthClientConfig {
        url: "http://127.0.0.1:1".into(),
        ..AuthClientConfig::default()
    }
}

#[tokio::test]
async fn a_new_verifier_is_current_from_redis_while_auth_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("t{}:", std::process::id());
    let mut cfg = config(dir.path());
    cfg.redis = redis_config(&prefix);
    let (server, mut c) = start(cfg).await;
    let kept = login(&mut c, "admin", ADMIN_PW).await.unwrap();
    let doomed = login(&mut c, "admin", ADMIN_PW).await.unwrap();
    c.logout(authed(pb::LogoutRequest::default(), &doomed.access_token))
        .await
        .unwrap();

    // What the auth service shares shows up in Redis (revocations as they happen).
    let redis = Redis::connect(&redis_config(&prefix))
        .await
        .unwrap()
        .expect("configured");
    let shared = SharedAuthState::new(redis.clone());
    let published = umcp_testkit::eventually(Duration::from_secs(10), || async {
        shared.jwks().await.ok().flatten().is_some()
            && !shared
                .revocations(unix_now())
                .await
                .unwrap_or_default()
                .is_empty()
    })
    .await;
    assert!(
        published,
        "the auth service never shared its keys and revocations"
    );
    server.stop().await.unwrap();

    let client = umcp_authz::AuthClient::start(&unreachable_auth(), Some(redis))
        .await
        .unwrap();
    let principal = client
        .verifier
        .verify(&kept.access_token)
        .await
        .expect("keys from redis verify a live token with auth down");
    assert_eq!(principal.username, "admin");
    let refused = client.verifier.verify(&doomed.access_token).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("revoked")),
        "a token revoked before this replica started must be refused"
    );

    // The same process without Redis cannot verify anything until auth is back.
    let alone = umcp_authz::AuthClient::start(&unreachable_auth(), None)
        .await
        .unwrap();
    assert!(alone.verifier.verify(&kept.access_token).await.is_err());
}

#[tokio::test]
async fn shared_revocations_expire_and_keep_the_later_expiry() {
    use umcp_authz::revocations::{Kind, Revocation};
    let prefix = format!("r{}:", std::process::id());
    let redis = Redis::connect(&redis_config(&prefix))
        .await
        .unwrap()
        .expect("configured");
    let shared = SharedAuthState::new(redis);
    let now = unix_now();
    let rev = |id: &str, expires_at: i64| Revocation {
        kind: Kind::Session,
        id: id.into(),
        revoked_at: now - 10,
        expires_at,
    };
    shared
        .publish_revocations(&[rev("old", now - 5), rev("live", now + 100)], now)
        .await
        .unwrap();
    // Re-publishing with an earlier expiry must not shorten it (ZADD GT).
    shared
        .publish_revocations(&[rev("live", now + 10)], now)
        .await
        .unwrap();
    let found = shared.revocations(now).await.unwrap();
    assert_eq!(found, vec![rev("live", now + 100)]);
}
