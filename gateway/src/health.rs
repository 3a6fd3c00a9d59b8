//! Backend health, published through the gateway's own `grpc.health.v1` service: one entry per
//! backend service (its fully qualified name) and the overall entry `""`, which is `SERVING`
//! only while every enabled backend is. A backend whose circuit breaker is open is
//! `NOT_SERVING`: the gateway refuses its calls until the breaker lets probes through.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;

use crate::routes::{Backend, RouteTable};

/// How long one backend health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks every backend every `interval`, forever (the caller aborts the task on shutdown).
pub(crate) async fn watch(table: Arc<RouteTable>, reporter: HealthReporter, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Vec<Option<ServingStatus>> = vec![None; table.backends().len()];
    loop {
        ticker.tick().await;
        let checks = table.backends().iter().map(check);
        let statuses = futures::future::join_all(checks).await;
        let mut all_serving = true;
        for ((backend, status), previous) in table.backends().iter().zip(statuses).zip(&mut last) {
            if backend.upstream.is_some() && status != ServingStatus::Serving {
                all_serving = false;
            }
            if *previous != Some(status) {
                tracing::info!(backend = backend.name, status = ?status, "backend health changed");
                *previous = Some(status);
            }
            reporter.set_service_status(backend.service, status).await;
        }
        let overall = if all_serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", overall).await;
    }
}

async fn check(backend: &Backend) -> ServingStatus {
    let Some(upstream) = &backend.upstream else {
        return ServingStatus::NotServing;
    };
    // Calls are refused while the breaker is open, whatever the backend answers to a probe.
    if upstream.refusing() {
        return ServingStatus::NotServing;
    }
    let channel = upstream.channel();
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(CHECK_TIMEOUT);
    match tokio::time::timeout(CHECK_TIMEOUT, HealthClient::new(channel).check(request)).await {
        Ok(Ok(response)) if response.get_ref().status == Wire::Serving as i32 => {
            ServingStatus::Serving
        }
        Ok(Ok(_)) => ServingStatus::NotServing,
        Ok(Err(_)) | Err(_) => ServingStatus::NotServing,
    }
}
