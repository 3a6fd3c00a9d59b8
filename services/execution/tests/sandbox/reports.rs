//! RunTests with reports the tests themselves spoil, and module names that collide.

use super::*;

fn tests_input(modules: Vec<(&str, &str)>, tests: Vec<(&str, &str)>) -> TestsInput {
    let files = |v: Vec<(&str, &str)>| {
        v.into_iter()
            .map(|(p, c)| SourceFile {
                path: p.into(),
                content: c.into(),
            })
            .collect()
    };
    TestsInput {
        modules: files(modules),
        tests: files(tests),
        limits: LimitRequest::default(),
    }
}

#[tokio::test]
async fn unreadable_junit_reports_are_a_result_with_report_problem() {
    let svc = service().await;
    if svc.runtimes().pytest.is_none() {
        return;
    }
    let garbage =
        "import os\nos.write(3, b'\\xff\\xfe not xml <<<')\n\ndef test_x():\n    print('ran')\n";
    let report = svc
        .run_tests("u", tests_input(vec![], vec![("test_g.py", garbage)]))
        .await
        .expect("a result, not an error");
    assert!(!report.report_problem.is_empty(), "{report:?}");
    let closed = "import os\nos.close(3)\n\ndef test_x():\n    pass\n";
    let report = svc
        .run_tests("u", tests_input(vec![], vec![("test_c.py", closed)]))
        .await
        .expect("a result, not an error");
    assert!(
        report.report_problem.contains("no JUnit report") || report.report_problem.contains("not"),
        "{report:?}"
    );
    assert!(!report.stdout.is_empty() || !report.stderr.is_empty());
}

#[tokio::test]
async fn colliding_module_names_are_invalid_argument_naming_both() {
    let svc = service().await;
    let input = tests_input(
        vec![("lib/Calc.py", "x = 1\n"), ("lib/calc.py", "x = 2\n")],
        vec![("test_a.py", "def test_a():\n    pass\n")],
    );
    let err = svc.run_tests("u", input).await.unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("lib/Calc.py") && status.message().contains("lib/calc.py"),
        "{}",
        status.message()
    );
    let input = tests_input(
        vec![("pytest.py", "x = 1\n")],
        vec![("test_a.py", "def test_a():\n    pass\n")],
    );
    let err = svc.run_tests("u", input).await.unwrap_err();
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
}
