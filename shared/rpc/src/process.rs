//! The shape every umcp binary's `main` shares: load and validate configuration, start logging,
//! bind the listener, run until Ctrl-C or SIGTERM, exit with a meaningful code.

use std::future::Future;
use std::process::ExitCode;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use umcp_config::{Sources, Validate};
use umcp_telemetry::LogConfig;

/// Exit code for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when the listen address cannot be bound (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code when the service fails while running (`EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;

/// What a binary tells [`main`] about its configuration type.
pub trait ProcessConfig: Default + Serialize + DeserializeOwned + Validate {
    /// The logging section.
    fn log(&self) -> &LogConfig;
    /// The gRPC listen address.
    fn listen(&self) -> &str;
    /// The operations port (`/metrics`, `/healthz`, `/readyz`); `None` or an empty address:
    /// not served (the gateway serves them on its own HTTP port).
    fn ops(&self) -> Option<&crate::ops::OpsConfig> {
        None
    }
}

/// Runs a service binary: `run(listener, config, shutdown)` is the service's library entry.
pub fn main<C, F, Fut, E>(component: &'static str, run: F) -> ExitCode
where
    C: ProcessConfig,
    F: FnOnce(TcpListener, C, ShutdownFuture) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config: C = match Sources::from_process().and_then(|s| umcp_config::load(&s)) {
        Ok(config) => config,
        Err(e) => {
            // Logging is not set up yet (its settings are part of what failed).
            eprintln!("umcp-{component}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("umcp-{component}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    // Inside the runtime: the span exporter's connection spawns its worker on it.
    let telemetry = {
        let _entered = runtime.enter();
        match umcp_telemetry::init(config.log(), component) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("umcp-{component}: cannot start logging or tracing: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let code = runtime.block_on(async move {
        let listener = match TcpListener::bind(config.listen()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = config.listen(), error = %e, "cannot bind the listen address");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        };
        let grpc = listener.local_addr().ok();
        if let Some(addr) = grpc {
            tracing::info!(component, %addr, "listening");
        }
        let ops = match (config.ops().filter(|o| !o.listen.is_empty()), grpc) {
            (Some(ops), Some(grpc)) => match TcpListener::bind(&ops.listen).await {
                Ok(http) => {
                    tracing::info!(component, listen = %ops.listen, "serving metrics and probes");
                    Some(tokio::spawn(crate::ops::serve(http, grpc, std::future::pending())))
                }
                Err(e) => {
                    tracing::error!(listen = %ops.listen, error = %e, "cannot bind the http address");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
            },
            _ => None,
        };
        let result = run(listener, config, Box::pin(shutdown_signal())).await;
        if let Some(ops) = ops {
            ops.abort();
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(component, error = %e, "service failed");
                ExitCode::from(EXIT_SOFTWARE)
            }
        }
    });
    // Off the async threads, with the runtime still alive for the exporter's connection.
    telemetry.shutdown();
    code
}

/// The shutdown future handed to a service's `run`.
pub type ShutdownFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
