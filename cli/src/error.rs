//! Every way a `umcp` command fails, what it tells the user to try, and the exit code it gives.
//!
//! Exit codes (also in the README and `umcp --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the command ran and found problems: lint diagnostics, failing tests, a broken audit chain |
//! | 2 | usage: an unknown flag, a missing or malformed argument |
//! | 3 | bad local input: a missing or unreadable file, invalid JSON, an unknown language |
//! | 4 | not logged in, login expired or revoked, or the server answered `UNAUTHENTICATED` |
//! | 5 | the server answered `PERMISSION_DENIED` |
//! | 6 | the server rejected the request: `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` |
//! | 7 | the mesh is unreachable or busy: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `CANCELLED` |
//! | 8 | the server failed: `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `UNIMPLEMENTED` |
//! | 9 | a local failure: the credential store cannot be read or written, stdout cannot be written |
//!
//! `umcp exec` exits with the program's own exit code instead (128 + N when a signal N killed it,
//! 124 when it hit a limit, 125 when the sandbox could not start it).

use std::path::PathBuf;

use tonic::Code;

/// Exit code: the command ran and found problems.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: usage error (the one clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: bad local input.
pub const EXIT_INPUT: u8 = 3;
/// Exit code: authentication needed.
pub const EXIT_UNAUTHENTICATED: u8 = 4;
/// Exit code: permission denied.
pub const EXIT_DENIED: u8 = 5;
/// Exit code: the request was rejected.
pub const EXIT_REJECTED: u8 = 6;
/// Exit code: the mesh is unreachable or busy.
pub const EXIT_UNAVAILABLE: u8 = 7;
/// Exit code: the server failed.
pub const EXIT_SERVER: u8 = 8;
/// Exit code: a local failure.
pub const EXIT_LOCAL: u8 = 9;

/// A failed `umcp` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments that parse but make no sense together.
    #[error("{0}")]
    Usage(String),
    /// A file named on the command line cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadInput {
        /// The file (`-` is stdin).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Input that was read but is not what the command needs.
    #[error("{0}")]
    BadInput(String),
    /// No credentials for this endpoint.
    #[error(
        "not logged in to {endpoint}: run `umcp login` (or set UMCP_TOKEN, or pass --api-key / UMCP_API_KEY)"
    )]
    NotLoggedIn {
        /// The endpoint the command would call.
        endpoint: String,
    },
    /// The stored login can no longer be refreshed.
    #[error("your login to {endpoint} has expired or was revoked ({detail}): run `umcp login`")]
    LoginExpired {
        /// The endpoint of the login.
        endpoint: String,
        /// What the auth service or the store said.
        detail: String,
    },
    /// A gRPC call answered with a non-OK status.
    #[error("{}", describe_status(call, endpoint, status))]
    Rpc {
        /// `Service/Method`.
        call: &'static str,
        /// Where it was sent.
        endpoint: String,
        /// The answer.
        status: Box<tonic::Status>,
    },
    /// The credential store cannot be used.
    #[error("credential store {path}: {detail}")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Writing the command's output failed (other than a closed pipe).
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    /// The command ran and found problems; the findings were already printed.
    #[error("{0}")]
    Findings(String),
}

impl CliError {
    /// A closure for `map_err` on a gRPC call.
    pub fn rpc(call: &'static str, endpoint: &str) -> impl FnOnce(tonic::Status) -> Self + use<> {
        let endpoint = endpoint.to_owned();
        move |status| Self::Rpc {
            call,
            endpoint,
            status: Box::new(status),
        }
    }

    /// The process exit code for this failure (see the module docs).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::ReadInput { .. } | Self::BadInput(_) => EXIT_INPUT,
            Self::NotLoggedIn { .. } | Self::LoginExpired { .. } => EXIT_UNAUTHENTICATED,
            Self::Rpc { status, .. } => exit_code_of(status.code()),
            Self::Store { .. } | Self::Output(_) => EXIT_LOCAL,
            Self::Findings(_) => EXIT_FINDINGS,
        }
    }

    /// The gRPC status, when the failure is one.
    #[must_use]
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::Output(error)
    }
}

/// Exit code for a gRPC status code.
#[must_use]
pub fn exit_code_of(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::Unauthenticated => EXIT_UNAUTHENTICATED,
        Code::PermissionDenied => EXIT_DENIED,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Aborted => EXIT_REJECTED,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            EXIT_UNAVAILABLE
        }
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => EXIT_SERVER,
    }
}

/// `<call> failed: <what the server said>` plus what to try for this kind of failure.
fn describe_status(call: &str, endpoint: &str, status: &tonic::Status) -> String {
    let message = status.message();
    let hint = match status.code() {
        Code::Unauthenticated => {
            "the token was refused (expired, revoked or for another mesh): run `umcp login`".to_owned()
        }
        Code::PermissionDenied => {
            "your roles do not allow this: `umcp whoami` lists your permissions; an admin can change roles with `umcp users set-roles`".to_owned()
        }
        Code::Unavailable => format!(
            "is the mesh running at {endpoint}? (`make run` starts it; pick another address with --endpoint or UMCP_ENDPOINT)"
        ),
        Code::DeadlineExceeded => {
            "the call took longer than its deadline: raise --timeout / UMCP_TIMEOUT or retry".to_owned()
        }
        Code::ResourceExhausted => match retry_after(status) {
            Some(after) => format!("rate limited or queue full: retry after {after} s"),
            None => "rate limited or queue full: retry later".to_owned(),
        },
        _ => String::new(),
    };
    let code = code_name(status.code());
    let mut text = if message.is_empty() {
        format!("{call} failed: {code}")
    } else {
        format!("{call} failed: {code}: {message}")
    };
    if !hint.is_empty() {
        text.push_str("\n  hint: ");
        text.push_str(&hint);
    }
    text
}

fn retry_after(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get("retry-after")?.to_str().ok()?;
    Some(value.to_owned())
}

pub use umcp_proto::catalogue::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_names_the_endpoint_and_what_to_try() {
        let error = CliError::rpc("GraphService/Query", "http://127.0.0.1:1")(
            tonic::Status::unavailable("tcp connect error"),
        );
        let text = error.to_string();
        assert!(
            text.contains("GraphService/Query failed: UNAVAILABLE"),
            "{text}"
        );
        assert!(text.contains("http://127.0.0.1:1"), "{text}");
        assert!(text.contains("UMCP_ENDPOINT"), "{text}");
        assert_eq!(error.exit_code(), EXIT_UNAVAILABLE);
    }

    #[test]
    fn every_code_has_an_exit_code_outside_success() {
        for code in 1..=16 {
            assert_ne!(exit_code_of(Code::from_i32(code)), 0, "code {code}");
        }
    }
}
