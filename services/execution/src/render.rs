//! Renderer mode of the execution binary (`umcp-execution --render-template [cap]`), run only
//! inside the sandbox by GenerateCode.
//!
//! Request on stdin: the template's length as 4 little-endian bytes, the template, then the
//! context JSON (a length prefix, not JSON, so nothing is escaped or re-parsed). On success the
//! output goes to stdout (capped while writing) and the exit code is 0. On a render error the
//! exit code is [`EXIT_RENDER_ERROR`] and stderr holds one JSON [`RenderFailure`].

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::template::{self, FailureKind, RenderFailure};

pub const FLAG: &str = "--render-template";
pub const EXIT_RENDER_ERROR: u8 = 2;

/// Encodes a render request for the renderer's stdin.
pub fn encode_request(template: &str, context_json: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(4 + template.len() + context_json.len());
    buf.extend_from_slice(&(template.len() as u32).to_le_bytes());
    buf.extend_from_slice(template.as_bytes());
    buf.extend_from_slice(context_json.as_bytes());
    buf
}

fn decode_request(buf: &[u8]) -> Option<(&str, &str)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let rest = buf.get(4..)?;
    let template = std::str::from_utf8(rest.get(..len)?).ok()?;
    let context = std::str::from_utf8(rest.get(len..)?).ok()?;
    Some((template, context))
}

fn report(failure: &RenderFailure) -> ExitCode {
    let json = serde_json::to_string(failure).unwrap_or_default();
    let _ = std::io::stderr().write_all(json.as_bytes());
    ExitCode::from(EXIT_RENDER_ERROR)
}

/// Entry point of renderer mode: `args` are the arguments after the flag (the output cap).
pub fn main() -> ExitCode {
    let cap = std::env::args()
        .nth(2)
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(template::MAX_OUTPUT_BYTES);
    let limit = (4 + template::MAX_TEMPLATE_BYTES + template::MAX_CONTEXT_BYTES) as u64;
    let mut input = Vec::new();
    let bad = |message: &str| RenderFailure {
        kind: FailureKind::Context,
        line: 0,
        column: 0,
        message: message.into(),
    };
    if std::io::stdin()
        .take(limit + 1)
        .read_to_end(&mut input)
        .is_err()
        || input.len() as u64 > limit
    {
        return report(&bad("the render request could not be read or is too large"));
    }
    let Some((tmpl, context)) = decode_request(&input) else {
        return report(&bad("the render request is malformed"));
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // A panic inside minijinja is caused by the template: report it as a template error.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        template::render_to(tmpl, context, &mut out, cap)
    }));
    match result {
        Ok(Ok(())) => match out.flush() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
        Ok(Err(failure)) => report(&failure),
        Err(_) => report(&RenderFailure {
            kind: FailureKind::Template,
            line: 0,
            column: 0,
            message: "the template could not be rendered (renderer failure)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let buf = encode_request("{{ a }}", r#"{"a":1}"#);
        assert_eq!(decode_request(&buf), Some(("{{ a }}", r#"{"a":1}"#)));
        assert_eq!(decode_request(&buf[..3]), None);
        let mut long = buf.clone();
        long[0] = 200;
        assert_eq!(decode_request(&long), None);
    }
}
