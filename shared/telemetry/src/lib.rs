//! Logging, traces and metrics for every umcp binary.
//!
//! Logs: JSON (one object a line, for collectors) or plain text (for people), by default JSON
//! unless stderr is a terminal, filtered by an `EnvFilter` directive. Request handling runs
//! inside a span carrying `correlation_id` and `trace_id` (opened by `umcp-rpc`), and both
//! formats print the fields of the current span on every line, so every log line of a request
//! carries them. Traces: see [`trace`]. Metrics: see [`metrics`].

#![warn(missing_docs)]

pub mod metrics;
pub mod trace;

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Default filter: our crates at `info`, dependencies at `warn`.
pub const DEFAULT_FILTER: &str = "warn,umcp=info";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (a container, a file, a collector), plain on one.
    #[default]
    Auto,
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The `log` section of every binary's configuration (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (default: `json` unless stderr is a terminal), `plain` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `warn,umcp_gateway=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: DEFAULT_FILTER.to_owned(),
        }
    }
}

impl LogConfig {
    /// Problems with this section, for the binary's `Validate` impl.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        match EnvFilter::try_new(&self.filter) {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!(
                "log.filter (UMCP_LOG__FILTER) `{}` is not a valid filter directive: {e}; \
                 example: `info` or `warn,umcp_graph=debug`",
                self.filter
            )],
        }
    }
}

/// What [`init`] started; [`Telemetry::shutdown`] flushes it.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waiting up to 5 s) and stops the exporter. Call it
    /// after the service stopped, off the async worker threads, while the runtime is alive
    /// (the exporter's connection runs on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

/// Installs the global subscriber (logs, and spans exported over OTLP when the standard
/// `OTEL_*` variables ask for it, see [`trace`]) for the process `component` (e.g. `graph`).
/// Call once, inside the tokio runtime, before anything logs.
///
/// # Errors
/// When the filter is invalid, the OTLP exporter cannot be built from its variables, or a
/// global subscriber is already installed.
pub fn init(
    config: &LogConfig,
    component: &str,
) -> Result<Telemetry, Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_new(&config.filter)?;
    let json = match config.format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Plain => false,
        LogFormat::Json => true,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let provider = trace::wanted()
        .then(|| trace::provider(component))
        .transpose()?;
    let otel = provider.as_ref().map(trace::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// A subscriber for tests: plain, captured by the test harness, ignores a second call.
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_reported_with_its_variable() {
        let cfg = LogConfig {
            format: LogFormat::Json,
            filter: "umcp=[".into(),
        };
        let problems = cfg.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("UMCP_LOG__FILTER"));
        assert!(LogConfig::default().problems().is_empty());
    }
}
