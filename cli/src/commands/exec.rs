//! `umcp exec` (ExecuteStream: output as it arrives, the program's exit code) and
//! `umcp languages`.

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use umcp_proto::execution::v1 as pb;
use umcp_proto::execution::v1::execute_stream_response::Event;

use super::input::{language, language_name, read_bytes, read_text};
use crate::args::{ExecArgs, GlobalOpts};
use crate::error::CliError;
use crate::output::{Output, proto_json, with_spinner};
use crate::session::Session;

/// Exit code when the program hit a limit (wall or CPU time, memory, output), as `timeout(1)`.
pub const EXIT_LIMIT: u8 = 124;
/// Exit code when the sandbox could not run the program.
pub const EXIT_SANDBOX: u8 = 125;
/// The server's maximum wall time, used for the deadline when no limit is given.
const MAX_WALL_TIME: Duration = Duration::from_secs(60);

/// `umcp exec`: streams stdout and stderr as they are produced (with `--json`: collects them
/// and prints one document); returns the exit code to exit with.
///
/// # Errors
/// Unreadable input, no credentials, a failed call.
pub async fn exec(opts: &GlobalOpts, args: &ExecArgs, out: Output) -> Result<u8, CliError> {
    let lang = language(args.lang, &args.file)?;
    if args.file.as_os_str() == "-" && args.input.as_deref() == Some(std::path::Path::new("-")) {
        return Err(CliError::Usage(
            "the program and its --input cannot both come from stdin".into(),
        ));
    }
    let code = read_text(&args.file)?;
    let stdin = match &args.input {
        Some(path) => read_bytes(path)?,
        None => Vec::new(),
    };
    let request = pb::ExecuteRequest {
        language: lang as i32,
        code,
        stdin,
        args: args.args.clone(),
        limits: Some(limits(args)),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
    };
    let session = Session::load(opts)?;
    // The run may take its whole wall time, after waiting in the admission queue.
    let deadline = args.wall_time.unwrap_or(MAX_WALL_TIME) + session.connection().timeout();
    let call = CliError::rpc("ExecutionService/ExecuteStream", session.endpoint());
    let mut stream = session
        .connection()
        .execution()
        .execute_stream(
            session
                .request_within(
                    pb::ExecuteStreamRequest {
                        request: Some(request),
                    },
                    deadline,
                )
                .await?,
        )
        .await
        .map_err(CliError::rpc(
            "ExecutionService/ExecuteStream",
            session.endpoint(),
        ))?
        .into_inner();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = loop {
        match stream.message().await {
            Ok(Some(pb::ExecuteStreamResponse {
                event: Some(Event::Output(chunk)),
            })) => write_chunk(&chunk, out, &mut stdout, &mut stderr)?,
            Ok(Some(pb::ExecuteStreamResponse {
                event: Some(Event::Result(result)),
            })) => break result,
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(call(tonic::Status::internal(
                    "the stream ended without a result",
                )));
            }
            Err(status) => return Err(call(status)),
        }
    };
    if out.is_json() {
        let mut value = proto_json(&result, "umcp.execution.v1.ExecuteResponse");
        value["stdout"] = json!(String::from_utf8_lossy(&stdout));
        value["stderr"] = json!(String::from_utf8_lossy(&stderr));
        out.print_json(&value)?;
    } else {
        explain(&result)?;
    }
    Ok(exit_code(&result))
}

fn limits(args: &ExecArgs) -> pb::Limits {
    let duration = |d: Option<Duration>| {
        d.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        })
    };
    pb::Limits {
        wall_time: duration(args.wall_time),
        cpu_time: duration(args.cpu_time),
        memory_bytes: args.memory_mib.map_or(0, |m| m.saturating_mul(1024 * 1024)),
        ..pb::Limits::default()
    }
}

/// Human mode: the chunk goes straight to our own stdout/stderr; JSON mode keeps it.
fn write_chunk(
    chunk: &pb::OutputChunk,
    out: Output,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
) -> Result<(), CliError> {
    let is_stderr = chunk.stream == pb::Stream::Stderr as i32;
    if out.is_json() {
        if is_stderr { stderr } else { stdout }.extend_from_slice(&chunk.data);
        return Ok(());
    }
    if is_stderr {
        let mut err = std::io::stderr().lock();
        err.write_all(&chunk.data)?;
        err.flush()?;
    } else {
        let mut so = std::io::stdout().lock();
        so.write_all(&chunk.data)?;
        so.flush()?;
    }
    Ok(())
}

/// A line on stderr when the run did not simply exit.
fn explain(result: &pb::ExecuteResponse) -> Result<(), CliError> {
    let status = pb::RunStatus::try_from(result.status).unwrap_or(pb::RunStatus::Unspecified);
    let why = match status {
        pb::RunStatus::Ok | pb::RunStatus::Unspecified => None,
        pb::RunStatus::RuntimeError if result.signal != 0 => Some(format!(
            "the program was killed by signal {}",
            result.signal
        )),
        pb::RunStatus::RuntimeError => None,
        pb::RunStatus::Timeout => Some("the program hit its wall-time limit (--wall-time)".into()),
        pb::RunStatus::CpuLimit => Some("the program hit its CPU-time limit (--cpu-time)".into()),
        pb::RunStatus::MemoryLimit => {
            Some("the program hit its memory limit (--memory-mib)".into())
        }
        pb::RunStatus::OutputLimit => {
            Some("the program hit its output limit and was stopped".into())
        }
        pb::RunStatus::SandboxError => {
            Some("the sandbox could not start the program; it did not run".into())
        }
    };
    let mut err = std::io::stderr().lock();
    if let Some(why) = why {
        writeln!(err, "umcp: {why}")?;
    }
    if result.stdout_truncated || result.stderr_truncated {
        writeln!(err, "umcp: output was truncated at the output limit")?;
    }
    Ok(())
}

/// The exit code `umcp exec` ends with for `result`.
#[must_use]
pub fn exit_code(result: &pb::ExecuteResponse) -> u8 {
    match pb::RunStatus::try_from(result.status).unwrap_or(pb::RunStatus::Unspecified) {
        pb::RunStatus::Ok => 0,
        pb::RunStatus::RuntimeError if result.signal > 0 => {
            u8::try_from(128 + result.signal.min(127)).unwrap_or(255)
        }
        pb::RunStatus::RuntimeError => u8::try_from(result.exit_code & 0xff).unwrap_or(1).max(1),
        pb::RunStatus::Timeout
        | pb::RunStatus::CpuLimit
        | pb::RunStatus::MemoryLimit
        | pb::RunStatus::OutputLimit => EXIT_LIMIT,
        pb::RunStatus::SandboxError | pb::RunStatus::Unspecified => EXIT_SANDBOX,
    }
}

/// `umcp languages`.
///
/// # Errors
/// No credentials, a failed call.
pub async fn languages(opts: &GlobalOpts, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    let answer = with_spinner("listing languages", async {
        session
            .connection()
            .execution()
            .list_languages(session.request(pb::ListLanguagesRequest {}).await?)
            .await
            .map_err(CliError::rpc(
                "ExecutionService/ListLanguages",
                session.endpoint(),
            ))
    })
    .await?
    .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(
            &answer,
            "umcp.execution.v1.ListLanguagesResponse",
        ));
    }
    let rows: Vec<Vec<String>> = answer
        .languages
        .iter()
        .map(|l| {
            vec![
                language_name(l.language),
                l.version.clone(),
                l.interpreter.clone(),
            ]
        })
        .collect();
    out.table(&["LANGUAGE", "VERSION", "INTERPRETER"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: pb::RunStatus, exit_code: i32, signal: i32) -> pb::ExecuteResponse {
        pb::ExecuteResponse {
            status: status as i32,
            exit_code,
            signal,
            ..Default::default()
        }
    }

    #[test]
    fn the_programs_exit_code_becomes_ours() {
        assert_eq!(exit_code(&result(pb::RunStatus::Ok, 0, 0)), 0);
        assert_eq!(exit_code(&result(pb::RunStatus::RuntimeError, 3, 0)), 3);
        assert_eq!(exit_code(&result(pb::RunStatus::RuntimeError, -1, 9)), 137);
        assert_eq!(
            exit_code(&result(pb::RunStatus::Timeout, -1, 9)),
            EXIT_LIMIT
        );
        assert_eq!(
            exit_code(&result(pb::RunStatus::SandboxError, 0, 0)),
            EXIT_SANDBOX
        );
        // 256 would wrap to 0 ("success"): a failed run never exits 0.
        assert_eq!(exit_code(&result(pb::RunStatus::RuntimeError, 256, 0)), 1);
    }
}
