//! Logging for every umcp binary: JSON (one object a line, for collectors) or plain text (for
//! people), filtered by an `EnvFilter` directive.
//!
//! Request handling runs inside a span carrying `correlation_id` (opened by `umcp-rpc` and the
//! gateway), and both formats print the fields of the current span on every line, so every log
//! line of a request carries its correlation id.

#![warn(missing_docs)]

pub mod metrics;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Default filter: our crates at `info`, dependencies at `warn`.
pub const DEFAULT_FILTER: &str = "warn,umcp=info";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// The `log` section of every binary's configuration (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` (default) or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `warn,umcp_gateway=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
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

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// # Errors
/// When the filter is invalid or a global subscriber is already installed.
pub fn init(config: &LogConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(&config.filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    }
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
