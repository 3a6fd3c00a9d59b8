//! The gRPC adapter: decodes requests into domain types, calls [`ExecutionService`], encodes
//! the answer. No logic lives here beyond the wire mapping.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use umcp_proto::execution::v1 as pb;
use umcp_sandbox::process::StreamKind;

use crate::admission::with_deadline;
use crate::error::ExecError;
use crate::identity;
use crate::model::{
    Diagnostic, ExecuteInput, ExecutionResult, GenerateInput, Language, LimitRequest, RunStatus,
    Severity, SourceFile, StreamEvent, TestOutcome, TestsInput,
};
use crate::service::ExecutionService;

/// Implements the generated `ExecutionService` trait over the domain service.
#[derive(Debug, Clone)]
pub struct GrpcExecution {
    service: Arc<ExecutionService>,
}

impl GrpcExecution {
    pub fn new(service: Arc<ExecutionService>) -> Self {
        Self { service }
    }
}

fn language(value: i32) -> Result<Language, ExecError> {
    match pb::Language::try_from(value) {
        Ok(pb::Language::Python) => Ok(Language::Python),
        Ok(pb::Language::Javascript) => Ok(Language::JavaScript),
        Ok(pb::Language::Bash) => Ok(Language::Bash),
        _ => Err(ExecError::invalid(format!(
            "language {value} is not supported; use LANGUAGE_PYTHON, LANGUAGE_JAVASCRIPT or LANGUAGE_BASH"
        ))),
    }
}

fn language_pb(l: Language) -> pb::Language {
    match l {
        Language::Python => pb::Language::Python,
        Language::JavaScript => pb::Language::Javascript,
        Language::Bash => pb::Language::Bash,
    }
}

fn duration(field: &str, d: Option<prost_types::Duration>) -> Result<Option<Duration>, ExecError> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 => Err(
            ExecError::invalid(format!("limits.{field} must be a non-negative duration")),
        ),
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn duration_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn limits(l: Option<pb::Limits>) -> Result<LimitRequest, ExecError> {
    let Some(l) = l else {
        return Ok(LimitRequest::default());
    };
    let nz64 = |v: u64| (v != 0).then_some(v);
    let nz32 = |v: u32| (v != 0).then_some(v);
    Ok(LimitRequest {
        wall_time: duration("wall_time", l.wall_time)?.filter(|d| !d.is_zero()),
        cpu_time: duration("cpu_time", l.cpu_time)?.filter(|d| !d.is_zero()),
        memory_bytes: nz64(l.memory_bytes),
        max_processes: nz32(l.max_processes),
        output_bytes: nz64(l.output_bytes),
        file_size_bytes: nz64(l.file_size_bytes),
        open_files: nz32(l.open_files),
        tmp_bytes: nz64(l.tmp_bytes),
    })
}

fn execute_input(r: pb::ExecuteRequest) -> Result<ExecuteInput, ExecError> {
    Ok(ExecuteInput {
        language: language(r.language)?,
        code: r.code,
        stdin: r.stdin,
        args: r.args,
        limits: limits(r.limits)?,
        idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
    })
}

fn status_pb(s: RunStatus) -> pb::RunStatus {
    match s {
        RunStatus::Ok => pb::RunStatus::Ok,
        RunStatus::RuntimeError => pb::RunStatus::RuntimeError,
        RunStatus::Timeout => pb::RunStatus::Timeout,
        RunStatus::CpuLimit => pb::RunStatus::CpuLimit,
        RunStatus::MemoryLimit => pb::RunStatus::MemoryLimit,
        RunStatus::OutputLimit => pb::RunStatus::OutputLimit,
        RunStatus::SandboxError => pb::RunStatus::SandboxError,
    }
}

/// Runs the sandbox had to kill for exceeding a limit (a fork bomb, a memory hog, an output
/// flood, a runaway loop) are security-relevant; ordinary failures are not.
fn limit_violation(status: RunStatus) -> Option<&'static str> {
    match status {
        RunStatus::Timeout => Some("sandbox_timeout"),
        RunStatus::CpuLimit => Some("sandbox_cpu_limit"),
        RunStatus::MemoryLimit => Some("sandbox_memory_limit"),
        RunStatus::OutputLimit => Some("sandbox_output_limit"),
        RunStatus::Ok | RunStatus::RuntimeError | RunStatus::SandboxError => None,
    }
}

fn result_pb(r: ExecutionResult) -> pb::ExecuteResponse {
    pb::ExecuteResponse {
        id: r.id,
        status: status_pb(r.status) as i32,
        exit_code: r.exit_code,
        signal: r.signal,
        stdout: r.stdout,
        stderr: r.stderr,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        wall_time: Some(duration_pb(r.wall_time)),
        cpu_time: Some(duration_pb(r.cpu_time)),
        peak_memory_bytes: r.peak_memory_bytes,
        replayed: r.replayed,
    }
}

fn diagnostic_pb(d: Diagnostic) -> pb::Diagnostic {
    let severity = match d.severity {
        Severity::Error => pb::DiagnosticSeverity::Error,
        Severity::Warning => pb::DiagnosticSeverity::Warning,
        Severity::Info => pb::DiagnosticSeverity::Info,
    };
    pb::Diagnostic {
        line: d.line,
        column: d.column,
        code: d.code,
        message: d.message,
        severity: severity as i32,
        source: d.source,
    }
}

fn files(f: Vec<pb::SourceFile>) -> Vec<SourceFile> {
    f.into_iter()
        .map(|f| SourceFile {
            path: f.path,
            content: f.content,
        })
        .collect()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecuteStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::execution_service_server::ExecutionService for GrpcExecution {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let user = identity::caller(&request)?;
        let deadline = umcp_rpc::deadline::of(&request);
        let input = execute_input(request.into_inner())?;
        let result = with_deadline(deadline, self.service.execute(&user, input)).await?;
        let violation = limit_violation(result.status);
        let mut response = Response::new(result_pb(result));
        if let Some(kind) = violation {
            // The audit layer records this as a security violation.
            response.metadata_mut().insert(
                umcp_audit_client::VIOLATION_HEADER,
                tonic::metadata::MetadataValue::from_static(kind),
            );
        }
        Ok(response)
    }

    type ExecuteStreamStream = EventStream;

    async fn execute_stream(
        &self,
        request: Request<pb::ExecuteStreamRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let user = identity::caller(&request)?;
        let deadline = umcp_rpc::deadline::of(&request);
        let inner = request
            .into_inner()
            .request
            .ok_or_else(|| ExecError::invalid("request is required"))?;
        let input = execute_input(inner)?;
        let events =
            with_deadline(deadline, async { self.service.execute_stream(user, input) }).await?;
        let stream = ReceiverStream::new(events).map(|event| {
            let event = match event.map_err(Status::from)? {
                StreamEvent::Output { stream, data } => {
                    pb::execute_stream_response::Event::Output(pb::OutputChunk {
                        stream: match stream {
                            StreamKind::Stdout => pb::Stream::Stdout,
                            StreamKind::Stderr => pb::Stream::Stderr,
                        } as i32,
                        data,
                    })
                }
                StreamEvent::Result(r) => pb::execute_stream_response::Event::Result(result_pb(*r)),
            };
            Ok(pb::ExecuteStreamResponse { event: Some(event) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lint(
        &self,
        request: Request<pb::LintRequest>,
    ) -> Result<Response<pb::LintResponse>, Status> {
        let user = identity::caller(&request)?;
        let deadline = umcp_rpc::deadline::of(&request);
        let r = request.into_inner();
        let report = with_deadline(
            deadline,
            self.service.lint(&user, language(r.language)?, &r.code),
        )
        .await?;
        Ok(Response::new(pb::LintResponse {
            id: report.id,
            code_sha256: report.code_sha256,
            diagnostics: report.diagnostics.into_iter().map(diagnostic_pb).collect(),
            linters_run: report.linters_run,
            diagnostics_truncated: report.diagnostics_truncated,
            python: report.python.map(|p| pb::PythonSummary {
                functions: p.functions,
                classes: p.classes,
                imports: p.imports,
                complexity: p
                    .complexity
                    .into_iter()
                    .map(|c| pb::FunctionComplexity {
                        name: c.name,
                        complexity: c.complexity,
                        line: c.line,
                        is_async: c.is_async,
                    })
                    .collect(),
            }),
        }))
    }

    async fn run_tests(
        &self,
        request: Request<pb::RunTestsRequest>,
    ) -> Result<Response<pb::RunTestsResponse>, Status> {
        let user = identity::caller(&request)?;
        let deadline = umcp_rpc::deadline::of(&request);
        let r = request.into_inner();
        let input = TestsInput {
            modules: files(r.modules),
            tests: files(r.tests),
            limits: limits(r.limits)?,
        };
        let report = with_deadline(deadline, self.service.run_tests(&user, input)).await?;
        Ok(Response::new(pb::RunTestsResponse {
            id: report.id,
            status: status_pb(report.status) as i32,
            tests: report
                .tests
                .into_iter()
                .map(|t| pb::TestCase {
                    name: t.name,
                    outcome: match t.outcome {
                        TestOutcome::Passed => pb::TestOutcome::Passed,
                        TestOutcome::Failed => pb::TestOutcome::Failed,
                        TestOutcome::Error => pb::TestOutcome::Error,
                        TestOutcome::Skipped => pb::TestOutcome::Skipped,
                    } as i32,
                    duration: Some(duration_pb(t.duration)),
                    message: t.message,
                })
                .collect(),
            passed: report.passed,
            failed: report.failed,
            errors: report.errors,
            skipped: report.skipped,
            wall_time: Some(duration_pb(report.wall_time)),
            stdout: report.stdout,
            stderr: report.stderr,
            report_problem: report.report_problem,
        }))
    }

    async fn generate_code(
        &self,
        request: Request<pb::GenerateCodeRequest>,
    ) -> Result<Response<pb::GenerateCodeResponse>, Status> {
        let user = identity::caller(&request)?;
        let deadline = umcp_rpc::deadline::of(&request);
        let r = request.into_inner();
        let input = GenerateInput {
            template: r.template,
            context_json: r.context_json,
            // Recorded, not checked: an unknown value is simply not recorded.
            language: language(r.language).ok(),
        };
        let generated = with_deadline(deadline, self.service.generate_code(&user, input)).await?;
        Ok(Response::new(pb::GenerateCodeResponse {
            id: generated.id,
            output: generated.output,
        }))
    }

    async fn list_languages(
        &self,
        _request: Request<pb::ListLanguagesRequest>,
    ) -> Result<Response<pb::ListLanguagesResponse>, Status> {
        let languages = self
            .service
            .runtimes()
            .languages
            .iter()
            .map(|l| pb::LanguageInfo {
                language: language_pb(l.language) as i32,
                version: l.version.clone(),
                interpreter: l.interpreter.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListLanguagesResponse { languages }))
    }
}
