//! The operations port every process serves over HTTP: `/metrics` (Prometheus text),
//! `/healthz` (liveness: the process answers) and `/readyz` (readiness: the process's own gRPC
//! health service reports every service `SERVING` — the gateway reports a backend whose breaker
//! is open or that fails its health checks as `NOT_SERVING`, so it is not ready either).
//!
//! // why readiness asks the gRPC health service over loopback: that service already knows
//! what each process depends on (its breakers, its backends' health), and Kubernetes' gRPC
//! probes read the same answer, so the two can never disagree.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The `http` configuration section of a service (`UMCP_HTTP__LISTEN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; empty: not served.
    pub listen: String,
}

impl OpsConfig {
    /// Served on `listen`.
    #[must_use]
    pub fn on(listen: &str) -> Self {
        Self {
            listen: listen.to_owned(),
        }
    }

    /// Problems with this section.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        if self.listen.is_empty() || self.listen.parse::<SocketAddr>().is_ok() {
            return Vec::new();
        }
        vec![format!(
            "http.listen (UMCP_HTTP__LISTEN) `{}` must be host:port with an IP address, e.g. \
             127.0.0.1:9103, or empty to serve no metrics and probes",
            self.listen
        )]
    }
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self::on("")
    }
}

/// How long `/readyz` waits for the process's own health service.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The three routes, asking the gRPC server at `grpc_url` (`http://host:port`) for readiness
/// (merge them into a router that serves more, as the gateway does with `/mcp`).
pub fn router(grpc_url: String) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(grpc_url.clone())))
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        umcp_telemetry::metrics::encode(),
    )
}

async fn ready(grpc: String) -> (StatusCode, String) {
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(grpc.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("grpc port {grpc} does not answer: {e}"))?;
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(READY_TIMEOUT);
        let status = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| format!("health check failed: {}", s.message()))?
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(format!(
                "not serving ({:?})",
                ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown)
            ))
        }
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "health check timed out\n".into(),
        ),
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: TcpListener,
    grpc: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(format!("http://{grpc}")))
        .with_graceful_shutdown(shutdown)
        .await
}
