//! RunTests: pytest inside the sandbox on the given module and test files. Per-test results
//! come from pytest's JUnit XML report, written to descriptor 3 (a capped side channel), so
//! nothing has to be read back from the sandbox's file system.

use std::time::Duration;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::ExecError;
use crate::model::{Language, RunStatus, TestCaseResult, TestOutcome, TestReport, TestsInput};
use crate::runtime::{self, SITE_PACKAGES_INSIDE};
use crate::service::{ExecutionService, to_result};
use crate::sink::Activity;
use umcp_sandbox::process::{ExtraBind, SandboxFile};

const MAX_MESSAGE: usize = 8 * 1024;
const MAX_NAME: usize = 1024;
const MAX_REPORT_BYTES: usize = 4 << 20;
const MAX_CASES: usize = 10_000;

impl ExecutionService {
    pub async fn run_tests(&self, user: &str, input: TestsInput) -> Result<TestReport, ExecError> {
        crate::validate::tests(&input)?;
        let python = self.interpreter(Language::Python)?.to_owned();
        let pytest = self.runtimes.pytest.clone().ok_or_else(|| {
            ExecError::FailedPrecondition(format!(
                "pytest is not installed on this server (expected in {}/lib/python3*/site-packages)",
                self.config.tools_venv.display()
            ))
        })?;
        let limits = crate::validate::limits(
            &input.limits,
            &self.config.default_limits,
            &self.config.max_limits,
        )?;
        let files: Vec<SandboxFile> = input
            .modules
            .iter()
            .chain(&input.tests)
            .map(|f| SandboxFile {
                path: f.path.clone(),
                contents: f.content.clone().into_bytes(),
            })
            .collect();
        let mut args: Vec<String> = [
            "-B",
            "-s",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml=/dev/fd/3",
            "-o",
            "junit_family=xunit1",
            "--rootdir=/box",
            "--",
        ]
        .map(String::from)
        .to_vec();
        args.extend(input.tests.iter().map(|t| t.path.clone()));
        let mut spec = runtime::spec(&python, args, files, limits);
        spec.workdir = "/box".into();
        spec.capture_fd3 = true;
        spec.env
            .push(("PYTHONPATH".into(), SITE_PACKAGES_INSIDE.into()));
        spec.binds.push(ExtraBind {
            host: pytest.host_path.clone(),
            inside: SITE_PACKAGES_INSIDE.into(),
        });

        let outcome = self.run_admitted(user, spec, None).await?;
        let junit = outcome
            .as_ref()
            .map(|o| o.side_channel.clone())
            .unwrap_or_default();
        let result = to_result(outcome);
        let (tests, report_problem) = if junit.is_empty() {
            let why = "pytest wrote no JUnit report (the run ended early, or the tests closed or \
                       replaced descriptor 3)";
            (Vec::new(), why.to_owned())
        } else {
            parse_junit(&junit)
        };
        let count = |o: TestOutcome| tests.iter().filter(|t| t.outcome == o).count() as u32;
        let report = TestReport {
            id: result.id,
            // pytest exits 1 when tests fail: a runtime error of the test run, not of the service.
            status: result.status,
            passed: count(TestOutcome::Passed),
            failed: count(TestOutcome::Failed),
            errors: count(TestOutcome::Error),
            skipped: count(TestOutcome::Skipped),
            tests,
            wall_time: result.wall_time,
            stdout: result.stdout,
            stderr: result.stderr,
            report_problem,
        };
        debug_assert!(report.status != RunStatus::Ok || report.failed + report.errors == 0);
        self.report(
            user,
            Activity::Tests {
                report: report.clone(),
            },
        );
        Ok(report)
    }
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

fn truncate(s: String) -> String {
    truncate_to(s, MAX_MESSAGE)
}

fn truncate_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Test id `file::Class::name` from pytest's xunit1 attributes.
fn test_name(classname: &str, file: Option<&str>, name: &str) -> String {
    let Some(file) = file else {
        return format!("{classname}::{name}");
    };
    let module = file.trim_end_matches(".py").replace('/', ".");
    match classname
        .strip_prefix(&module)
        .and_then(|r| r.strip_prefix('.'))
    {
        Some(class) if !class.is_empty() => format!("{file}::{}::{name}", class.replace('.', "::")),
        _ => format!("{file}::{name}"),
    }
}

/// Reads the test cases of a JUnit report, bounded. Never fails: what could not be read is
/// returned as the report problem, with the cases read before it.
pub(crate) fn parse_junit(xml: &[u8]) -> (Vec<TestCaseResult>, String) {
    let mut cases = Vec::new();
    if xml.len() > MAX_REPORT_BYTES {
        return (
            cases,
            format!("the JUnit report is larger than {MAX_REPORT_BYTES} bytes"),
        );
    }
    let Ok(text) = std::str::from_utf8(xml) else {
        return (cases, "the JUnit report is not UTF-8".into());
    };
    let problem = read_cases(text, &mut cases).err().unwrap_or_default();
    (cases, problem)
}

fn read_cases(text: &str, cases: &mut Vec<TestCaseResult>) -> Result<(), String> {
    let mut reader = Reader::from_str(text);
    let mut current: Option<TestCaseResult> = None;
    let mut in_detail = false;
    loop {
        if cases.len() >= MAX_CASES {
            return Err(format!(
                "the JUnit report has more than {MAX_CASES} test cases; the rest were not read"
            ));
        }
        let event = reader
            .read_event()
            .map_err(|e| format!("the JUnit report is not well-formed XML: {e}"))?;
        match event {
            Event::Empty(e) if e.name().as_ref() == b"testcase" => cases.push(case_from(&e)),
            Event::Start(e) if e.name().as_ref() == b"testcase" => current = Some(case_from(&e)),
            Event::Start(e) | Event::Empty(e)
                if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") =>
            {
                if let Some(case) = current.as_mut() {
                    let outcome = match e.name().as_ref() {
                        b"failure" => TestOutcome::Failed,
                        b"error" => TestOutcome::Error,
                        _ => TestOutcome::Skipped,
                    };
                    // An error (e.g. in teardown) outranks a failure or a skip.
                    if case.outcome != TestOutcome::Error {
                        case.outcome = outcome;
                    }
                    case.message = truncate(attr(&e, b"message").unwrap_or_default());
                    in_detail = true;
                }
            }
            Event::Text(t) if in_detail => {
                if let (Some(case), Ok(body)) = (current.as_mut(), t.unescape()) {
                    let body = body.trim();
                    if !body.is_empty() {
                        let joined = if case.message.is_empty() {
                            body.to_owned()
                        } else {
                            format!("{}\n{body}", case.message)
                        };
                        case.message = truncate(joined);
                    }
                }
            }
            Event::End(e) if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") => {
                in_detail = false
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some(case) = current.take() {
                    cases.push(case);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(())
}

fn case_from(e: &BytesStart<'_>) -> TestCaseResult {
    let classname = attr(e, b"classname").unwrap_or_default();
    let name = attr(e, b"name").unwrap_or_default();
    let file = attr(e, b"file");
    let secs: f64 = attr(e, b"time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
    TestCaseResult {
        name: truncate_to(test_name(&classname, file.as_deref(), &name), MAX_NAME),
        outcome: TestOutcome::Passed,
        duration: Duration::from_secs_f64(if secs.is_finite() { secs.max(0.0) } else { 0.0 }),
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_xunit1_report_is_parsed() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.1">
<testcase classname="test_a" name="test_ok" file="test_a.py" line="1" time="0.001" />
<testcase classname="pkg.test_b.TestX" name="test_bad" file="pkg/test_b.py" line="5" time="0.5"><failure message="assert 1 == 2">def test_bad():
&gt;   assert 1 == 2</failure></testcase>
<testcase classname="test_a" name="test_skip" file="test_a.py" line="9" time="0"><skipped type="pytest.skip" message="no">skip</skipped></testcase>
</testsuite></testsuites>"#;
        let (cases, problem) = parse_junit(xml);
        assert_eq!(problem, "");
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].name, "test_a.py::test_ok");
        assert_eq!(cases[0].outcome, TestOutcome::Passed);
        assert_eq!(cases[1].name, "pkg/test_b.py::TestX::test_bad");
        assert_eq!(cases[1].outcome, TestOutcome::Failed);
        assert!(cases[1].message.contains("assert 1 == 2") && cases[1].message.contains("> "));
        assert_eq!(cases[2].outcome, TestOutcome::Skipped);
    }

    #[test]
    fn unreadable_reports_are_a_problem_not_an_error() {
        let (cases, problem) = parse_junit(b"\xff\xfe");
        assert!(cases.is_empty() && problem.contains("UTF-8"), "{problem}");
        let (cases, problem) =
            parse_junit(b"<testsuite><testcase name=\"a\" classname=\"t\"/></oops>");
        assert_eq!(cases.len(), 1);
        assert!(problem.contains("well-formed"), "{problem}");
        let many = "<testcase name=\"a\" classname=\"t\"/>".repeat(MAX_CASES + 5);
        let (cases, problem) = parse_junit(format!("<s>{many}</s>").as_bytes());
        assert_eq!(cases.len(), MAX_CASES);
        assert!(problem.contains("10000"), "{problem}");
    }
}
