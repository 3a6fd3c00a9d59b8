//! Where finished work is reported. [`crate::graph_sink::GraphSink`] persists results to the
//! graph service through this seam; the audit service will record
//! `code_execution`/`code_lint`/`code_test` events through it too.

use crate::model::{ExecutionResult, Language, LintReport, TestReport};

/// One finished piece of work.
#[derive(Debug, Clone)]
pub enum Activity {
    Execution {
        language: Language,
        code_sha256: String,
        result: ExecutionResult,
    },
    Lint {
        language: Language,
        report: LintReport,
    },
    Tests {
        report: TestReport,
    },
    /// A rendered template: digests only (templates and outputs may carry the user's code).
    Generation {
        id: String,
        language: Option<Language>,
        template_sha256: String,
        context_sha256: String,
        output_sha256: String,
        output_bytes: u64,
    },
}

/// Receives every finished run (not replays). Called off the request path; errors are logged.
#[async_trait::async_trait]
pub trait ResultSink: Send + Sync + std::fmt::Debug {
    async fn record(&self, user: &str, activity: Activity) -> Result<(), String>;
}
