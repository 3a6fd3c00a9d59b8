//! The negative-token corpus and the RBAC matrix, generated from the permission table.
//!
//! Every crafted token is sent to the gateway AND straight to the graph service's own port;
//! both must answer with the exact same status code.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use umcp_authz::claims::Claims;
use umcp_authz::permissions::Role;
use umcp_proto::catalogue::{Access, MethodCatalogue};
use umcp_proto::graph::v1::{GetMetricsRequest, GetMetricsResponse};
use umcp_testkit::Spawned;
use umcp_testkit::issuer::TestIssuer;

use crate::{gateway, graph_service};

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn forge(header: &str, claims: &Claims, signature: &[u8]) -> String {
    let payload = serde_json::to_string(claims).unwrap();
    format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
}

/// Calls `path` with `authorization` set to `header` (raw value) and returns the status code.
async fn call(channel: tonic::transport::Channel, path: &str, header: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(GetMetricsRequest {});
    if let Some(value) = header {
        match MetadataValue::try_from(value) {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => panic!("test header must be ascii"),
        }
    }
    let codec = tonic_prost::ProstCodec::<GetMetricsRequest, GetMetricsResponse>::default();
    let path = PathAndQuery::try_from(path.to_owned()).unwrap();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn corpus(issuer: &TestIssuer) -> Vec<(&'static str, String)> {
    let good = issuer.claims("user-1", &[Role::Admin]);
    let valid = issuer.sign(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public = URL_SAFE_NO_PAD.decode(&public_x).unwrap();

    let mut hs = Hmac::<sha2::Sha256>::new_from_slice(&public).unwrap();
    let hs_header = r#"{"alg":"HS256","typ":"at+jwt","kid":"test-key"}"#;
    let hs_input = format!(
        "{}.{}",
        b64(hs_header),
        b64(serde_json::to_string(&good).unwrap())
    );
    hs.update(hs_input.as_bytes());
    let hs_token = format!("{hs_input}.{}", b64(hs.finalize().into_bytes()));

    let with = |f: &dyn Fn(&mut Claims)| {
        let mut c = good.clone();
        f(&mut c);
        issuer.sign(&c)
    };
    let now = good.iat;
    let mut tampered_payload = good.clone();
    tampered_payload.roles = vec!["admin".into(), "service".into()];
    let tampered_payload = format!(
        "{head}.{}.{signature}",
        b64(serde_json::to_string(&tampered_payload).unwrap())
    );
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[10] ^= 0x01;
    let tampered_signature = format!("{head}.{payload}.{}", b64(&sig));

    vec![
        (
            "alg none",
            forge(
                r#"{"alg":"none","typ":"at+jwt","kid":"test-key"}"#,
                &good,
                b"",
            ),
        ),
        ("HS256 keyed with the public key", hs_token),
        (
            "RS256",
            forge(
                r#"{"alg":"RS256","typ":"at+jwt","kid":"test-key"}"#,
                &good,
                &[7u8; 256],
            ),
        ),
        (
            "ES256",
            forge(
                r#"{"alg":"ES256","typ":"at+jwt","kid":"test-key"}"#,
                &good,
                &[7u8; 64],
            ),
        ),
        (
            "unknown kid",
            forge(
                r#"{"alg":"EdDSA","typ":"at+jwt","kid":"nope"}"#,
                &good,
                &[7u8; 64],
            ),
        ),
        (
            "missing kid",
            forge(r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &good, &[7u8; 64]),
        ),
        (
            "wrong typ",
            forge(
                r#"{"alg":"EdDSA","typ":"JWT","kid":"test-key"}"#,
                &good,
                &[7u8; 64],
            ),
        ),
        (
            "expired",
            with(&|c| {
                c.exp = now - 3600;
                c.iat = now - 4000;
                c.nbf = now - 4000;
            }),
        ),
        ("nbf in the future", with(&|c| c.nbf = now + 3600)),
        ("wrong iss", with(&|c| c.iss = "someone-else".into())),
        ("wrong aud", with(&|c| c.aud = "another-api".into())),
        ("payload tampered", tampered_payload),
        ("signature tampered", tampered_signature),
        ("truncated", valid[..valid.len() - 20].to_owned()),
        (
            "other issuer's key",
            TestIssuer::new().token("user-1", &[Role::Admin]),
        ),
    ]
}

#[tokio::test]
async fn every_bad_token_is_rejected_at_the_gateway_and_at_the_service() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let graph = graph_service(dir.path(), &issuer).await;
    let gw = gateway(&graph.url(), "", &issuer).await;
    let path = "/umcp.graph.v1.GraphService/GetMetrics";
    let targets: [(&str, &Spawned); 2] = [("gateway", &gw), ("graph", &graph)];

    let valid = format!("Bearer {}", issuer.token("user-1", &[Role::Admin]));
    for (name, target) in targets {
        assert_eq!(
            call(target.channel(), path, Some(&valid)).await,
            Code::Ok,
            "{name}: valid token"
        );
    }
    for (case, token) in corpus(&issuer) {
        for (name, target) in targets {
            let code = call(target.channel(), path, Some(&format!("Bearer {token}"))).await;
            assert_eq!(code, Code::Unauthenticated, "{name}: {case}");
        }
    }
    let oversized = format!("Bearer {}", "a".repeat(8 * 1024));
    for (case, header) in [
        ("no header", None),
        ("garbage", Some("garbage")),
        ("basic auth", Some("Basic dXNlcjpwYXNz")),
        ("empty bearer", Some("Bearer ")),
        ("two tokens", Some("Bearer a b")),
        ("oversized", Some(oversized.as_str())),
    ] {
        for (name, target) in targets {
            let code = call(target.channel(), path, header).await;
            assert_eq!(code, Code::Unauthenticated, "{name}: {case}");
        }
    }

    // Revocation reaches the verifiers: a revoked session is refused everywhere.
    let claims = issuer.claims("user-2", &[Role::Admin]);
    let token = format!("Bearer {}", issuer.sign(&claims));
    assert_eq!(call(gw.channel(), path, Some(&token)).await, Code::Ok);
    issuer
        .revocations()
        .extend([umcp_authz::revocations::Revocation {
            kind: umcp_authz::revocations::Kind::Session,
            id: claims.sid.clone(),
            revoked_at: claims.iat,
            expires_at: claims.exp,
        }]);
    for (name, target) in targets {
        assert_eq!(
            call(target.channel(), path, Some(&token)).await,
            Code::Unauthenticated,
            "{name}: revoked"
        );
    }
}

/// What a role (or no token) gets for a requirement, given that the gateway under test has every
/// backend disabled: calls that pass the permission check end in `UNAVAILABLE` ("not enabled").
fn expected(role: Option<Role>, requirement: Access) -> Code {
    match (requirement, role) {
        (Access::Public, _) => Code::Unavailable,
        (_, None) => Code::Unauthenticated,
        (Access::Authenticated, Some(_)) => Code::Unavailable,
        (Access::Permission(p), Some(role)) if role.grants(p) => Code::Unavailable,
        (Access::Permission(_), Some(_)) => Code::PermissionDenied,
    }
}

#[tokio::test]
async fn rbac_matrix_every_role_times_every_rpc() {
    let issuer = TestIssuer::new();
    let gw = gateway("", "", &issuer).await;
    let mut config_backends_off = umcp_gateway::GatewayConfig::default();
    config_backends_off.backends.auth = String::new();
    let mut checked = 0;
    let roles: Vec<Option<Role>> = std::iter::once(None).chain(Role::ALL.map(Some)).collect();
    for role in roles {
        let header = role.map(|r| format!("Bearer {}", issuer.token("matrix", &[r])));
        for method in MethodCatalogue::global().methods() {
            let path = &method.path;
            let code = call(gw.channel(), path, header.as_deref()).await;
            assert_eq!(
                code,
                expected(role, method.access),
                "{role:?} calling {path}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * MethodCatalogue::global().methods().count());
}
