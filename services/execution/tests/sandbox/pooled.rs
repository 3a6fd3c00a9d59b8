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
    (
        "import resource as r\nprint([r.getrlimit(x) for x in (r.RLIMIT_CPU, r.RLIMIT_NOFILE, r.RLIMIT_FSIZE, r.RLIMIT_NPROC, r.RLIMIT_CORE)])\n",
        &[],
        "",
    ),
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

/// The same for Node: the main module is the real `/box/main.js` in both.
const NODE_PROGRAMS: &[(&str, &[&str], &str)] = &[
    (
        "console.log(process.argv, process.execArgv, require.main === module, __filename, __dirname, Object.keys(require.cache), module.id, module.parent);\n",
        &["a b", "-x", ""],
        "",
    ),
    (
        "const fs = require('fs');\nconsole.log(JSON.stringify(fs.readFileSync(0, 'utf8')));\n",
        &[],
        "line one\nrest\n",
    ),
    (
        "function f() {\n  throw new Error('boom');\n}\nf();\n",
        &[],
        "",
    ),
    ("let x = ;\n", &[], ""),
    (
        "console.log('out');\nconsole.error('err');\nprocess.exit(3);\n",
        &[],
        "",
    ),
    ("process.exitCode = 5;\n", &[], ""),
    ("Promise.reject(new Error('nope'));\n", &[], ""),
    (
        "process.kill(process.pid, 'SIGTERM');\nsetTimeout(() => console.log('alive'), 500);\n",
        &[],
        "",
    ),
    (
        "const fs = require('fs');\nconsole.log(fs.readdirSync('/box'), process.cwd(), fs.readFileSync(__filename, 'utf8').length, process.getuid() >= 1000);\n",
        &[],
        "",
    ),
    (
        "const cp = require('child_process');\nif (process.argv[2] === 'child') {\n  console.log('child', process.execArgv, process.argv.slice(1));\n} else {\n  const r = cp.spawnSync(process.execPath, [...process.execArgv, __filename, 'child'], { encoding: 'utf8' });\n  console.log(r.status, r.stdout, r.stderr);\n}\n",
        &[],
        "",
    ),
];

/// The same for Bash: the pooled loader `exec`s the cold command line.
const BASH_PROGRAMS: &[(&str, &[&str], &str)] = &[
    (
        "echo \"0=$0 n=$# src=${BASH_SOURCE[*]} line=$LINENO shlvl=$SHLVL\"\nprintf '<%s>' \"$@\"\necho\n",
        &["a b", "-x", "", "*"],
        "",
    ),
    // The uid is the slot's (pooled sandboxes use slots of their own).
    ("env | sort\ndeclare -p | grep -v UID=\n", &["p"], ""),
    ("read -r a\necho \"got $a\"\ncat\n", &[], "line one\nrest\n"),
    ("echo before\nnosuchcmd\necho after >&2\nexit 3\n", &[], ""),
    ("if then fi\n", &[], ""),
    ("kill -TERM $$\necho alive\n", &[], ""),
    ("trap 'echo trapped' EXIT\nfalse\n", &[], ""),
    ("exit 300\n", &[], ""),
    ("ulimit -a\n", &[], ""),
    (
        "ls -A /box\nstat -c %a /box\nstat -c '%a %s %F' /box/main.sh\nwc -c < \"$0\"\nls /proc/self/fd\nid -u | grep -c '^6'\n",
        &[],
        "",
    ),
];

fn with_io(code: &str, args: &[&str], stdin: &str) -> ExecuteInput {
    with_io_in(Language::Python, code, args, stdin)
}

fn with_io_in(language: Language, code: &str, args: &[&str], stdin: &str) -> ExecuteInput {
    let mut i = input(language, code);
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
    for (language, programs) in [
        (Language::JavaScript, NODE_PROGRAMS),
        (Language::Bash, BASH_PROGRAMS),
    ] {
        for (code, args, stdin) in programs {
            wait_for_pool(&pooled, 2).await;
            let hits = pooled.warm_hits(language);
            let c = cold
                .execute("u", with_io_in(language, code, args, stdin))
                .await
                .unwrap();
            let p = pooled
                .execute("u", with_io_in(language, code, args, stdin))
                .await
                .unwrap();
            assert_eq!(pooled.warm_hits(language), hits + 1, "pooled: {code:?}");
            let view = |r: &umcp_execution::model::ExecutionResult| {
                (
                    r.status,
                    r.exit_code,
                    r.signal,
                    text(&r.stdout),
                    text(&r.stderr),
                )
            };
            assert_eq!(view(&c), view(&p), "cold and pooled differ for {code:?}");
        }
    }
}

#[tokio::test]
async fn pooled_node_and_bash_get_the_requests_limits() {
    let svc = service_with(config(2)).await;
    // Bash lowers its rlimits at hand-over, like Python.
    let mut files = input(Language::Bash, "ulimit -n\nulimit -f\n");
    files.limits.open_files = Some(40);
    files.limits.file_size_bytes = Some(1 << 20);
    let hits = svc.warm_hits(Language::Bash);
    let r = svc.execute("u", files).await.unwrap();
    assert_eq!(text(&r.stdout), "40\n1024\n", "{}", text(&r.stderr));
    assert_eq!(svc.warm_hits(Language::Bash), hits + 1);
    wait_for_pool(&svc, 2).await;
    let mut spin = input(Language::Bash, "while :; do :; done\n");
    spin.limits.cpu_time = Some(Duration::from_millis(500));
    let r = svc.execute("u", spin).await.unwrap();
    assert_eq!(r.status, RunStatus::CpuLimit);
    wait_for_pool(&svc, 2).await;
    // Node keeps the rlimits it started with: other rlimits run cold, and are still the
    // request's.
    let mut files = input(
        Language::JavaScript,
        "const fs = require('fs');\nconst fds = [];\ntry { for (;;) fds.push(fs.openSync('/dev/null', 'r')); } catch (e) { console.log(e.code, fds.length < 40); }\n",
    );
    files.limits.open_files = Some(40);
    let (hits, misses) = (
        svc.warm_hits(Language::JavaScript),
        svc.warm_misses(Language::JavaScript),
    );
    let r = svc.execute("u", files).await.unwrap();
    assert_eq!(text(&r.stdout), "EMFILE true\n", "{}", text(&r.stderr));
    assert_eq!(svc.warm_hits(Language::JavaScript), hits);
    assert_eq!(svc.warm_misses(Language::JavaScript), misses + 1);
    // Memory and wall time are set at hand-over for a pooled Node run too.
    let mut hog = input(
        Language::JavaScript,
        "const b = [];\nfor (;;) b.push(Buffer.alloc(8 << 20, 1));\n",
    );
    hog.limits.wall_time = Some(Duration::from_millis(5_000));
    let r = svc.execute("u", hog).await.unwrap();
    assert_eq!(r.status, RunStatus::MemoryLimit, "{}", text(&r.stderr));
    assert_eq!(svc.warm_hits(Language::JavaScript), hits + 1);
    wait_for_pool(&svc, 2).await;
    let mut sleepy = input(Language::JavaScript, "setTimeout(() => {}, 5000);\n");
    sleepy.limits.wall_time = Some(Duration::from_millis(300));
    let r = svc.execute("u", sleepy).await.unwrap();
    assert_eq!(r.status, RunStatus::Timeout);
    assert_eq!(svc.warm_hits(Language::JavaScript), hits + 2);
}

#[tokio::test]
async fn pooled_sandboxes_are_single_use_and_refilled() {
    let svc = service_with(config(2)).await;
    for (language, code) in [
        (
            Language::JavaScript,
            "const fs = require('fs');\nconsole.log(fs.existsSync('/tmp/used') ? 'True' : 'False');\nfs.writeFileSync('/tmp/used', 'x');\nconsole.log(process.pid);\n",
        ),
        (
            Language::Bash,
            "[ -e /tmp/used ] && echo True || echo False\n: > /tmp/used\necho $$\n",
        ),
    ] {
        for _ in 0..4 {
            let r = svc.execute("u", input(language, code)).await.unwrap();
            assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
            assert!(
                text(&r.stdout).starts_with("False\n"),
                "a fresh sandbox every time"
            );
        }
    }
    assert!(svc.warm_hits(Language::JavaScript) >= 1 && svc.warm_hits(Language::Bash) >= 1);
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
