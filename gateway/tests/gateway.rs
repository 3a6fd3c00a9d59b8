//! The gateway on real servers: the real graph service, plus a recording execution backend
//! (a real tonic server in this file) where the test must see what the backend received
//! (forwarded headers, deadlines) or needs a streaming RPC with controlled timing.

mod audit;
mod hardening;
mod mcp;
mod mesh;
mod ratelimit;
mod recording;
mod tokens;
mod traces;
mod upstream;

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use umcp_authz::permissions::Role;
use umcp_gateway::GatewayConfig;
use umcp_proto::common::v1::{Value, value::Kind};
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use umcp_proto::execution::v1::{ExecuteRequest, ExecuteStreamRequest, execute_stream_response};
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{
    GetMetricsRequest, GetMetricsResponse, NodeInput, QueryRequest, UpsertRequest,
};
use umcp_testkit::issuer::TestIssuer;
use umcp_testkit::{Spawned, authed, eventually, free_port};

use recording::Recorder;

async fn graph_service(dir: &std::path::Path, issuer: &TestIssuer) -> Spawned {
    let config = umcp_graph::GraphConfig {
        data_dir: dir.to_path_buf(),
        ..umcp_graph::GraphConfig::default()
    };
    let verifier = issuer.verifier();
    Spawned::start(|listener, shutdown| {
        umcp_graph::serve(
            listener,
            config,
            umcp_graph::Wiring::unaudited(verifier, "graph"),
            shutdown.wait(),
        )
    })
    .await
}

async fn gateway(graph: &str, execution: &str, issuer: &TestIssuer) -> Spawned {
    let mut config = GatewayConfig::default();
    config.backends.graph = graph.to_owned();
    config.backends.execution = execution.to_owned();
    config.backends.auth = String::new();
    config.backends.audit = String::new();
    config.health_interval_ms = 100;
    let verifier = Some(issuer.verifier());
    Spawned::start(|listener, shutdown| {
        umcp_gateway::serve(
            listener,
            config,
            verifier,
            umcp_audit_client::Emitter::new(None, "gateway"),
            None,
            shutdown.wait(),
        )
    })
    .await
}

fn node(key: &str, label: &str, n: i64) -> NodeInput {
    NodeInput {
        key: key.into(),
        labels: vec![label.into()],
        properties: [(
            "n".to_owned(),
            Value {
                kind: Some(Kind::IntValue(n)),
            },
        )]
        .into(),
    }
}

#[tokio::test]
async fn graph_calls_pass_through_unchanged() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let graph = graph_service(dir.path(), &issuer).await;
    let gw = gateway(&graph.url(), "", &issuer).await;
    let admin = issuer.bearer("admin-1", &[Role::Admin]);
    let mut via_gateway = GraphServiceClient::new(authed(gw.channel(), admin.clone()));
    let mut direct = GraphServiceClient::new(authed(graph.channel(), admin));

    let upserted = via_gateway
        .upsert(UpsertRequest {
            nodes: vec![node("a", "Doc", 1), node("b", "Doc", 2)],
            relationships: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.nodes_created, 2);

    let rows = via_gateway
        .query(QueryRequest {
            cypher: "MATCH (n:Doc) WHERE n.n >= $min RETURN n.n AS n ORDER BY n".into(),
            parameters: [(
                "min".to_owned(),
                Value {
                    kind: Some(Kind::IntValue(2)),
                },
            )]
            .into(),
            row_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rows.columns, ["n"]);
    assert_eq!(rows.rows.len(), 1);
    assert_eq!(rows.rows[0].values[0].kind, Some(Kind::IntValue(2)));

    let a = via_gateway
        .get_metrics(GetMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let b = direct
        .get_metrics(GetMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a, b);
    assert_eq!(a.node_count, 2);

    // Errors (code, message and binary details) pass through untouched.
    let bad = UpsertRequest {
        nodes: vec![node("bad-key", "Doc", 1)],
        relationships: vec![],
    };
    let through = via_gateway.upsert(bad.clone()).await.unwrap_err();
    let straight = direct.upsert(bad).await.unwrap_err();
    assert_eq!(through.code(), Code::InvalidArgument);
    assert_eq!(through.message(), straight.message());
    assert_eq!(through.details(), straight.details());
}

async fn raw_call(channel: tonic::transport::Channel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<GetMetricsRequest, GetMetricsResponse>::default();
    grpc.unary(
        tonic::Request::new(GetMetricsRequest {}),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented_by_name() {
    let gw = gateway("", "", &TestIssuer::new()).await;
    let status = raw_call(gw.channel(), "/umcp.graph.v1.GraphService/DropEverything").await;
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("DropEverything"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("umcp.graph.v1.GraphService"));

    let status = raw_call(gw.channel(), "/acme.v1.Billing/Charge").await;
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("acme.v1.Billing"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_down_or_disabled_backend_is_unavailable_naming_the_service() {
    let issuer = TestIssuer::new();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let gw = gateway(&nobody, "", &issuer).await;
    let channel = authed(gw.channel(), issuer.bearer("admin-1", &[Role::Admin]));
    let status = GraphServiceClient::new(channel.clone())
        .get_metrics(GetMetricsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("umcp.graph.v1.GraphService"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "backend address leaked: {}",
        status.message()
    );

    let status = ExecutionServiceClient::new(channel)
        .execute(ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("not enabled"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn correlation_ids_are_kept_created_forwarded_and_returned() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let gw = gateway("", &recorder.url(), &issuer).await;
    let developer = issuer.bearer("dev-1", &[Role::Developer]);
    let mut client = ExecutionServiceClient::new(authed(gw.channel(), developer));

    let mut request = tonic::Request::new(ExecuteRequest::default());
    request
        .metadata_mut()
        .insert("x-correlation-id", "agent-42.step:7".parse().unwrap());
    let response = client.execute(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-correlation-id").unwrap(),
        "agent-42.step:7"
    );
    assert_eq!(
        recorder.last().correlation_id.as_deref(),
        Some("agent-42.step:7")
    );

    for bad in [None, Some("has spaces".to_owned()), Some("x".repeat(200))] {
        let mut request = tonic::Request::new(ExecuteRequest::default());
        if let Some(bad) = &bad {
            request
                .metadata_mut()
                .insert("x-correlation-id", bad.parse().unwrap());
        }
        let response = client.execute(request).await.unwrap();
        let returned = response
            .metadata()
            .get("x-correlation-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let parsed = uuid::Uuid::parse_str(&returned).expect("generated ids are uuids");
        assert_eq!(parsed.get_version_num(), 7, "{bad:?}");
        assert_eq!(
            recorder.last().correlation_id.as_deref(),
            Some(returned.as_str())
        );
    }
}

#[tokio::test]
async fn deadlines_are_forwarded_as_the_remaining_budget_and_enforced() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let gw = gateway("", &recorder.url(), &issuer).await;
    let developer = issuer.bearer("dev-1", &[Role::Developer]);
    let mut client = ExecutionServiceClient::new(authed(gw.channel(), developer));

    let mut request = tonic::Request::new(ExecuteRequest {
        code: "sleep:0".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(800));
    client.execute(request).await.unwrap();
    let forwarded = recorder.last().timeout.expect("grpc-timeout forwarded");
    assert!(forwarded <= Duration::from_millis(800), "{forwarded:?}");
    assert!(forwarded >= Duration::from_millis(700), "{forwarded:?}");

    let mut request = tonic::Request::new(ExecuteRequest {
        code: "sleep:2000".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = client.execute(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let mut request = tonic::Request::new(ExecuteRequest::default());
    request
        .metadata_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let status = client.execute(request).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
}

#[tokio::test]
async fn server_streams_pass_through_as_they_are_produced() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let gw = gateway("", &recorder.url(), &issuer).await;
    let developer = issuer.bearer("dev-1", &[Role::Developer]);
    let mut client = ExecutionServiceClient::new(authed(gw.channel(), developer));
    let started = Instant::now();
    let request = ExecuteStreamRequest {
        request: Some(ExecuteRequest {
            code: "chunks:3:300".into(),
            ..Default::default()
        }),
    };
    let mut stream = client.execute_stream(request).await.unwrap().into_inner();
    let mut arrivals = Vec::new();
    let mut chunks = Vec::new();
    while let Some(message) = stream.next().await {
        arrivals.push(started.elapsed());
        match message.unwrap().event.unwrap() {
            execute_stream_response::Event::Output(chunk) => chunks.push(chunk.data),
            execute_stream_response::Event::Result(result) => assert_eq!(result.exit_code, 0),
        }
    }
    assert_eq!(chunks, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(arrivals.len(), 4);
    // The backend waits 300 ms between chunks: a buffering proxy would deliver them together.
    assert!(arrivals[0] < Duration::from_millis(250), "{arrivals:?}");
    assert!(
        arrivals[2] - arrivals[0] >= Duration::from_millis(500),
        "{arrivals:?}"
    );
}

async fn health(channel: tonic::transport::Channel, service: &str) -> Result<i32, Code> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test]
async fn health_reports_every_backend_and_overall() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let graph = graph_service(dir.path(), &issuer).await;
    let gw = gateway(&graph.url(), "", &issuer).await;
    let serving = Ok(ServingStatus::Serving as i32);
    let not_serving = Ok(ServingStatus::NotServing as i32);
    let channel = gw.channel();
    assert!(
        eventually(Duration::from_secs(5), || {
            let channel = channel.clone();
            async move { health(channel, "").await == Ok(ServingStatus::Serving as i32) }
        })
        .await,
        "overall never became SERVING"
    );
    assert_eq!(
        health(gw.channel(), "umcp.graph.v1.GraphService").await,
        serving
    );
    assert_eq!(
        health(gw.channel(), "umcp.execution.v1.ExecutionService").await,
        not_serving
    );
    assert_eq!(
        health(gw.channel(), "no.such.Service").await,
        Err(Code::NotFound)
    );

    graph.stop().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let channel = channel.clone();
            async move {
                health(channel, "umcp.graph.v1.GraphService").await
                    == Ok(ServingStatus::NotServing as i32)
            }
        })
        .await,
        "a stopped backend stayed SERVING"
    );
    assert_eq!(health(gw.channel(), "").await, not_serving);
}

#[tokio::test]
async fn reflection_lists_every_service_in_both_versions() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Req;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Resp;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1a;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as V1aReq;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as V1aResp;

    let gw = gateway("", "", &TestIssuer::new()).await;
    let expected = [
        "umcp.auth.v1.AuthService",
        "umcp.graph.v1.GraphService",
        "umcp.execution.v1.ExecutionService",
        "umcp.audit.v1.AuditService",
        "grpc.health.v1.Health",
    ];

    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Req::ListServices(String::new())),
    };
    let mut stream = V1::new(gw.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(V1Resp::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(
            names.iter().any(|n| n == name),
            "v1 lacks {name}: {names:?}"
        );
    }

    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1aReq::ListServices(String::new())),
    };
    let mut stream = V1a::new(gw.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(V1aResp::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list response");
    };
    assert_eq!(list.service.len(), names.len());
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_with_a_challenge() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let gw = gateway("", &recorder.url(), &issuer).await;

    let status = ExecutionServiceClient::new(gw.channel())
        .list_languages(umcp_proto::execution::v1::ListLanguagesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.metadata().get("www-authenticate").unwrap(),
        "Bearer realm=\"umcp\""
    );

    let stranger = TestIssuer::new();
    let status =
        ExecutionServiceClient::new(authed(gw.channel(), stranger.bearer("x", &[Role::Admin])))
            .list_languages(umcp_proto::execution::v1::ListLanguagesRequest {})
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let challenge = status
        .metadata()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(
        recorder.seen_count() == 0,
        "a rejected call reached the backend"
    );
}

#[tokio::test]
async fn missing_permissions_are_denied_by_name() {
    let issuer = TestIssuer::new();
    let recorder = Recorder::start().await;
    let gw = gateway("", &recorder.url(), &issuer).await;
    let viewer = issuer.bearer("viewer-1", &[Role::Viewer]);
    let status = ExecutionServiceClient::new(authed(gw.channel(), viewer))
        .execute(ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("tools:execute"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("viewer"), "{}", status.message());
    assert_eq!(recorder.seen_count(), 0);
}
