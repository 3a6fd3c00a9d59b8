//! Lint: static analysis of untrusted code. Every parser and linter runs inside the sandbox.
//!
//! * Python: an AST summary (functions, classes, imports, per-function complexity) from a small
//!   script run by the sandboxed interpreter, plus ruff diagnostics when ruff is installed.
//! * JavaScript: `node --check`.
//! * Bash: `bash -n`, plus shellcheck when installed.

use serde::Deserialize;

use crate::error::ExecError;
use crate::model::{Diagnostic, FunctionComplexity, Language, LintReport, PythonSummary, Severity};
use crate::runtime::{self, RUFF_INSIDE, SHELLCHECK_INSIDE};
use crate::sandbox::{ExtraBind, RunOutput, RunSpec, SandboxFile, Termination};
use crate::service::{ExecutionService, new_id, sha256_hex};
use crate::sink::Activity;

const PY_SUMMARY: &str = include_str!("scripts/py_summary.py");

#[derive(Deserialize)]
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
            Err(e) => Err(ExecError::Internal(format!("lint sandbox: {e}"))),
        }
    }

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
        };
        let version = |l: Language| {
            self.runtimes
                .languages
                .iter()
                .find(|i| i.language == l)
                .map(|i| i.version.clone())
                .unwrap_or_default()
        };
        match language {
            Language::Python => {
                let mut files = file("code.py", code);
                files.push(SandboxFile {
                    path: "summary.py".into(),
                    contents: PY_SUMMARY.as_bytes().to_vec(),
                });
                let spec = runtime::spec(
                    &interpreter,
                    vec!["-I".into(), "-B".into(), "/box/summary.py".into()],
                    files,
                    runtime::tool_limits(),
                );
                let out = self.lint_run(user, spec).await?;
                let parsed: SummaryOut = serde_json::from_slice(&out.stdout).map_err(|e| {
                    ExecError::Internal(format!(
                        "python summary output: {e}; stderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ))
                })?;
                report
                    .linters_run
                    .push(format!("python-ast ({})", version(language)));
                match parsed.syntax_error {
                    Some(se) => report.diagnostics.push(Diagnostic {
                        line: se.line.max(1),
                        column: se.column.max(1),
                        code: "syntax-error".into(),
                        message: se.message,
                        severity: Severity::Error,
                        source: "python-ast".into(),
                    }),
                    None => {
                        report.python = Some(PythonSummary {
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
                        })
                    }
                }
                if let Some(ruff) = self.runtimes.ruff.clone() {
                    let mut spec = runtime::spec(
                        RUFF_INSIDE,
                        [
                            "check",
                            "--output-format=json",
                            "--no-cache",
                            "--isolated",
                            "--stdin-filename=main.py",
                            "-",
                        ]
                        .map(String::from)
                        .to_vec(),
                        Vec::new(),
                        runtime::tool_limits(),
                    );
                    spec.binds.push(ExtraBind {
                        host: ruff.host_path.clone(),
                        inside: RUFF_INSIDE.into(),
                    });
                    spec.stdin = code.as_bytes().to_vec();
                    let out = self.lint_run(user, spec).await?;
                    report.diagnostics.extend(parse_ruff(&out.stdout)?);
                    report.linters_run.push(ruff.version);
                }
            }
            Language::JavaScript => {
                let spec = runtime::spec(
                    &interpreter,
                    vec!["--check".into(), "/box/main.js".into()],
                    file("main.js", code),
                    runtime::tool_limits(),
                );
                let out = self.lint_run(user, spec).await?;
                if out.exit_code != Some(0) {
                    report
                        .diagnostics
                        .push(parse_node_check(&String::from_utf8_lossy(&out.stderr)));
                }
                report
                    .linters_run
                    .push(format!("node --check ({})", version(language)));
            }
            Language::Bash => {
                let spec = runtime::spec(
                    &interpreter,
                    vec!["-n".into(), "/box/main.sh".into()],
                    file("main.sh", code),
                    runtime::tool_limits(),
                );
                let out = self.lint_run(user, spec).await?;
                report
                    .diagnostics
                    .extend(parse_bash_n(&String::from_utf8_lossy(&out.stderr)));
                report
                    .linters_run
                    .push(format!("bash -n ({})", version(language)));
                if let Some(sc) = self.runtimes.shellcheck.clone() {
                    let mut spec = runtime::spec(
                        SHELLCHECK_INSIDE,
                        ["-f", "json", "-s", "bash", "-"].map(String::from).to_vec(),
                        Vec::new(),
                        runtime::tool_limits(),
                    );
                    spec.binds.push(ExtraBind {
                        host: sc.host_path.clone(),
                        inside: SHELLCHECK_INSIDE.into(),
                    });
                    spec.stdin = code.as_bytes().to_vec();
                    let out = self.lint_run(user, spec).await?;
                    report.diagnostics.extend(parse_shellcheck(&out.stdout)?);
                    report.linters_run.push(sc.version);
                }
            }
        }
        self.report(
            user,
            Activity::Lint {
                language,
                report: report.clone(),
            },
        );
        Ok(report)
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

fn parse_ruff(stdout: &[u8]) -> Result<Vec<Diagnostic>, ExecError> {
    let items: Vec<RuffItem> = serde_json::from_slice(stdout)
        .map_err(|e| ExecError::Internal(format!("ruff output: {e}")))?;
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

fn parse_shellcheck(stdout: &[u8]) -> Result<Vec<Diagnostic>, ExecError> {
    let items: Vec<ShellcheckItem> = serde_json::from_slice(stdout)
        .map_err(|e| ExecError::Internal(format!("shellcheck output: {e}")))?;
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
}
