use std::time::{Duration, SystemTime};

use super::*;
use crate::model::{Diagnostic, ExecutionResult, Language, LintReport, TestCaseResult, TestReport};

fn valid_identifier(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn execution(id: &str, stdout: Vec<u8>, stderr: Vec<u8>) -> Activity {
    Activity::Execution {
        language: Language::Python,
        code_sha256: "ab".repeat(32),
        result: ExecutionResult {
            id: id.into(),
            status: RunStatus::RuntimeError,
            exit_code: 3,
            signal: 0,
            stdout,
            stderr,
            stdout_truncated: false,
            stderr_truncated: true,
            wall_time: Duration::from_millis(1500),
            cpu_time: Duration::from_millis(20),
            peak_memory_bytes: 1 << 20,
            replayed: false,
        },
    }
}

fn job(user: &str, activity: Activity) -> Job {
    Job {
        user: user.into(),
        activity,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn lint() -> Activity {
    let d = |code: &str, severity| Diagnostic {
        line: 1,
        column: 1,
        code: code.into(),
        message: "m".into(),
        severity,
        source: "ruff".into(),
    };
    Activity::Lint {
        language: Language::Python,
        report: LintReport {
            id: "0190f3a2-7b1c-7def-8abc-0123456789ab".into(),
            code_sha256: "cd".repeat(32),
            diagnostics: vec![
                d("F401", Severity::Warning),
                d("F401", Severity::Warning),
                d("E999", Severity::Error),
            ],
            linters_run: vec!["ruff 0.6".into()],
            python: None,
            diagnostics_truncated: false,
        },
    }
}

fn tests_activity() -> Activity {
    let case = |name: &str, outcome| TestCaseResult {
        name: name.into(),
        outcome,
        duration: Duration::from_millis(3),
        message: String::new(),
    };
    Activity::Tests {
        report: TestReport {
            id: "t-1".into(),
            status: RunStatus::RuntimeError,
            tests: vec![
                case("test_ok", TestOutcome::Passed),
                case("test_bad", TestOutcome::Failed),
            ],
            passed: 1,
            failed: 1,
            errors: 0,
            skipped: 0,
            wall_time: Duration::from_millis(900),
            stdout: b"collected 2 items".to_vec(),
            stderr: Vec::new(),
            report_problem: String::new(),
        },
    }
}

#[test]
fn keys_are_valid_graph_identifiers_and_distinct() {
    let uuid = "0190f3a2-7b1c-7def-8abc-0123456789ab";
    let run = result_key(&execution(uuid, vec![], vec![]));
    assert_eq!(run, "run_0190f3a27b1c7def8abc0123456789ab");
    for user in [
        "carol",
        "0190f3a2-7b1c-7def-8abc-0123456789ab",
        "a-b:c d",
        &"x".repeat(200),
    ] {
        let key = user_key(user);
        assert!(valid_identifier(&key), "{key}");
    }
    assert_eq!(user_key("carol"), "user_carol");
    assert_ne!(user_key("a-b"), user_key("a_b"), "no two ids share a key");
    assert!(result_key(&tests_activity()).starts_with("test_h"));
    assert!(valid_identifier(&result_key(&tests_activity())));
}

#[test]
fn execution_node_keeps_digests_and_bounded_excerpts_never_code() {
    let stdout = vec![b'o'; 10_000];
    let mut stderr = vec![b'e'; 10_000];
    stderr.extend_from_slice(b"ValueError: boom");
    let j = job("carol", execution("r1", stdout, stderr));
    let node = result_node(&j);
    assert_eq!(node.labels, ["ExecutionResult"]);
    let p = &node.properties;
    for name in p.keys() {
        assert!(
            valid_identifier(name) && !name.starts_with('_') && name != "key",
            "{name}"
        );
    }
    let text = |k: &str| match &p[k].kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let number = |k: &str| match &p[k].kind {
        Some(Kind::IntValue(i)) => *i,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("language"), "python");
    assert_eq!(text("status"), "runtime_error");
    assert_eq!(text("code_sha256"), "ab".repeat(32));
    assert_eq!(text("id"), "r1");
    assert_eq!(text("user_id"), "carol");
    assert_eq!(
        (
            number("exit_code"),
            number("wall_time_ms"),
            number("cpu_time_ms")
        ),
        (3, 1500, 20)
    );
    assert_eq!(text("stdout_excerpt").len(), EXCERPT_BYTES);
    assert!(
        text("stderr_excerpt").ends_with("ValueError: boom"),
        "the tail of stderr"
    );
    assert_eq!(text("stderr_excerpt").len(), EXCERPT_BYTES);
    assert_eq!(
        (number("stdout_bytes"), number("stderr_bytes")),
        (10_000, 10_016)
    );
    assert!(!p.contains_key("code"));
    assert!(matches!(
        p["created_at"].kind,
        Some(Kind::TimestampValue(_))
    ));
}

#[test]
fn lint_tests_and_generation_nodes() {
    let node = result_node(&job("u", lint()));
    assert_eq!(node.labels, ["LintResult"]);
    let p = &node.properties;
    assert_eq!(p["diagnostics"], int(3));
    assert_eq!(
        (p["errors"].clone(), p["warnings"].clone()),
        (int(1), int(2))
    );
    assert_eq!(
        p["rule_codes"],
        strings(["E999".to_owned(), "F401".to_owned()])
    );

    let node = result_node(&job("u", tests_activity()));
    assert_eq!(node.labels, ["TestResult"]);
    assert_eq!(
        node.properties["failing_tests"],
        strings(["test_bad".to_owned()])
    );
    assert_eq!(node.properties["passed"], int(1));

    let generation = Activity::Generation {
        id: "0190f3a2-7b1c-7def-8abc-0123456789ac".into(),
        language: Some(Language::Bash),
        template_sha256: "1".repeat(64),
        context_sha256: "2".repeat(64),
        output_sha256: "3".repeat(64),
        output_bytes: 12,
    };
    let node = result_node(&job("u", generation));
    assert_eq!(node.labels, ["GeneratedCode"]);
    assert!(node.key.starts_with("gen_"));
    assert_eq!(node.properties["output_bytes"], int(12));
    assert_eq!(node.properties["language"], string("bash"));
}

#[test]
fn one_upsert_has_each_user_once_and_a_ran_per_result() {
    let batch = [
        job("carol", execution("a", vec![], vec![])),
        job("carol", lint()),
        job("dave", tests_activity()),
    ];
    let req = upsert(&batch);
    let users: Vec<_> = req
        .nodes
        .iter()
        .filter(|n| n.labels == ["User"])
        .map(|n| n.key.as_str())
        .collect();
    assert_eq!(users, ["user_carol", "user_dave"]);
    assert_eq!(req.nodes.len(), 5);
    assert_eq!(req.relationships.len(), 3);
    for r in &req.relationships {
        assert_eq!(r.r#type, RAN);
        assert!(req.nodes.iter().any(|n| n.key == r.start_key));
        assert!(req.nodes.iter().any(|n| n.key == r.end_key));
    }
    assert_eq!(req.relationships[2].start_key, "user_dave");
}
