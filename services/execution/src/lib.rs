//! Sandboxed code execution, lint, tests and template rendering (`umcp.execution.v1`).
//!
//! [`umcp_sandbox::process`] runs untrusted programs; [`service::ExecutionService`] holds the domain logic
//! (validation, admission control, idempotency, lint/tests/templates); [`grpc`] adapts it to
//! the wire; [`graph_sink`] persists every result to the graph service; [`run`] serves it.

pub mod admission;
pub mod config;
pub mod error;
pub mod generate;
pub mod graph_sink;
pub mod grpc;
pub mod idempotency;
pub mod identity;
mod lint;
pub mod metrics;
pub mod model;
pub mod pool;
mod pytest;
pub mod render;
pub mod runtime;
pub mod service;
pub mod sink;
pub mod template;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use umcp_proto::execution::v1::execution_service_server::ExecutionServiceServer;
use umcp_sandbox::process::{NamespaceSandbox, Sandbox, SandboxOptions};

pub use config::ExecutionConfig;
pub use service::ExecutionService;
use sink::ResultSink;
pub use umcp_rpc::Wiring;

/// Builds the sandbox the configuration asks for, refusing weak isolation unless the insecure
/// development flag is set.
pub fn build_sandbox(config: &ExecutionConfig) -> anyhow::Result<NamespaceSandbox> {
    if config.insecure_allow_weak_sandbox {
        tracing::warn!(
            "INSECURE: insecure_allow_weak_sandbox is set; without root or without cgroups, untrusted \
             code runs WITHOUT memory and process limits (rootless: in user namespaces). never use \
             this in production"
        );
    }
    let options = SandboxOptions {
        slots: config.sandbox_slots(),
        uid_base: config.uid_base,
        cgroup_mode: config.cgroup,
        allow_without_cgroups: config.insecure_allow_weak_sandbox,
    };
    NamespaceSandbox::new(options).map_err(|why| {
        anyhow::anyhow!(
            "refusing to start: this host cannot isolate untrusted code: {why}. \
             (for development only, UMCP_INSECURE_ALLOW_WEAK_SANDBOX=true starts without cgroup \
             limits, rootless when not root)"
        )
    })
}

/// Largest response: two full output streams plus framing.
fn max_response_bytes(config: &ExecutionConfig) -> usize {
    let out = usize::try_from(config.max_limits.output_bytes).unwrap_or(usize::MAX / 4);
    out.saturating_mul(2)
        .saturating_add(1 << 20)
        .max(umcp_rpc::MAX_MESSAGE_BYTES)
}

/// Serves the execution service on `listener` until `shutdown` completes, verifying tokens with
/// the auth service of `config.auth`.
///
/// # Errors
/// When the host cannot isolate untrusted code, a tool is missing, or the server fails.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ExecutionConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = umcp_redis::Redis::connect(&config.redis).await?;
    let auth = umcp_authz::AuthClient::start(&config.auth, shared).await?;
    let verifier = Arc::clone(&auth.verifier);
    let credentials = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn graph_sink::TokenProvider>);
    let sink = graph_sink::from_config(&config, credentials).map_err(anyhow::Error::msg)?;
    let sink = sink.map(|s| s as Arc<dyn ResultSink>);
    let credentials = auth
        .credentials
        .clone()
        .map(|c| c as Arc<dyn umcp_audit_client::TokenProvider>);
    let emitter = umcp_audit_client::start_emitter(&config.audit, credentials, "execution")?;
    serve(
        listener,
        config,
        Wiring { verifier, emitter },
        sink,
        shutdown,
    )
    .await
}

/// [`run`] with the verifier, emitter and result sink given: the entry tests use.
///
/// # Errors
/// See [`run`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ExecutionConfig,
    wiring: Wiring,
    sink: Option<Arc<dyn ResultSink>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sandbox = build_sandbox(&config)?;
    let info = sandbox.info();
    let response_limit = max_response_bytes(&config);
    let service = ExecutionService::new(config, Arc::new(sandbox.clone()), sink)
        .await
        .map_err(|e| anyhow::anyhow!("refusing to start: {e}"))?
        .with_warm_pool(&sandbox);
    let rt = service.runtimes();
    tracing::info!(
        backend = info.backend,
        cgroups = %info.cgroups,
        slots = info.slots,
        languages = ?rt.languages.iter().map(|l| l.version.as_str()).collect::<Vec<_>>(),
        ruff = ?rt.ruff.as_ref().map(|t| &t.version),
        shellcheck = ?rt.shellcheck.as_ref().map(|t| &t.version),
        pytest = ?rt.pytest.as_ref().map(|t| &t.version),
        "execution service ready"
    );
    let grpc = grpc::GrpcExecution::new(Arc::new(service));
    let svc = ExecutionServiceServer::new(grpc)
        .max_decoding_message_size(umcp_rpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(response_limit);
    wiring
        .server("execution")
        .add_service(svc)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
