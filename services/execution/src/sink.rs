//! Where finished work is reported. The graph service will persist results and the audit
//! service will record `code_execution`/`code_lint`/`code_test` events through this seam; until
//! those clients exist the service runs without a sink (nothing is pretended to be stored).

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
}

/// Receives every finished run (not replays). Called off the request path; errors are logged.
#[async_trait::async_trait]
pub trait ResultSink: Send + Sync + std::fmt::Debug {
    async fn record(&self, user: &str, activity: Activity) -> Result<(), String>;
}
