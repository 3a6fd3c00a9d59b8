//! Rate limits shared by three gateway replicas through the Redis Cluster, in front of the
//! real auth service: one user gets exactly the limit across all three under concurrent
//! load, and each refusal is `RESOURCE_EXHAUSTED` with `retry-after` and `x-ratelimit-*`.

use std::path::Path;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Request};
use umcp_auth::{AuthConfig, PasswordConfig, Secret};
use umcp_authz::AuthClientConfig;
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;
use umcp_ratelimit::{FailureMode, RateLimitConfig, Rule};
use umcp_testkit::{Spawned, eventually};

const ADMIN_PW: &str = "ratelimit-admin-password";
/// The `read` limit under test (`WhoAmI` is a `read` call).
const LIMIT: u32 = 20;

fn no_audit() -> umcp_audit_client::AuditClientConfig {
    umcp_audit_client::AuditClientConfig {
        url: String::new(),
        ..umcp_audit_client::AuditClientConfig::default()
    }
}

fn client_config(auth: &Spawned, key_file: &Path) -> AuthClientConfig {
    AuthClientConfig {
        url: auth.url(),
        api_key_file: key_file.display().to_string(),
        ..AuthClientConfig::default()
    }
}

async fn start_auth(dir: &Path, key_file: &Path) -> Spawned {
    let config = AuthConfig {
        data_root: dir.to_path_buf(),
        bootstrap_admin_password: Some(Secret::new(ADMIN_PW)),
        bootstrap_service_key_file: Some(key_file.to_path_buf()),
        password: PasswordConfig::fast_for_tests(),
        trust_forwarded_for: true,
        audit: no_audit(),
        ..AuthConfig::default()
    };
    let auth = Spawned::start(|l, stop| umcp_auth::run(l, config, stop.wait())).await;
    let wrote_key = eventually(Duration::from_secs(10), || {
        let ready = key_file.exists();
        async move { ready }
    })
    .await;
    assert!(wrote_key, "auth never wrote the service key");
    auth
}

/// A gateway replica limiting through the shared cluster. The Redis bounds are patient and
/// the failure mode closed: this test is about exactness across replicas, and a debug build
/// on a busy machine could miss the production 15 ms budget (then a replica would decide
/// locally and admit more).
async fn start_gateway(auth: &Spawned, key_file: &Path, nodes: String) -> Spawned {
    let mut config = umcp_gateway::GatewayConfig::default();
    config.backends.auth = auth.url();
    config.backends.graph = String::new();
    config.backends.execution = String::new();
    config.backends.audit = String::new();
    config.auth = client_config(auth, key_file);
    config.audit = no_audit();
    config.redis = umcp_redis::RedisConfig {
        cluster_nodes: nodes,
        command_timeout_ms: 2000,
        ..umcp_redis::RedisConfig::default()
    };
    config.rate_limits = RateLimitConfig {
        failure_mode: FailureMode::Closed,
        redis_timeout_ms: 2000,
        ..RateLimitConfig::default()
    }
    .with_rule("read", Some(Rule::per_minute(LIMIT)));
    Spawned::start(|l, stop| umcp_gateway::run(l, config, stop.wait())).await
}

async fn who_am_i(
    channel: Channel,
    token: String,
) -> Result<tonic::metadata::MetadataMap, tonic::Status> {
    let mut request = Request::new(pb::WhoAmIRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    AuthServiceClient::new(channel)
        .who_am_i(request)
        .await
        .map(|response| response.metadata().clone())
}

fn number(metadata: &tonic::metadata::MetadataMap, name: &str) -> u64 {
    metadata
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing in {metadata:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_budget_per_user_through_the_cluster() {
    let nodes = umcp_testkit::redis::cluster().node_list();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("service-api-key.txt");
    let auth = start_auth(dir.path(), &key_file).await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(start_gateway(&auth, &key_file, nodes.clone()).await);
    }
    let token = AuthServiceClient::new(gateways[0].channel())
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PW.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;

    // 90 concurrent calls of one user, round-robin over the three replicas.
    let calls = (0..90).map(|i| {
        let channel = gateways[i % 3].channel();
        let token = token.clone();
        tokio::spawn(async move { who_am_i(channel, token).await })
    });
    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    for result in futures::future::join_all(calls).await {
        match result.unwrap() {
            Ok(metadata) => admitted.push(metadata),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(
        admitted.len(),
        LIMIT as usize,
        "exactly the limit across replicas"
    );
    assert_eq!(refused.len(), 90 - LIMIT as usize);

    for metadata in &admitted {
        assert_eq!(number(metadata, "x-ratelimit-limit"), u64::from(LIMIT));
        assert!(number(metadata, "x-ratelimit-remaining") < u64::from(LIMIT));
        assert!(number(metadata, "x-ratelimit-reset") <= 60);
    }
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("`read`") && status.message().contains("20 per 60 s"),
            "the message names the class and the limit: {}",
            status.message()
        );
        let metadata = status.metadata();
        // 20 per minute: the next slot is at most 3 s away.
        let retry = number(metadata, "retry-after");
        assert!((1..=3).contains(&retry), "retry-after {retry}");
        assert_eq!(number(metadata, "x-ratelimit-limit"), u64::from(LIMIT));
        assert_eq!(number(metadata, "x-ratelimit-remaining"), 0);
        assert!(number(metadata, "x-ratelimit-reset") <= 60);
    }

    // Another class (sign-in, keyed by address) has its own budget.
    let other_class = AuthServiceClient::new(gateways[1].channel())
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PW.into(),
        })
        .await;
    assert!(
        other_class.is_ok(),
        "sign_in has its own budget: {other_class:?}"
    );
}
