//! Lint: static analysis of untrusted code. Every parser and linter runs inside the sandbox.
//!
//! * Python: an AST summary (functions, classes, imports, per-function complexity) from a small
//!   script run by the sandboxed interpreter, plus ruff diagnostics when ruff is installed.
//! * JavaScript: `node --check`.
//! * Bash: `bash -n`, plus shellcheck when installed.

use std::path::Path;

use serde::Deserialize;

use crate::error::ExecError;
use crate::model::{Diagnostic, FunctionComplexity, Language, LintReport, PythonSummary, Severity};
use crate::runtime::{self, RUFF_INSIDE, SHELLCHECK_INSIDE};
use crate::service::{ExecutionService, new_id, sha256_hex};
use crate::sink::Activity;
use umcp_sandbox::process::{ExtraBind, RunOutput, RunSpec, SandboxFile, Termination};

const PY_SUMMARY: &str = include_str!("scripts/py_summary.py");

#[derive(Deserialize, Default)]
struct SummaryOut {
    #[serde(default)]
    syntax_error: Option<SyntaxErr>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    imports: Vec<String>,
    #[serde(default)]
    complexity: Vec<ComplexityOut>,
}

#[derive(Deserialize)]
struct SyntaxErr {
    line: u32,
    column: u32,
    message: String,
}

#[derive(Deserialize)]
struct ComplexityOut {
    name: String,
    complexity: u32,
    line: u32,
    is_async: bool,
}

#[derive(Deserialize)]
struct RuffItem {
    code: Option<String>,
    message: String,
    location: RuffLocation,
}

#[derive(Deserialize)]
struct RuffLocation {
    row: u32,
    column: u32,
}

#[derive(Deserialize)]
struct ShellcheckItem {
    line: u32,
    column: u32,
    level: String,
    code: u32,
    message: String,
}

fn file(path: &str, code: &str) -> Vec<SandboxFile> {
    vec![SandboxFile {
        path: path.into(),
        contents: code.as_bytes().to_vec(),
    }]
}

impl ExecutionService {
    async fn lint_run(&self, user: &str, spec: RunSpec) -> Result<RunOutput, ExecError> {
        match self.run_admitted(user, spec, None).await? {
            Ok(out) => match out.termination {
                Termination::Ok | Termination::RuntimeError => Ok(out),
                other => Err(ExecError::InvalidArgument(format!(
                    "the linter stopped with {other:?}; the code is too large or too complex to analyse"
                ))),
            },
            Err(e) => {
                tracing::error!(error = %e, "lint sandbox failed");
                Err(ExecError::Unavailable(
                    "the sandbox could not be set up; the code was not linted".into(),
                ))
            }
        }
    }

    /// Lints `code` with every linter installed for `language`, each run in the sandbox; a
    /// linter whose output cannot be read adds a diagnostic instead of failing the call.
    pub async fn lint(
        &self,
        user: &str,
        language: Language,
        code: &str,
    ) -> Result<LintReport, ExecError> {
        crate::validate::code(code)?;
        let interpreter = self.interpreter(language)?.to_owned();
        let mut report = LintReport {
            id: new_id(),
            code_sha256: sha256_hex(code.as_bytes()),
            diagnostics: Vec::new(),
            linters_run: Vec::new(),
            python: None,
            diagnostics_truncated: false,
        };
        let lint = Lint {
            user,
            interpreter: &interpreter,
            code,
            version: self.language_version(language),
        };
        match language {
            Language::Python => {
                self.python_summary(&lint, &mut report).await?;
                self.ruff(&lint, &mut report).await?;
            }
            Language::JavaScript => self.node_check(&lint, &mut report).await?,
            Language::Bash => {
                self.bash_n(&lint, &mut report).await?;
                self.shellcheck(&lint, &mut report).await?;
            }
        }
        bound(&mut report);
        self.report(
            user,
            Activity::Lint {
                language,
                report: report.clone(),
            },
        );
        Ok(report)
    }

    /// Version of the installed interpreter of `language` (for `linters_run`).
    fn language_version(&self, language: Language) -> String {
        self.runtimes
            .languages
            .iter()
            .find(|i| i.language == language)
            .map(|i| i.version.clone())
            .unwrap_or_default()
    }

    /// The AST summary script: functions, classes, imports and complexity, or the syntax error.
    /// An unreadable summary leaves `python` unset and adds a diagnostic.
    async fn python_summary(
        &self,
        lint: &Lint<'_>,
        report: &mut LintReport,
    ) -> Result<(), ExecError> {
        let mut files = file("code.py", lint.code);
        files.push(SandboxFile {
            path: "summary.py".into(),
            contents: PY_SUMMARY.as_bytes().to_vec(),
        });
        let spec = runtime::spec(
            lint.interpreter,
            vec!["-I".into(), "-B".into(), "/box/summary.py".into()],
            files,
            runtime::tool_limits(),
        );
        let out = self.lint_run(lint.user, spec).await?;
        let parsed = match serde_json::from_slice::<SummaryOut>(&out.stdout) {
            Ok(p) => Some(p),
            Err(e) => {
                report.diagnostics.push(unreadable("python-ast", &e));
                None
            }
        };
        report
            .linters_run
            .push(format!("python-ast ({})", lint.version));
        let Some(parsed) = parsed else {
            // Unreadable output is not a syntax error: nothing more to report.
            return Ok(());
        };
        match parsed.syntax_error {
            Some(se) => report.diagnostics.push(Diagnostic {
                line: se.line.max(1),
                column: se.column.max(1),
                code: "syntax-error".into(),
                message: se.message,
                severity: Severity::Error,
                source: "python-ast".into(),
            }),
            None => report.python = Some(summary(parsed)),
        }
        Ok(())
    }

    /// ruff, when installed: the code on stdin, JSON diagnostics on stdout.
    async fn ruff(&self, lint: &Lint<'_>, report: &mut LintReport) -> Result<(), ExecError> {
        let Some(ruff) = self.runtimes.ruff.clone() else {
            return Ok(());
        };
        let args = [
            "check",
            "--output-format=json",
            "--no-cache",
            "--isolated",
            "--stdin-filename=main.py",
            "-",
        ];
        let spec = tool_spec(RUFF_INSIDE, &args, &ruff.host_path, lint.code);
        let out = self.lint_run(lint.user, spec).await?;
        match parse_ruff(&out.stdout) {
            Ok(d) => report.diagnostics.extend(d),
            Err(e) => report.diagnostics.push(unreadable("ruff", &e)),
        }
        report.linters_run.push(ruff.version);
        Ok(())
    }

    /// `node --check`: one syntax error at most.
    async fn node_check(&self, lint: &Lint<'_>, report: &mut LintReport) -> Result<(), ExecError> {
        let spec = runtime::spec(
            lint.interpreter,
            vec!["--check".into(), "/box/main.js".into()],
            file("main.js", lint.code),
            runtime::tool_limits(),
        );
        let out = self.lint_run(lint.user, spec).await?;
        if out.exit_code != Some(0) {
            report
                .diagnostics
                .push(parse_node_check(&String::from_utf8_lossy(&out.stderr)));
        }
        report
            .linters_run
            .push(format!("node --check ({})", lint.version));
        Ok(())
    }

    /// `bash -n`: the syntax errors bash itself finds.
    async fn bash_n(&self, lint: &Lint<'_>, report: &mut LintReport) -> Result<(), ExecError> {
        let spec = runtime::spec(
            lint.interpreter,
            vec!["-n".into(), "/box/main.sh".into()],
            file("main.sh", lint.code),
            runtime::tool_limits(),
        );
        let out = self.lint_run(lint.user, spec).await?;
        report
            .diagnostics
            .extend(parse_bash_n(&String::from_utf8_lossy(&out.stderr)));
        report
            .linters_run
            .push(format!("bash -n ({})", lint.version));
        Ok(())
    }

    /// shellcheck, when installed: the script on stdin, JSON diagnostics on stdout.
    async fn shellcheck(&self, lint: &Lint<'_>, report: &mut LintReport) -> Result<(), ExecError> {
        let Some(sc) = self.runtimes.shellcheck.clone() else {
            return Ok(());
        };
        let args = ["-f", "json", "-s", "bash", "-"];
        let spec = tool_spec(SHELLCHECK_INSIDE, &args, &sc.host_path, lint.code);
        let out = self.lint_run(lint.user, spec).await?;
        match parse_shellcheck(&out.stdout) {
            Ok(d) => report.diagnostics.extend(d),
            Err(e) => report.diagnostics.push(unreadable("shellcheck", &e)),
        }
        report.linters_run.push(sc.version);
        Ok(())
    }
}

/// What every linter of one call needs.
struct Lint<'a> {
    user: &'a str,
    interpreter: &'a str,
    code: &'a str,
    /// Version of the language's interpreter, for `linters_run`.
    version: String,
}

/// A tool bound read-only at `inside`, reading the code on stdin.
fn tool_spec(inside: &str, args: &[&str], host: &Path, code: &str) -> RunSpec {
    let mut spec = runtime::spec(
        inside,
        args.iter().map(|a| (*a).to_owned()).collect(),
        Vec::new(),
        runtime::tool_limits(),
    );
    spec.binds.push(ExtraBind {
        host: host.to_path_buf(),
        inside: inside.into(),
    });
    spec.stdin = code.as_bytes().to_vec();
    spec
}

fn summary(parsed: SummaryOut) -> PythonSummary {
    PythonSummary {
        functions: parsed.functions,
        classes: parsed.classes,
        imports: parsed.imports,
        complexity: parsed
            .complexity
            .into_iter()
            .map(|c| FunctionComplexity {
                name: c.name,
                complexity: c.complexity,
                line: c.line,
                is_async: c.is_async,
            })
            .collect(),
    }
}

fn ruff_severity(code: Option<&str>) -> Severity {
    match code {
        // Syntax errors (no code) and pyflakes' "will fail at run time" family are errors.
        None => Severity::Error,
        Some(c)
            if c.starts_with("E9")
                || c.starts_with("F63")
                || c.starts_with("F7")
                || c.starts_with("F82") =>
        {
            Severity::Error
        }
        Some(_) => Severity::Warning,
    }
}

const MAX_DIAGNOSTICS: usize = 1000;
const MAX_DIAGNOSTIC_MESSAGE: usize = 1024;
const MAX_DIAGNOSTIC_CODE: usize = 64;

fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    true
}

/// Applies the diagnostic caps, flagging the report when anything was dropped or shortened.
fn bound(report: &mut LintReport) {
    if report.diagnostics.len() > MAX_DIAGNOSTICS {
        report.diagnostics.truncate(MAX_DIAGNOSTICS);
        report.diagnostics_truncated = true;
    }
    for d in &mut report.diagnostics {
        let shortened =
            cut(&mut d.message, MAX_DIAGNOSTIC_MESSAGE) | cut(&mut d.code, MAX_DIAGNOSTIC_CODE);
        report.diagnostics_truncated |= shortened;
    }
}

/// A linter's output that could not be read is reported as a diagnostic, not a failed call.
fn unreadable(source: &str, e: &dyn std::fmt::Display) -> Diagnostic {
    let mut message = format!("the output of {source} could not be read: {e}");
    cut(&mut message, MAX_DIAGNOSTIC_MESSAGE);
    Diagnostic {
        line: 1,
        column: 1,
        code: "linter-output".into(),
        message,
        severity: Severity::Info,
        source: source.into(),
    }
}

fn parse_ruff(stdout: &[u8]) -> Result<Vec<Diagnostic>, serde_json::Error> {
    let items: Vec<RuffItem> = serde_json::from_slice(stdout)?;
    Ok(items
        .into_iter()
        .map(|i| Diagnostic {
            line: i.location.row,
            column: i.location.column,
            severity: ruff_severity(i.code.as_deref()),
            code: i.code.unwrap_or_else(|| "syntax-error".into()),
            message: i.message,
            source: "ruff".into(),
        })
        .collect())
}

fn parse_shellcheck(stdout: &[u8]) -> Result<Vec<Diagnostic>, serde_json::Error> {
    let items: Vec<ShellcheckItem> = serde_json::from_slice(stdout)?;
    Ok(items
        .into_iter()
        .map(|i| Diagnostic {
            line: i.line,
            column: i.column,
            code: format!("SC{}", i.code),
            message: i.message,
            severity: match i.level.as_str() {
                "error" => Severity::Error,
                "warning" => Severity::Warning,
                _ => Severity::Info,
            },
            source: "shellcheck".into(),
        })
        .collect())
}

/// `node --check` prints `file:LINE`, the source line, a caret line, a blank, `SyntaxError: …`.
fn parse_node_check(stderr: &str) -> Diagnostic {
    let lines: Vec<&str> = stderr.lines().collect();
    let line = lines
        .first()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let column = lines
        .iter()
        .find(|l| l.trim_start().starts_with('^') && l.trim().chars().all(|c| c == '^'))
        .and_then(|l| l.find('^'))
        .map_or(1, |c| c as u32 + 1);
    let message = lines
        .iter()
        .find(|l| l.contains("Error:"))
        .map_or_else(|| stderr.trim().to_owned(), |l| l.trim().to_owned());
    Diagnostic {
        line,
        column,
        code: "syntax-error".into(),
        message,
        severity: Severity::Error,
        source: "node --check".into(),
    }
}

/// `bash -n` prints `/box/main.sh: line N: message` per problem.
fn parse_bash_n(stderr: &str) -> Vec<Diagnostic> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(": line ")?.1;
            let (n, msg) = rest.split_once(": ")?;
            Some(Diagnostic {
                line: n.trim().parse().ok()?,
                column: 1,
                code: "syntax-error".into(),
                message: msg.trim().to_owned(),
                severity: Severity::Error,
                source: "bash -n".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_check_output_is_parsed() {
        let err =
            "/box/main.js:2\nlet x = ;\n        ^\n\nSyntaxError: Unexpected token ';'\n    at ...";
        let d = parse_node_check(err);
        assert_eq!((d.line, d.column), (2, 9));
        assert_eq!(d.message, "SyntaxError: Unexpected token ';'");
    }

    #[test]
    fn bash_n_output_is_parsed() {
        let d = parse_bash_n("/box/main.sh: line 3: syntax error near unexpected token `fi'\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 3);
        assert!(d[0].message.contains("unexpected token"));
    }

    #[test]
    fn ruff_and_shellcheck_json_are_mapped() {
        let ruff = br#"[{"code":"F401","message":"`os` imported but unused","location":{"row":1,"column":8}},
                        {"code":null,"message":"SyntaxError: x","location":{"row":2,"column":1}}]"#;
        let d = parse_ruff(ruff).unwrap();
        assert_eq!(
            (d[0].line, d[0].column, d[0].severity),
            (1, 8, Severity::Warning)
        );
        assert_eq!(
            (d[1].code.as_str(), d[1].severity),
            ("syntax-error", Severity::Error)
        );
        let sc = br#"[{"file":"-","line":1,"endLine":1,"column":6,"endColumn":8,"level":"info","code":2086,"message":"Double quote","fix":null}]"#;
        let d = parse_shellcheck(sc).unwrap();
        assert_eq!(
            (d[0].code.as_str(), d[0].severity),
            ("SC2086", Severity::Info)
        );
    }

    #[test]
    fn diagnostics_are_bounded_and_unreadable_output_is_a_diagnostic() {
        assert!(parse_ruff(b"[{not json").is_err());
        let d = unreadable("ruff", &"eof");
        assert_eq!(d.code, "linter-output");
        let mut report = LintReport {
            id: String::new(),
            code_sha256: String::new(),
            diagnostics: vec![d; MAX_DIAGNOSTICS + 3],
            linters_run: Vec::new(),
            python: None,
            diagnostics_truncated: false,
        };
        report.diagnostics[0].message = "é".repeat(MAX_DIAGNOSTIC_MESSAGE);
        bound(&mut report);
        assert!(report.diagnostics_truncated);
        assert_eq!(report.diagnostics.len(), MAX_DIAGNOSTICS);
        assert!(report.diagnostics[0].message.len() <= MAX_DIAGNOSTIC_MESSAGE);
    }
}
