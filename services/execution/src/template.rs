//! GenerateCode's renderer core: renders a minijinja template against a JSON context in a
//! locked-down environment: strict undefined, no loader (no includes from the host), no
//! `debug()`, a recursion limit, an instruction budget (fuel) and an output cap enforced while
//! writing. It runs only inside the sandbox (see [`crate::render`]); fuel cannot see a single
//! expensive step, so the sandbox's memory, CPU and wall limits are the real bound.

use std::io::Write;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
pub const RECURSION_LIMIT: usize = 64;
/// Instruction budget: about 100 000 iterations of a small loop body.
pub const FUEL: u64 = 1_000_000;

/// Why a render failed, as the renderer reports it to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The context is not a JSON object.
    Context,
    /// Syntax, undefined value, type error: the template is wrong.
    Template,
    /// The instruction budget ran out.
    Fuel,
    /// The output reached its cap.
    Output,
}

/// A structured render error (line and column are 1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderFailure {
    pub kind: FailureKind,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A writer that errors once the output would pass `cap` bytes.
#[derive(Debug)]
pub struct Capped<W> {
    inner: W,
    written: usize,
    cap: usize,
}

impl<W: Write> Capped<W> {
    pub fn new(inner: W, cap: usize) -> Self {
        Self {
            inner,
            written: 0,
            cap,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() > self.cap {
            return Err(std::io::Error::other("output limit"));
        }
        self.inner.write_all(buf)?;
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn position(source: &str, err: &minijinja::Error) -> (usize, usize) {
    let line = err.line().unwrap_or(1);
    let column = err
        .range()
        .and_then(|r| source.get(..r.start))
        .map_or(1, |before| {
            before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1
        });
    (line, column)
}

fn failure(template: &str, e: &minijinja::Error, cap: usize) -> RenderFailure {
    let (line, column) = position(template, e);
    let (kind, message) = match e.kind() {
        ErrorKind::OutOfFuel => (
            FailureKind::Fuel,
            format!("the template exceeded its budget of {FUEL} steps (fuel)"),
        ),
        ErrorKind::WriteFailure => (
            FailureKind::Output,
            format!("the output exceeds the output cap of {cap} bytes"),
        ),
        _ => (
            FailureKind::Template,
            match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            },
        ),
    };
    RenderFailure {
        kind,
        line,
        column,
        message,
    }
}

/// Renders `template` with `context_json` (a JSON object) into `out`, at most `cap` bytes.
pub fn render_to(
    template: &str,
    context_json: &str,
    out: &mut impl Write,
    cap: usize,
) -> Result<(), RenderFailure> {
    let context_error = |message: String| RenderFailure {
        kind: FailureKind::Context,
        line: 0,
        column: 0,
        message,
    };
    let context: serde_json::Value = if context_json.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(context_json)
            .map_err(|e| context_error(format!("context_json is not valid JSON: {e}")))?
    };
    if !context.is_object() {
        return Err(context_error("context_json must be a JSON object".into()));
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Generated source files end with a newline; keep it.
    env.set_keep_trailing_newline(true);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.remove_global("debug");
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| failure(template, &e, cap))?;
    let mut capped = Capped::new(out, cap);
    tmpl.render_captured_to(context, &mut capped)
        .map_err(|e| failure(template, &e, cap))?;
    Ok(())
}

/// [`render_to`] into memory with the default cap.
pub fn render(template: &str, context_json: &str) -> Result<String, RenderFailure> {
    let mut out = Vec::new();
    render_to(template, context_json, &mut out, MAX_OUTPUT_BYTES)?;
    // minijinja writes only `str` pieces.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl std::fmt::Display for RenderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Template => write!(
                f,
                "template error at line {}, column {}: {}",
                self.line, self.column, self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_context() {
        let out = render(
            "def {{ name }}():\n    return {{ value }}\n",
            r#"{"name":"f","value":3}"#,
        )
        .unwrap();
        assert_eq!(out, "def f():\n    return 3\n");
    }

    #[test]
    fn undefined_variables_fail_with_position() {
        let err = render("ok\n  {{ missing.attr }}", "{}").unwrap_err();
        assert_eq!(err.kind, FailureKind::Template);
        assert_eq!(err.line, 2, "{err}");
        assert!(err.to_string().contains("column"), "{err}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = render("a\nb {% if %}", "{}").unwrap_err().to_string();
        assert!(err.starts_with("template error at line 2"), "{err}");
    }

    #[test]
    fn loops_recursion_and_output_are_bounded() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100) %}x{% endfor %}{% endfor %}",
            "{}",
        );
        assert_eq!(err.unwrap_err().kind, FailureKind::Fuel);
        let err = render(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{}",
        );
        assert!(err.is_err());
        let err = render("{{ 'x' * 2000000 }}", "{}");
        assert_eq!(err.unwrap_err().kind, FailureKind::Output);
        assert!(
            render("{{ debug() }}", "{}").is_err(),
            "no debug() of the environment"
        );
        assert!(
            render("{% include 'etc/passwd' %}", "{}").is_err(),
            "no loader"
        );
        assert_eq!(render("x", "[1]").unwrap_err().kind, FailureKind::Context);
    }
}
