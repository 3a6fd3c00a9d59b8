//! `umcp lint`, `umcp test`, `umcp gen`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use umcp_proto::execution::v1 as pb;

use super::input::{assignment, language, read_json, read_text};
use crate::args::{GenArgs, GlobalOpts, LintArgs, TestArgs};
use crate::error::CliError;
use crate::output::{Output, proto_json, seconds, with_spinner};
use crate::session::Session;

/// `umcp lint`: diagnostics as `file:line:col: severity code message [linter]`; findings of
/// severity error or warning end with exit code 1.
///
/// # Errors
/// Unreadable input, no credentials, a failed call, and [`CliError::Findings`].
pub async fn lint(opts: &GlobalOpts, args: &LintArgs, out: Output) -> Result<(), CliError> {
    let lang = language(args.lang, &args.file)?;
    let code = read_text(&args.file)?;
    let session = Session::load(opts)?;
    let answer = with_spinner("linting", async {
        session
            .connection()
            .execution()
            .lint(
                session
                    .request(pb::LintRequest {
                        language: lang as i32,
                        code,
                    })
                    .await?,
            )
            .await
            .map_err(CliError::rpc("ExecutionService/Lint", session.endpoint()))
    })
    .await?
    .into_inner();
    let serious = answer
        .diagnostics
        .iter()
        .filter(|d| {
            d.severity == pb::DiagnosticSeverity::Error as i32
                || d.severity == pb::DiagnosticSeverity::Warning as i32
        })
        .count();
    if out.is_json() {
        out.print_json(&proto_json(&answer, "umcp.execution.v1.LintResponse"))?;
    } else {
        let name = args.file.display();
        for d in &answer.diagnostics {
            let severity =
                pb::DiagnosticSeverity::try_from(d.severity).map_or("unknown".to_owned(), |s| {
                    s.as_str_name()
                        .trim_start_matches("DIAGNOSTIC_SEVERITY_")
                        .to_lowercase()
                });
            out.line(format!(
                "{name}:{}:{}: {severity} {} {} [{}]",
                d.line, d.column, d.code, d.message, d.source
            ))?;
        }
        out.line(format!(
            "{} diagnostic(s){}; linters: {}",
            answer.diagnostics.len(),
            if answer.diagnostics_truncated {
                " (truncated)"
            } else {
                ""
            },
            answer.linters_run.join(", ")
        ))?;
    }
    if serious > 0 {
        return Err(CliError::Findings(format!(
            "{serious} error or warning diagnostic(s) in {}",
            args.file.display()
        )));
    }
    Ok(())
}

/// `umcp test`: one line per test, a summary, pytest's own output when something failed; exit
/// code 1 when a test failed or errored or the run did not finish.
///
/// # Errors
/// Unreadable files, no credentials, a failed call, and [`CliError::Findings`].
pub async fn test(opts: &GlobalOpts, args: &TestArgs, out: Output) -> Result<(), CliError> {
    let files = |paths: &[std::path::PathBuf]| -> Result<Vec<pb::SourceFile>, CliError> {
        paths
            .iter()
            .map(|p| {
                Ok(pb::SourceFile {
                    path: sandbox_path(p)?,
                    content: read_text(p)?,
                })
            })
            .collect()
    };
    let request = pb::RunTestsRequest {
        modules: files(&args.modules)?,
        tests: files(&args.tests)?,
        limits: args.wall_time.map(|d| pb::Limits {
            wall_time: Some(prost_types::Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            ..pb::Limits::default()
        }),
    };
    let session = Session::load(opts)?;
    let deadline =
        args.wall_time.unwrap_or(Duration::from_secs(60)) + session.connection().timeout();
    let answer = with_spinner("running tests", async {
        session
            .connection()
            .execution()
            .run_tests(session.request_within(request, deadline).await?)
            .await
            .map_err(CliError::rpc(
                "ExecutionService/RunTests",
                session.endpoint(),
            ))
    })
    .await?
    .into_inner();
    let finished = answer.status == pb::RunStatus::Ok as i32
        || answer.status == pb::RunStatus::RuntimeError as i32;
    let bad = answer.failed + answer.errors;
    if out.is_json() {
        let mut value = proto_json(&answer, "umcp.execution.v1.RunTestsResponse");
        value["stdout"] = Json::String(String::from_utf8_lossy(&answer.stdout).into_owned());
        value["stderr"] = Json::String(String::from_utf8_lossy(&answer.stderr).into_owned());
        out.print_json(&value)?;
    } else {
        print_tests(&answer, out, bad > 0 || !finished)?;
    }
    if !finished {
        let status = pb::RunStatus::try_from(answer.status)
            .map_or("unknown".to_owned(), |s| s.as_str_name().to_owned());
        return Err(CliError::Findings(format!(
            "the test run did not finish: {status}"
        )));
    }
    if bad > 0 {
        return Err(CliError::Findings(format!(
            "{} failed, {} error(s)",
            answer.failed, answer.errors
        )));
    }
    Ok(())
}

fn print_tests(
    answer: &pb::RunTestsResponse,
    out: Output,
    show_output: bool,
) -> Result<(), CliError> {
    for t in &answer.tests {
        let outcome = pb::TestOutcome::try_from(t.outcome).map_or("UNKNOWN".to_owned(), |o| {
            o.as_str_name()
                .trim_start_matches("TEST_OUTCOME_")
                .to_owned()
        });
        out.line(format!(
            "{outcome:<8} {}  {}",
            t.name,
            seconds(t.duration.as_ref())
        ))?;
        if !t.message.is_empty() && t.outcome != pb::TestOutcome::Passed as i32 {
            for line in t.message.lines().take(20) {
                out.line(format!("         {line}"))?;
            }
        }
    }
    if show_output {
        let mut err = std::io::stderr().lock();
        err.write_all(&answer.stdout)?;
        err.write_all(&answer.stderr)?;
    }
    if !answer.report_problem.is_empty() {
        eprintln!(
            "umcp: the test report could not be read fully: {}",
            answer.report_problem
        );
    }
    out.line(format!(
        "{} passed, {} failed, {} errors, {} skipped in {}",
        answer.passed,
        answer.failed,
        answer.errors,
        answer.skipped,
        seconds(answer.wall_time.as_ref())
    ))
}

/// The path a file gets in the sandbox: as given when it is a plain relative path the service
/// accepts, else its file name (so `../x/test_a.py` and `/abs/test_a.py` become `test_a.py`).
fn sandbox_path(path: &Path) -> Result<String, CliError> {
    let text = path.to_string_lossy();
    let plain = path.is_relative()
        && !text
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    if plain {
        return Ok(text.into_owned());
    }
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::BadInput(format!("{} has no file name", path.display())))
}

/// `umcp gen`: the rendered text on stdout, as is.
///
/// # Errors
/// Unreadable template or context, context not a JSON object, no credentials, a failed call.
pub async fn gen_code(opts: &GlobalOpts, args: &GenArgs, out: Output) -> Result<(), CliError> {
    let template = read_text(&args.template)?;
    let mut context = match &args.context {
        Some(path) => match read_json(path)? {
            Json::Object(map) => map,
            _ => {
                return Err(CliError::BadInput(format!(
                    "{}: the context must be a JSON object",
                    path.display()
                )));
            }
        },
        None => Map::new(),
    };
    for item in &args.set {
        let (name, value) = assignment(item, "--set")?;
        context.insert(name, value);
    }
    let language = match args.lang {
        Some(lang) => language(Some(lang), &args.template)? as i32,
        None => language(None, &args.template).map_or(0, |l| l as i32),
    };
    let session = Session::load(opts)?;
    let request = pb::GenerateCodeRequest {
        template,
        context_json: Json::Object(context).to_string(),
        language,
    };
    let answer = with_spinner("rendering", async {
        session
            .connection()
            .execution()
            .generate_code(session.request(request).await?)
            .await
            .map_err(CliError::rpc(
                "ExecutionService/GenerateCode",
                session.endpoint(),
            ))
    })
    .await?
    .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(
            &answer,
            "umcp.execution.v1.GenerateCodeResponse",
        ));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(answer.output.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_keep_plain_relative_paths_only() {
        assert_eq!(
            sandbox_path(Path::new("pkg/test_a.py")).unwrap(),
            "pkg/test_a.py"
        );
        assert_eq!(
            sandbox_path(Path::new("../x/test_a.py")).unwrap(),
            "test_a.py"
        );
        assert_eq!(sandbox_path(Path::new("/abs/mod.py")).unwrap(), "mod.py");
    }
}
