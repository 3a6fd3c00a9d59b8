//! The RPCs: streaming, idempotency, languages, lint, tests, templates, bad requests.

use super::*;

#[tokio::test]
async fn full_queue_is_resource_exhausted() {
    let mut cfg = config(1);
    cfg.max_queue = 0;
    let svc = service_with(cfg).await;
    let slow = {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move { svc.execute("a", input(Language::Bash, "sleep 1")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = svc
        .execute("b", input(Language::Bash, "true"))
        .await
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
    assert_eq!(slow.await.unwrap().unwrap().status, RunStatus::Ok);
}

#[tokio::test]
async fn stream_delivers_chunks_before_the_result() {
    let svc = service().await;
    let mut rx = svc
        .execute_stream("u".into(), py("import time, sys\nprint('first')\ntime.sleep(0.5)\nprint('second', file=sys.stderr)\n"))
        .unwrap();
    let started = Instant::now();
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push((started.elapsed(), e.unwrap()));
    }
    // Unbuffered Python may write "first" and "\n" separately: join the stdout chunks.
    let stdout: Vec<u8> = events
        .iter()
        .filter_map(|(_, e)| match e {
            StreamEvent::Output {
                stream: umcp_sandbox::process::StreamKind::Stdout,
                data,
            } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(stdout, b"first\n", "{events:?}");
    let (t_first, first) = &events[0];
    assert!(matches!(first, StreamEvent::Output { .. }), "{events:?}");
    let (t_last, last) = events.last().unwrap();
    let StreamEvent::Result(result) = last else {
        panic!("last event is the result")
    };
    assert!(result.stdout.is_empty() && result.status == RunStatus::Ok);
    assert!(
        *t_last - *t_first >= Duration::from_millis(400),
        "first chunk arrived while running"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_result() {
    let svc = service().await;
    let mut req = py("import random\nprint(random.random())\n");
    req.idempotency_key = Some("run-1".into());
    let first = svc.execute("alice", req.clone()).await.unwrap();
    let again = svc.execute("alice", req.clone()).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        (first.id.as_str(), &first.stdout),
        (again.id.as_str(), &again.stdout)
    );
    let bob = svc.execute("bob", req.clone()).await.unwrap();
    assert_ne!(bob.stdout, first.stdout, "keys are per user");
    req.code.push_str("print(1)\n");
    assert!(
        svc.execute("alice", req).await.is_err(),
        "same key, other request"
    );
}

#[tokio::test]
async fn languages_stdin_args_and_exit_codes() {
    let svc = service().await;
    let langs: Vec<String> = svc
        .runtimes()
        .languages
        .iter()
        .map(|l| l.version.clone())
        .collect();
    assert!(
        langs.iter().any(|v| v.starts_with("Python 3."))
            && langs.iter().any(|v| v.starts_with("Node.js v")),
        "{langs:?}"
    );
    let mut js = input(
        Language::JavaScript,
        "console.log(process.argv.slice(2).join(','), require('fs').readFileSync(0,'utf8').trim()); process.exit(3)",
    );
    js.args = vec!["a".into(), "b c".into()];
    js.stdin = b"from stdin\n".to_vec();
    let r = svc.execute("u", js).await.unwrap();
    assert_eq!(text(&r.stdout), "a,b c from stdin\n", "{}", text(&r.stderr));
    assert_eq!(
        (r.status, r.exit_code, r.signal),
        (RunStatus::RuntimeError, 3, 0)
    );
    let r = svc
        .execute("u", input(Language::Bash, "echo \"$#:$HOME\""))
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "0:/tmp\n");
    // Default signal dispositions: `yes` dies of SIGPIPE (141), not of an inherited SIG_IGN.
    let r = svc
        .execute(
            "u",
            input(Language::Bash, "yes | head -1; echo \"${PIPESTATUS[0]}\""),
        )
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "y\n141\n", "{}", text(&r.stderr));
}

#[tokio::test]
async fn bad_requests_are_invalid_argument() {
    let svc = service().await;
    let code_of = |e: umcp_execution::error::ExecError| tonic::Status::from(e);
    let s = code_of(svc.execute("u", py("")).await.unwrap_err());
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("256 KiB"));
    let s = code_of(
        svc.execute("u", py(&"#".repeat(300 * 1024)))
            .await
            .unwrap_err(),
    );
    assert!(
        s.code() == tonic::Code::InvalidArgument && s.message().contains("at most"),
        "{s:?}"
    );
    let mut big = py("print(1)");
    big.limits.memory_bytes = Some(2 << 30);
    let s = code_of(svc.execute("u", big).await.unwrap_err());
    assert!(
        s.code() == tonic::Code::InvalidArgument && s.message().contains("maximum of 1073741824"),
        "{s:?}"
    );
    let mut key = py("print(1)");
    key.idempotency_key = Some("bad key!".into());
    assert_eq!(
        code_of(svc.execute("u", key).await.unwrap_err()).code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn grpc_round_trip_with_bad_requests_and_list_languages() {
    use umcp_proto::execution::v1 as pb;
    use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
    let cfg = config(2);
    let issuer = umcp_testkit::issuer::TestIssuer::new();
    let verifier = issuer.verifier();
    let server = umcp_testkit::Spawned::start(|listener, shutdown| {
        umcp_execution::serve(
            listener,
            cfg,
            umcp_execution::Wiring::unaudited(verifier, "execution"),
            None,
            shutdown.wait(),
        )
    })
    .await;
    // Without a token nothing runs; a viewer may list languages but not execute.
    let anonymous = ExecutionServiceClient::new(server.channel())
        .execute(pb::ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let viewer = issuer.bearer("viewer-1", &[umcp_authz::permissions::Role::Viewer]);
    let denied = ExecutionServiceClient::new(umcp_testkit::authed(server.channel(), viewer))
        .execute(pb::ExecuteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("tools:execute"),
        "{}",
        denied.message()
    );
    let developer = issuer.bearer("carol", &[umcp_authz::permissions::Role::Developer]);
    let mut client = ExecutionServiceClient::new(umcp_testkit::authed(server.channel(), developer));
    let mut ok = false;
    for _ in 0..100 {
        if client
            .list_languages(pb::ListLanguagesRequest {})
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "server came up");
    let langs = client
        .list_languages(pb::ListLanguagesRequest {})
        .await
        .unwrap()
        .into_inner()
        .languages;
    let python = langs
        .iter()
        .find(|l| l.language == pb::Language::Python as i32)
        .expect("python");
    assert_eq!(python.interpreter, "/usr/bin/python3");
    let unknown = pb::ExecuteRequest {
        language: 0,
        code: "x".into(),
        ..Default::default()
    };
    let s = client.execute(unknown).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("LANGUAGE_PYTHON"), "{}", s.message());
    let req = tonic::Request::new(pb::ExecuteRequest {
        language: pb::Language::Python as i32,
        code: "print('hi')".into(),
        limits: Some(pb::Limits {
            wall_time: Some(prost_types::Duration {
                seconds: 61,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let s = client.execute(req).await.unwrap_err();
    assert!(
        s.code() == tonic::Code::InvalidArgument && s.message().contains("60000 ms"),
        "{}",
        s.message()
    );
    let r = client
        .execute(pb::ExecuteRequest {
            language: pb::Language::Python as i32,
            code: "print('hi')".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.status, r.stdout.as_slice()),
        (pb::RunStatus::Ok as i32, b"hi\n".as_slice())
    );
    let s = client
        .generate_code(pb::GenerateCodeRequest {
            template: "a\n{{ nope }}".into(),
            context_json: "{}".into(),
            language: 1,
        })
        .await
        .unwrap_err();
    assert!(
        s.code() == tonic::Code::InvalidArgument && s.message().contains("line 2"),
        "{}",
        s.message()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn lint_python_summary_and_ruff() {
    let svc = service().await;
    let code = "import os\nfrom x.y import z\n\nclass A:\n    def m(self, v):\n        if v and z:\n            return 1\n        return 2\n\nasync def top():\n    pass\n";
    let report = svc.lint("u", Language::Python, code).await.unwrap();
    let summary = report.python.expect("parsed");
    assert_eq!(summary.functions, ["m", "top"]);
    assert_eq!(summary.classes, ["A"]);
    assert_eq!(summary.imports, ["os", "x"]);
    let m = summary.complexity.iter().find(|c| c.name == "A.m").unwrap();
    assert_eq!((m.complexity, m.line, m.is_async), (3, 5, false));
    assert!(
        summary
            .complexity
            .iter()
            .any(|c| c.name == "top" && c.is_async)
    );
    assert_eq!(report.code_sha256.len(), 64);
    if svc.runtimes().ruff.is_some() {
        assert!(
            report.linters_run.iter().any(|l| l.starts_with("ruff ")),
            "{:?}",
            report.linters_run
        );
        let f401 = report
            .diagnostics
            .iter()
            .find(|d| d.code == "F401")
            .expect("unused import os");
        assert_eq!(
            (f401.line, f401.column, f401.source.as_str()),
            (1, 8, "ruff")
        );
    }
    let broken = svc.lint("u", Language::Python, "def f(:\n").await.unwrap();
    assert!(broken.python.is_none());
    assert!(
        broken
            .diagnostics
            .iter()
            .any(|d| d.source == "python-ast" && d.line == 1)
    );
}

#[tokio::test]
async fn lint_javascript_and_bash() {
    let svc = service().await;
    let js = svc
        .lint("u", Language::JavaScript, "let ok = 1;\nlet x = ;\n")
        .await
        .unwrap();
    assert_eq!(js.diagnostics.len(), 1, "{:?}", js.diagnostics);
    assert_eq!(
        (js.diagnostics[0].line, js.diagnostics[0].source.as_str()),
        (2, "node --check")
    );
    let sh = svc
        .lint("u", Language::Bash, "if true; then\n  echo $1\nfi\n")
        .await
        .unwrap();
    assert!(sh.linters_run.iter().any(|l| l.starts_with("bash -n")));
    if svc.runtimes().shellcheck.is_some() {
        assert!(
            sh.diagnostics
                .iter()
                .any(|d| d.code == "SC2086" && d.line == 2),
            "{:?}",
            sh.diagnostics
        );
    }
    let bad = svc
        .lint("u", Language::Bash, "if true; then\n")
        .await
        .unwrap();
    assert!(
        bad.diagnostics.iter().any(|d| d.source == "bash -n"),
        "{:?}",
        bad.diagnostics
    );
}

#[tokio::test]
async fn run_tests_reports_each_test_and_timeouts() {
    let svc = service().await;
    if svc.runtimes().pytest.is_none() {
        let err = svc
            .run_tests(
                "u",
                TestsInput {
                    modules: vec![],
                    tests: vec![SourceFile {
                        path: "test_a.py".into(),
                        content: "".into(),
                    }],
                    limits: LimitRequest::default(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
        return;
    }
    let module = SourceFile {
        path: "calc.py".into(),
        content: "def add(a, b):\n    return a + b\n".into(),
    };
    let tests = SourceFile {
        path: "tests/test_calc.py".into(),
        content: "import pytest\nfrom calc import add\n\ndef test_ok():\n    assert add(1, 2) == 3\n\nclass TestX:\n    def test_bad(self):\n        assert add(1, 1) == 3\n\n@pytest.mark.skip(reason='later')\ndef test_skip():\n    pass\n".into(),
    };
    let report = svc
        .run_tests(
            "u",
            TestsInput {
                modules: vec![module.clone()],
                tests: vec![tests],
                limits: LimitRequest::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (report.passed, report.failed, report.skipped, report.errors),
        (1, 1, 1, 0),
        "{}\n{}",
        text(&report.stdout),
        text(&report.stderr)
    );
    let bad = report
        .tests
        .iter()
        .find(|t| t.outcome == TestOutcome::Failed)
        .unwrap();
    assert_eq!(bad.name, "tests/test_calc.py::TestX::test_bad");
    assert!(bad.message.contains("assert"), "{}", bad.message);
    assert_eq!(report.status, RunStatus::RuntimeError);

    let hang = SourceFile {
        path: "test_hang.py".into(),
        content: "def test_hang():\n    while True:\n        pass\n".into(),
    };
    let limits = LimitRequest {
        wall_time: Some(Duration::from_secs(2)),
        ..LimitRequest::default()
    };
    let report = svc
        .run_tests(
            "u",
            TestsInput {
                modules: vec![],
                tests: vec![hang],
                limits,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(report.status, RunStatus::Timeout | RunStatus::CpuLimit),
        "{:?}",
        report.status
    );
}
