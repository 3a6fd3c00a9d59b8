//! Domain types of the execution service (independent of the wire format).

use std::time::Duration;

use umcp_sandbox::process::StreamKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
    Bash,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Python, Language::JavaScript, Language::Bash];

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Bash => "bash",
        }
    }

    /// File name of the program under /box.
    pub fn main_file(self) -> &'static str {
        match self {
            Language::Python => "main.py",
            Language::JavaScript => "main.js",
            Language::Bash => "main.sh",
        }
    }
}

/// Limits as requested; `None` means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitRequest {
    pub wall_time: Option<Duration>,
    pub cpu_time: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub max_processes: Option<u32>,
    pub output_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub open_files: Option<u32>,
    pub tmp_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ExecuteInput {
    pub language: Language,
    pub code: String,
    pub stdin: Vec<u8>,
    pub args: Vec<String>,
    pub limits: LimitRequest,
    pub idempotency_key: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Ok,
    RuntimeError,
    Timeout,
    CpuLimit,
    MemoryLimit,
    OutputLimit,
    SandboxError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionResult {
    pub id: String,
    pub status: RunStatus,
    /// -1 when killed by a signal.
    pub exit_code: i32,
    /// 0 unless killed by a signal.
    pub signal: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub wall_time: Duration,
    pub cpu_time: Duration,
    pub peak_memory_bytes: u64,
    pub replayed: bool,
}

/// Events of a streaming execution.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    Output {
        stream: StreamKind,
        data: Vec<u8>,
    },
    /// Final result; its stdout/stderr are empty (the chunks carried them).
    Result(Box<ExecutionResult>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub code: String,
    pub message: String,
    pub severity: Severity,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionComplexity {
    pub name: String,
    pub complexity: u32,
    pub line: u32,
    pub is_async: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonSummary {
    pub functions: Vec<String>,
    pub classes: Vec<String>,
    pub imports: Vec<String>,
    pub complexity: Vec<FunctionComplexity>,
}

#[derive(Debug, Clone)]
pub struct LintReport {
    pub id: String,
    pub code_sha256: String,
    pub diagnostics: Vec<Diagnostic>,
    pub linters_run: Vec<String>,
    pub python: Option<PythonSummary>,
    /// Diagnostics were dropped or shortened by the caps.
    pub diagnostics_truncated: bool,
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct TestsInput {
    pub modules: Vec<SourceFile>,
    pub tests: Vec<SourceFile>,
    pub limits: LimitRequest,
}

/// A GenerateCode request.
#[derive(Debug, Clone)]
pub struct GenerateInput {
    /// The minijinja template.
    pub template: String,
    /// The template's context, a JSON object.
    pub context_json: String,
    /// The language the caller says the output is in; recorded, not checked (`None` when the
    /// caller named no known language).
    pub language: Option<Language>,
}

/// A rendered template.
#[derive(Debug, Clone)]
pub struct Generated {
    pub id: String,
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestCaseResult {
    pub name: String,
    pub outcome: TestOutcome,
    pub duration: Duration,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct TestReport {
    pub id: String,
    pub status: RunStatus,
    pub tests: Vec<TestCaseResult>,
    pub passed: u32,
    pub failed: u32,
    pub errors: u32,
    pub skipped: u32,
    pub wall_time: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Why the JUnit report could not be read (empty when it was).
    pub report_problem: String,
}

#[derive(Debug, Clone)]
pub struct LanguageInfo {
    pub language: Language,
    pub version: String,
    pub interpreter: String,
}
