//! The execution service's tools: `execute_code` (streamed: output chunks become MCP progress
//! notifications while the run lasts), `lint_code`, `run_tests`, `generate_code`,
//! `list_languages`.

use std::fmt::Write as _;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ProgressNotificationParam};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;
use umcp_proto::execution::v1 as pb;
use umcp_proto::execution::v1::execute_stream_response::Event;
use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;

use super::args::{ExecuteArgs, GenerateArgs, LanguageArg, LintArgs, RunTestsArgs};
use super::link::{Who, failure};
use super::render::{enum_name, millis, output_text, result, streams_text};
use super::server::McpServer;

/// At most this many characters of a chunk go into one progress message (the full output is in
/// the result).
const PROGRESS_TEXT_CHARS: usize = 4096;

fn language(arg: LanguageArg) -> i32 {
    match arg {
        LanguageArg::Python => pb::Language::Python as i32,
        LanguageArg::Javascript => pb::Language::Javascript as i32,
        LanguageArg::Bash => pb::Language::Bash as i32,
    }
}

fn limits(timeout_seconds: Option<u32>) -> Option<pb::Limits> {
    timeout_seconds.map(|secs| pb::Limits {
        wall_time: Some(prost_types::Duration {
            seconds: i64::from(secs),
            nanos: 0,
        }),
        ..pb::Limits::default()
    })
}

fn language_name(value: i32) -> String {
    pb::Language::try_from(value).map_or_else(
        |_| "unspecified".into(),
        |l| enum_name(l.as_str_name(), "LANGUAGE_"),
    )
}

fn run_status(value: i32) -> String {
    pb::RunStatus::try_from(value).map_or_else(
        |_| "unspecified".into(),
        |s| enum_name(s.as_str_name(), "RUN_STATUS_"),
    )
}

#[tool_router(router = execution_router, vis = "pub(crate)")]
impl McpServer {
    /// `execute_code`.
    #[tool(
        description = "Run a Python, JavaScript or Bash program in a fresh sandbox (no network, \
            CPU/memory/output limits) and return its exit status, stdout and stderr. Output \
            chunks arrive as progress notifications while it runs when the call carries a \
            progress token. Needs permission tools:execute (developer, admin).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn execute_code(
        &self,
        Parameters(args): Parameters<ExecuteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        let request = pb::ExecuteStreamRequest {
            request: Some(pb::ExecuteRequest {
                language: language(args.language),
                code: args.code,
                stdin: args.stdin.unwrap_or_default().into_bytes(),
                args: args.args.unwrap_or_default(),
                limits: limits(args.timeout_seconds),
                idempotency_key: args.idempotency_key.unwrap_or_default(),
            }),
        };
        let mut client = ExecutionServiceClient::new(self.link.channel.clone());
        let mut stream = match client
            .execute_stream(self.link.request(&who, request))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(failure(&status, &who)),
        };
        let progress = ctx.meta.get_progress_token();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut chunks = 0u32;
        while let Some(message) = stream.next().await {
            let event = match message {
                Ok(message) => message.event,
                Err(status) => return Ok(failure(&status, &who)),
            };
            match event {
                Some(Event::Output(chunk)) => {
                    chunks += 1;
                    let is_err = chunk.stream == pb::Stream::Stderr as i32;
                    if let Some(token) = &progress {
                        let text: String = String::from_utf8_lossy(&chunk.data)
                            .chars()
                            .take(PROGRESS_TEXT_CHARS)
                            .collect();
                        let label = if is_err { "stderr" } else { "stdout" };
                        let note = ProgressNotificationParam::new(token.clone(), f64::from(chunks))
                            .with_message(format!("{label}: {text}"));
                        // A client that went away only loses the notification; the run goes on.
                        let _ = ctx.peer.notify_progress(note).await;
                    }
                    if is_err {
                        stderr.extend_from_slice(&chunk.data);
                    } else {
                        stdout.extend_from_slice(&chunk.data);
                    }
                }
                Some(Event::Result(mut done)) => {
                    // The streamed result leaves the output to the chunks.
                    if done.stdout.is_empty() {
                        done.stdout = std::mem::take(&mut stdout);
                    }
                    if done.stderr.is_empty() {
                        done.stderr = std::mem::take(&mut stderr);
                    }
                    return Ok(execution_result(&done, chunks, &who));
                }
                None => {}
            }
        }
        let status = tonic::Status::unavailable("the run ended without a result; retry later");
        Ok(failure(&status, &who))
    }

    /// `lint_code`.
    #[tool(
        description = "Check source code without running it (python: ruff, plus a summary of \
            functions, classes, imports and complexity; bash: shellcheck; javascript: syntax). \
            Returns the diagnostics as a list. Needs tools:lint (viewer and up).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn lint_code(
        &self,
        Parameters(args): Parameters<LintArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        let request = pb::LintRequest {
            language: language(args.language),
            code: args.code,
        };
        let mut client = ExecutionServiceClient::new(self.link.channel.clone());
        match client.lint(self.link.request(&who, request)).await {
            Ok(response) => Ok(lint_result(&response.into_inner())),
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `run_tests`.
    #[tool(
        description = "Run pytest on the given test files against the given modules in a \
            sandbox and return every test case's outcome with counts, stdout and stderr. \
            Needs tools:test (developer, admin).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_tests(
        &self,
        Parameters(args): Parameters<RunTestsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let files = |map: serde_json::Map<String, Json>, field: &str| {
            map.into_iter()
                .map(|(path, content)| match content {
                    Json::String(content) => Ok(pb::SourceFile { path, content }),
                    _ => Err(ErrorData::invalid_params(
                        format!("invalid argument `{field}.{path}`: must be a string (the file's source)"),
                        Some(json!({ "field": format!("{field}.{path}") })),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let request = pb::RunTestsRequest {
            modules: files(args.modules.unwrap_or_default(), "modules")?,
            tests: files(args.tests, "tests")?,
            limits: limits(args.timeout_seconds),
        };
        let who = self.link.who(&ctx).await?;
        let mut client = ExecutionServiceClient::new(self.link.channel.clone());
        match client.run_tests(self.link.request(&who, request)).await {
            Ok(response) => Ok(tests_result(&response.into_inner())),
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `generate_code`.
    #[tool(
        description = "Render a minijinja (Jinja2) template with a JSON context in a sandbox \
            (strict: undefined variables are errors) and return the text. Needs \
            tools:generate (developer, admin).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn generate_code(
        &self,
        Parameters(args): Parameters<GenerateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        let context = Json::Object(args.context.unwrap_or_default()).to_string();
        let request = pb::GenerateCodeRequest {
            template: args.template,
            context_json: context,
            language: args.language.map_or(0, language),
        };
        let mut client = ExecutionServiceClient::new(self.link.channel.clone());
        match client.generate_code(self.link.request(&who, request)).await {
            Ok(response) => {
                let generated = response.into_inner();
                let structured = json!({ "id": generated.id, "output": generated.output });
                Ok(result(structured, generated.output))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }

    /// `list_languages`.
    #[tool(
        description = "List the languages the sandbox runs, with interpreter versions. Needs \
            tools:read (viewer and up).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_languages(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let who = self.link.who(&ctx).await?;
        let mut client = ExecutionServiceClient::new(self.link.channel.clone());
        let request = self.link.request(&who, pb::ListLanguagesRequest {});
        match client.list_languages(request).await {
            Ok(response) => {
                let languages: Vec<Json> = response
                    .into_inner()
                    .languages
                    .iter()
                    .map(|l| {
                        json!({
                            "language": language_name(l.language),
                            "version": l.version,
                            "interpreter": l.interpreter,
                        })
                    })
                    .collect();
                let text = languages
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {}",
                            l["language"].as_str().unwrap_or(""),
                            l["version"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(result(json!({ "languages": languages }), text))
            }
            Err(status) => Ok(failure(&status, &who)),
        }
    }
}

fn execution_result(done: &pb::ExecuteResponse, chunks: u32, who: &Who) -> CallToolResult {
    let stdout = output_text(&done.stdout, done.stdout_truncated);
    let stderr = output_text(&done.stderr, done.stderr_truncated);
    let status = run_status(done.status);
    let structured = json!({
        "id": done.id,
        "status": status,
        "exit_code": done.exit_code,
        "signal": done.signal,
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": done.stdout_truncated,
        "stderr_truncated": done.stderr_truncated,
        "wall_time_ms": millis(done.wall_time.as_ref()),
        "cpu_time_ms": millis(done.cpu_time.as_ref()),
        "peak_memory_bytes": done.peak_memory_bytes,
        "replayed": done.replayed,
        "output_chunks": chunks,
        "correlation_id": who.correlation.as_str(),
    });
    let mut text = format!(
        "status: {status}, exit code {} ({} ms)",
        done.exit_code,
        millis(done.wall_time.as_ref())
    );
    streams_text(&mut text, &stdout, &stderr);
    result(structured, text)
}

fn lint_result(lint: &pb::LintResponse) -> CallToolResult {
    let severity = |value: i32| {
        pb::DiagnosticSeverity::try_from(value).map_or_else(
            |_| "unspecified".into(),
            |s| enum_name(s.as_str_name(), "DIAGNOSTIC_SEVERITY_"),
        )
    };
    let diagnostics: Vec<Json> = lint
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "line": d.line, "column": d.column, "code": d.code, "message": d.message,
                "severity": severity(d.severity), "source": d.source,
            })
        })
        .collect();
    let mut text = format!(
        "{} diagnostic(s) from {}",
        diagnostics.len(),
        if lint.linters_run.is_empty() {
            "no linter".to_owned()
        } else {
            lint.linters_run.join(", ")
        }
    );
    for d in &lint.diagnostics {
        let _ = write!(
            text,
            "\n- {}:{} {} [{}] {}",
            d.line,
            d.column,
            d.code,
            severity(d.severity),
            d.message
        );
    }
    if lint.diagnostics_truncated {
        text.push_str("\n[more diagnostics were cut at the limit]");
    }
    let python = lint.python.as_ref().map(|p| {
        json!({
            "functions": p.functions, "classes": p.classes, "imports": p.imports,
            "complexity": p.complexity.iter().map(|c| json!({
                "name": c.name, "complexity": c.complexity, "line": c.line, "is_async": c.is_async,
            })).collect::<Vec<_>>(),
        })
    });
    let structured = json!({
        "id": lint.id,
        "code_sha256": lint.code_sha256,
        "diagnostics": diagnostics,
        "linters_run": lint.linters_run,
        "diagnostics_truncated": lint.diagnostics_truncated,
        "python": python,
    });
    result(structured, text)
}

fn tests_result(run: &pb::RunTestsResponse) -> CallToolResult {
    let outcome = |value: i32| {
        pb::TestOutcome::try_from(value).map_or_else(
            |_| "unspecified".into(),
            |o| enum_name(o.as_str_name(), "TEST_OUTCOME_"),
        )
    };
    let tests: Vec<Json> = run
        .tests
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "outcome": outcome(t.outcome),
                "duration_ms": millis(t.duration.as_ref()), "message": t.message,
            })
        })
        .collect();
    let stdout = output_text(&run.stdout, false);
    let stderr = output_text(&run.stderr, false);
    let mut text = format!(
        "status: {}; {} passed, {} failed, {} errors, {} skipped",
        run_status(run.status),
        run.passed,
        run.failed,
        run.errors,
        run.skipped
    );
    for t in &run.tests {
        let _ = write!(text, "\n- {} {}", outcome(t.outcome), t.name);
        if !t.message.is_empty() {
            let _ = write!(text, ": {}", t.message.lines().next().unwrap_or_default());
        }
    }
    if !run.report_problem.is_empty() {
        let _ = write!(text, "\nreport: {}", run.report_problem);
    }
    streams_text(&mut text, &stdout, &stderr);
    let structured = json!({
        "id": run.id,
        "status": run_status(run.status),
        "passed": run.passed, "failed": run.failed, "errors": run.errors, "skipped": run.skipped,
        "tests": tests,
        "wall_time_ms": millis(run.wall_time.as_ref()),
        "stdout": stdout, "stderr": stderr,
        "report_problem": run.report_problem,
    });
    result(structured, text)
}
