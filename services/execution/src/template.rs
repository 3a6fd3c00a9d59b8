//! GenerateCode: renders a minijinja template against a JSON context in a locked-down
//! environment: strict undefined, no loader (no includes from the host), no `debug()`, a
//! recursion limit, an instruction budget (fuel) and an output cap.

use std::io::Write;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use crate::error::ExecError;

pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
pub const RECURSION_LIMIT: usize = 64;
/// Instruction budget: about 100 000 iterations of a small loop body.
pub const FUEL: u64 = 1_000_000;

/// A writer that refuses to grow past the output cap.
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

/// Renders `template` with `context_json` (a JSON object).
pub fn render(template: &str, context_json: &str) -> Result<String, ExecError> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(ExecError::invalid("template is larger than 256 KiB"));
    }
    if context_json.len() > MAX_CONTEXT_BYTES {
        return Err(ExecError::invalid("context_json is larger than 1 MiB"));
    }
    let context: serde_json::Value = if context_json.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(context_json)
            .map_err(|e| ExecError::invalid(format!("context_json is not valid JSON: {e}")))?
    };
    if !context.is_object() {
        return Err(ExecError::invalid("context_json must be a JSON object"));
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Generated source files end with a newline; keep it.
    env.set_keep_trailing_newline(true);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.remove_global("debug");
    let describe = |e: minijinja::Error| {
        let (line, column) = position(template, &e);
        let what = match e.kind() {
            ErrorKind::OutOfFuel => format!("the template exceeded its budget of {FUEL} steps"),
            ErrorKind::WriteFailure => format!("the output exceeds {MAX_OUTPUT_BYTES} bytes"),
            _ => match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            },
        };
        ExecError::invalid(format!(
            "template error at line {line}, column {column}: {what}"
        ))
    };
    let tmpl = env.template_from_str(template).map_err(describe)?;
    let mut out = Capped(Vec::new());
    tmpl.render_captured_to(context, &mut out)
        .map_err(describe)?;
    String::from_utf8(out.0).map_err(|_| ExecError::Internal("template output is not UTF-8".into()))
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
        let err = render("ok\n  {{ missing.attr }}", "{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("column"), "{err}");
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
        assert!(err.unwrap_err().to_string().contains("budget"));
        let err = render(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{}",
        );
        assert!(err.is_err());
        let err = render("{{ 'x' * 2000000 }}", "{}");
        assert!(err.is_err());
        assert!(
            render("{{ debug() }}", "{}").is_err(),
            "no debug() of the environment"
        );
        assert!(
            render("{% include 'etc/passwd' %}", "{}").is_err(),
            "no loader"
        );
        assert!(render("x", "[1]").is_err(), "context must be an object");
    }
}
