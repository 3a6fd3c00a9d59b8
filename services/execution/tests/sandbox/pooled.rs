//! The warm pool: pooled runs behave exactly like cold ones, and are single-use.

use super::*;

/// Programs whose observable behaviour must not depend on how the sandbox was started.
const PROGRAMS: &[(&str, &[&str], &str)] = &[
    (
        "import sys\nprint(sys.argv, __name__, __file__)\n",
        &["a b", "-x"],
        "",
    ),
    (
        "import sys\nprint(sys.path[0])\nprint(input())\nprint(sys.stdin.read())\n",
        &[],
        "line one\nrest\n",
    ),
    ("def f():\n    return 1 / 0\n\nf()\n", &[], ""),
    ("def (\n", &[], ""),
    (
        "import sys\nprint('out'); print('err', file=sys.stderr)\nsys.exit(3)\n",
        &[],
        "",
    ),
    (
        "import select, sys\nprint(select.select([sys.stdin], [], [], 0.2)[0] == [])\n",
        &[],
        "",
    ),
    ("raise SystemExit('bye')\n", &[], ""),
    ("import os\nos._exit(7)\n", &[], ""),
    (
        "import os, signal, sys\nsys.stdout.flush()\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\nos.kill(os.getpid(), signal.SIGTERM)\nimport time; time.sleep(1)\nprint('alive')\n",
        &[],
        "",
    ),
    (
        "import os\nprint(sorted(os.listdir('/box')) == [] or sorted(os.listdir('/box')))\nprint(os.getcwd(), os.getuid() >= 1000)\n",
        &[],
        "",
    ),
    (
        "if __name__ == '__main__':\n    import warnings\n    warnings.warn('careful')\n    print(globals().get('_umcp_run', 'clean'))\n",
        &[],
        "",
    ),
];

fn with_io(code: &str, args: &[&str], stdin: &str) -> ExecuteInput {
    let mut i = py(code);
    i.args = args.iter().map(|a| a.to_string()).collect();
    i.stdin = stdin.as_bytes().to_vec();
    i
}

#[tokio::test]
async fn pooled_runs_behave_like_cold_runs() {
    let cold = service_with(ExecutionConfig {
        warm_pool_size: 0,
        ..config(2)
    })
    .await;
    let pooled = service_with(config(2)).await;
    for (code, args, stdin) in PROGRAMS {
        wait_for_pool(&pooled, 2).await;
        let c = cold.execute("u", with_io(code, args, stdin)).await.unwrap();
        let p = pooled
            .execute("u", with_io(code, args, stdin))
            .await
            .unwrap();
        let view = |r: &umcp_execution::model::ExecutionResult| {
            (
                r.status,
                r.exit_code,
                r.signal,
                text(&r.stdout),
                text(&r.stderr),
            )
        };
        // /box is empty in a pooled sandbox (the code came through a pipe): the one
        // difference a program can see, normalised here.
        let (mut cv, pv) = (view(&c), view(&p));
        cv.3 = cv.3.replace("['main.py']", "True");
        assert_eq!(cv, pv, "cold and pooled differ for {code:?}");
    }
}

#[tokio::test]
async fn pooled_sandboxes_are_single_use_and_refilled() {
    let svc = service_with(config(2)).await;
    let code = "import os\nmarker = '/tmp/used'\nprint(os.path.exists(marker))\nopen(marker, 'w').write('x')\nprint(os.getpid())\n";
    for _ in 0..6 {
        let r = svc.execute("u", py(code)).await.unwrap();
        assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
        assert_eq!(text(&r.stdout), "False\n1\n", "a fresh sandbox every time");
    }
    wait_for_pool(&svc, 2).await;
}

#[tokio::test]
async fn pooled_runs_get_the_requests_limits_from_hand_over() {
    let svc = service_with(config(2)).await;
    let mut hog = py("b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n");
    hog.limits.memory_bytes = Some(64 << 20);
    let r = svc.execute("u", hog).await.unwrap();
    assert_eq!(r.status, RunStatus::MemoryLimit);
    wait_for_pool(&svc, 2).await;
    let mut spin = py("while True:\n    pass\n");
    spin.limits.cpu_time = Some(Duration::from_millis(500));
    let r = svc.execute("u", spin).await.unwrap();
    assert_eq!(r.status, RunStatus::CpuLimit);
    assert!(r.cpu_time >= Duration::from_millis(500), "{:?}", r.cpu_time);
    assert!(
        r.cpu_time < Duration::from_secs(3),
        "counted from hand-over: {:?}",
        r.cpu_time
    );
    wait_for_pool(&svc, 2).await;
    let mut sleepy = py("import time\ntime.sleep(5)\n");
    sleepy.limits.wall_time = Some(Duration::from_millis(300));
    let r = svc.execute("u", sleepy).await.unwrap();
    assert_eq!(r.status, RunStatus::Timeout);
    wait_for_pool(&svc, 2).await;
    let mut files = py(
        "import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_FSIZE))\n",
    );
    files.limits.open_files = Some(40);
    files.limits.file_size_bytes = Some(1 << 20);
    let r = svc.execute("u", files).await.unwrap();
    assert_eq!(
        text(&r.stdout),
        "(40, 40) (1048576, 1048576)\n",
        "{}",
        text(&r.stderr)
    );
}
