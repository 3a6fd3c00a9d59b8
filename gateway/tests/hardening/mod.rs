//! Untrusted input at the edges of the whole mesh (auth, audit, graph, execution and the
//! gateway, in one process): client addresses are believed only from the gateway, and every
//! RPC of every service answers malformed requests with a precise code — never `INTERNAL` or
//! `UNKNOWN` — whether it is called through the gateway or on the service's own port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use umcp_proto::audit::v1::{EventType, QueryRequest};
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_client::AuthServiceClient;

use crate::audit::{self, ADMIN_PW, call, login};

/// A raw HTTP/2 request: what a hostile client can send that a tonic client never would.
struct Raw<'a> {
    path: &'a str,
    content_type: &'a str,
    token: Option<&'a str>,
    headers: &'a [(&'a str, String)],
    body: Vec<u8>,
}

/// How a raw call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    http: u16,
    /// `None`: a stream that was still open after the timeout (it started normally).
    code: Option<Code>,
    message: String,
}

async fn send(addr: SocketAddr, raw: Raw<'_>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("http/2 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{}", raw.path))
        .header("content-type", raw.content_type)
        .header("te", "trailers");
    if let Some(token) = raw.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in raw.headers {
        request = request.header(*name, value.as_str());
    }
    let request = request.body(Full::new(Bytes::from(raw.body))).unwrap();
    let response = sender.send_request(request).await.expect("response");
    let http = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let from = |headers: &http::HeaderMap| {
        let code = headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()?;
        let message = headers
            .get("grpc-message")
            .map(|m| percent_decode(m.as_bytes()))
            .unwrap_or_default();
        Some((Code::from(code), message))
    };
    if let Some((code, message)) = from(&parts.headers) {
        return Answer {
            http,
            code: Some(code),
            message,
        };
    }
    match tokio::time::timeout(Duration::from_secs(3), body.collect()).await {
        Ok(Ok(collected)) => {
            let (code, message) = collected
                .trailers()
                .and_then(from)
                .unwrap_or((Code::Unknown, "no grpc-status".into()));
            Answer {
                http,
                code: Some(code),
                message,
            }
        }
        Ok(Err(error)) => Answer {
            http,
            code: Some(Code::Unknown),
            message: error.to_string(),
        },
        Err(_) => Answer {
            http,
            code: None,
            message: "streaming".into(),
        },
    }
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn tag(field: i32, wire: u8) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(
        (u64::try_from(field).unwrap() << 3) | u64::from(wire),
        &mut out,
    );
    out
}

/// Every umcp method with its input message.
fn methods() -> Vec<(String, DescriptorProto)> {
    let set = FileDescriptorSet::decode(umcp_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: BTreeMap<String, DescriptorProto> = set
        .file
        .iter()
        .flat_map(|f| {
            let package = f.package().to_owned();
            f.message_type
                .iter()
                .map(move |m| (format!(".{package}.{}", m.name()), m.clone()))
        })
        .collect();
    set.file
        .iter()
        .filter(|f| f.package().starts_with("umcp."))
        .flat_map(|f| {
            let package = f.package().to_owned();
            let messages = &messages;
            f.service.iter().flat_map(move |s| {
                let package = package.clone();
                s.method.iter().map(move |m| {
                    let path = format!("/{package}.{}/{}", s.name(), m.name());
                    (path, messages[m.input_type()].clone())
                })
            })
        })
        .collect()
}

/// The first field sent with a wire type it does not have (fixed32 fits only float/fixed32).
fn wrong_type(message: &DescriptorProto) -> Option<Vec<u8>> {
    let field = message.field.first()?;
    let mut out;
    if matches!(field.r#type(), Type::Float | Type::Fixed32 | Type::Sfixed32) {
        out = tag(field.number(), 0);
        out.push(1);
    } else {
        out = tag(field.number(), 5);
        out.extend_from_slice(&[1, 2, 3, 4]);
    }
    Some(out)
}

/// The first string or bytes field, 300 KiB long.
fn oversized_field(message: &DescriptorProto) -> Option<Vec<u8>> {
    let field = message
        .field
        .iter()
        .find(|f| matches!(f.r#type(), Type::String | Type::Bytes))?;
    let mut out = tag(field.number(), 2);
    prost::encoding::encode_varint(300 * 1024, &mut out);
    out.extend(std::iter::repeat_n(b'a', 300 * 1024));
    Some(out)
}

async fn service_token(mesh: &audit::Mesh) -> String {
    let key = std::fs::read_to_string(mesh.dir.path().join("service-api-key.txt")).unwrap();
    AuthServiceClient::new(mesh.gateway.channel())
        .exchange_api_key(pb::ExchangeApiKeyRequest {
            api_key: key.trim().to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

/// Which process serves `path` on its own port.
fn own_port(mesh: &audit::Mesh, path: &str) -> SocketAddr {
    let spawned = match path.split('.').nth(1) {
        Some("auth") => &mesh.auth,
        Some("graph") => &mesh.graph,
        Some("execution") => &mesh.execution,
        Some("audit") => mesh.audit.as_ref().expect("audit runs"),
        other => panic!("no service for {path} ({other:?})"),
    };
    spawned.addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_malformed_requests_with_a_precise_code() {
    let mesh = audit::start(true, 64 << 20).await;
    let service = service_token(&mesh).await;
    let mut seen = Vec::new();
    for (path, input) in methods() {
        // A fresh admin token per method: a call that gets through (an oversized field) may
        // log its caller out or rotate keys.
        let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW, "walk").await;
        let token = if path.ends_with("/Record") || path.ends_with("/WatchRevocations") {
            service.as_str()
        } else {
            admin.as_str()
        };
        let mut cases: Vec<(&str, &str, Vec<u8>, Option<Code>)> = vec![
            (
                "truncated",
                "application/grpc",
                frame(&[0x0a, 0x05, b'a']),
                Some(Code::InvalidArgument),
            ),
            (
                "empty body",
                "application/grpc",
                Vec::new(),
                Some(Code::InvalidArgument),
            ),
            (
                "two messages",
                "application/grpc",
                [frame(&[]), frame(&[])].concat(),
                Some(Code::InvalidArgument),
            ),
            (
                "not grpc",
                "application/json",
                b"{}".to_vec(),
                Some(Code::InvalidArgument),
            ),
            (
                "5 MiB message",
                "application/grpc",
                frame(&vec![0; 5 << 20]),
                Some(Code::ResourceExhausted),
            ),
        ];
        if let Some(body) = wrong_type(&input) {
            cases.push((
                "wrong wire type",
                "application/grpc",
                frame(&body),
                Some(Code::InvalidArgument),
            ));
        }
        if let Some(body) = oversized_field(&input) {
            cases.push(("300 KiB field", "application/grpc", frame(&body), None));
        }
        for target in [mesh.gateway.addr, own_port(&mesh, &path)] {
            for (case, content_type, body, expected) in &cases {
                let raw = Raw {
                    path: &path,
                    content_type,
                    token: Some(token),
                    headers: &[],
                    body: body.clone(),
                };
                let answer = send(target, raw).await;
                let what = format!("{path} {case} at {target}: {answer:?}");
                assert!(
                    !matches!(answer.code, Some(Code::Internal | Code::Unknown)),
                    "{what}"
                );
                if let Some(expected) = expected {
                    assert_eq!(answer.code, Some(*expected), "{what}");
                    assert!(!answer.message.is_empty(), "{what}: the message says why");
                }
                if *case == "not grpc" {
                    assert_eq!(answer.http, 415, "{what}");
                }
                seen.push(what);
            }
        }
    }
    assert!(seen.len() > 300, "walked {} calls", seen.len());
}

/// A failed login sent straight to the auth port, claiming to come from `claimed`.
async fn failed_login(
    mesh: &audit::Mesh,
    user: &str,
    claimed: &str,
    vouch: Option<&str>,
) -> Answer {
    let body = pb::LoginRequest {
        username: user.into(),
        password: "wrong password".into(),
    };
    let mut headers = vec![("x-forwarded-for", claimed.to_owned())];
    if let Some(token) = vouch {
        headers.push(("x-umcp-forwarder", format!("Bearer {token}")));
    }
    let raw = Raw {
        path: "/umcp.auth.v1.AuthService/Login",
        content_type: "application/grpc",
        token: None,
        headers: &headers,
        body: frame(&body.encode_to_vec()),
    };
    send(mesh.auth.addr, raw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_are_believed_only_when_the_gateway_vouches() {
    let mesh = audit::start(true, 64 << 20).await;
    let service = service_token(&mesh).await;
    // Signed in before 127.0.0.1 gets throttled below.
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW, "addr-check").await;
    // Vouched for by a service token: each forwarded address has its own budget (default 20
    // free failures per address), so 25 failures from 25 addresses are never throttled.
    for i in 0..25 {
        let answer = failed_login(
            &mesh,
            &format!("v{i}"),
            &format!("198.51.100.{i}"),
            Some(&service),
        )
        .await;
        assert_eq!(
            answer.code,
            Some(Code::Unauthenticated),
            "vouched {i}: {answer:?}"
        );
    }
    // Not vouched for (a client on the auth port, or a forged forwarder): the header is
    // ignored, every failure counts against the real peer, and throttling starts after 20.
    let mut throttled_at = None;
    for i in 0..25 {
        let forged = (i % 2 == 1).then_some("not-a-token");
        let answer = failed_login(&mesh, &format!("f{i}"), &format!("203.0.113.{i}"), forged).await;
        if answer.code == Some(Code::ResourceExhausted) {
            throttled_at = Some(i);
            break;
        }
        assert_eq!(
            answer.code,
            Some(Code::Unauthenticated),
            "forged {i}: {answer:?}"
        );
    }
    assert_eq!(
        throttled_at,
        Some(20),
        "rotating forged addresses must not dodge throttling"
    );

    // The audit log records the vouched addresses and never a forged one.
    let audit_channel = mesh.gateway.channel();
    let mut peers = Vec::new();
    assert!(
        umcp_testkit::eventually(Duration::from_secs(10), || {
            let (channel, admin) = (audit_channel.clone(), admin.clone());
            async move {
                let filter = QueryRequest {
                    event_types: vec![EventType::AuthFailure as i32],
                    page: Some(umcp_proto::common::v1::PageRequest {
                        page_size: 500,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let events = audit::query(channel, &admin, filter).await;
                events.len() >= 45
            }
        })
        .await,
        "auth failures reach the audit log"
    );
    let filter = QueryRequest {
        event_types: vec![EventType::AuthFailure as i32],
        page: Some(umcp_proto::common::v1::PageRequest {
            page_size: 500,
            ..Default::default()
        }),
        ..Default::default()
    };
    for event in audit::query(audit_channel, &admin, filter).await {
        peers.push(event.peer_address);
    }
    assert!(
        peers.iter().any(|p| p.starts_with("198.51.100.")),
        "{peers:?}"
    );
    assert!(
        !peers.iter().any(|p| p.starts_with("203.0.113.")),
        "forged address in the log: {peers:?}"
    );

    // Through the gateway a client-sent header is replaced by the real peer as well.
    let through = tonic::Request::new(pb::LoginRequest {
        username: "g".into(),
        password: "x".into(),
    });
    let mut through = call(through.into_inner(), None, "via-gateway");
    through
        .metadata_mut()
        .insert("x-forwarded-for", "192.0.2.77".parse().unwrap());
    through.metadata_mut().insert(
        "x-umcp-forwarder",
        format!("Bearer {service}").parse().unwrap(),
    );
    let status = AuthServiceClient::new(mesh.gateway.channel())
        .login(through)
        .await
        .unwrap_err();
    // 127.0.0.1 is throttled by now: the gateway did not pass the client's claim on.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}
