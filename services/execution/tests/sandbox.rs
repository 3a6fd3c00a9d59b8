//! Escape corpus and service behaviour of umcp-execution, against the real sandbox.
//!
//! Needs root and cgroups (like the service itself). Every test builds its own sandbox with
//! its own UID range, so tests running in parallel never share slots, UIDs or cgroups.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use umcp_execution::config::ExecutionConfig;
use umcp_execution::model::{
    ExecuteInput, Language, LimitRequest, RunStatus, SourceFile, StreamEvent, TestOutcome,
    TestsInput,
};
use umcp_execution::sandbox::{
    NamespaceSandbox, RunLimits, RunSpec, Sandbox, SandboxFile, SandboxOptions, Termination,
};
use umcp_execution::service::ExecutionService;

/// Results persisted to the graph service (a module of this one test binary).
mod persist;

static NEXT_RANGE: AtomicU32 = AtomicU32::new(0);

/// A UID range of 200 per sandbox, so concurrent tests never share a UID (RLIMIT_NPROC is per
/// UID host-wide).
fn uid_base() -> u32 {
    61_000 + 200 * NEXT_RANGE.fetch_add(1, Ordering::SeqCst)
}

fn config(slots: usize) -> ExecutionConfig {
    ExecutionConfig {
        max_concurrent: slots,
        max_per_user: slots,
        max_queue: slots,
        uid_base: uid_base(),
        tools_venv: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
        ..ExecutionConfig::default()
    }
}

async fn service_with(config: ExecutionConfig) -> Arc<ExecutionService> {
    let sandbox = umcp_execution::build_sandbox(&config).expect("sandbox");
    Arc::new(
        ExecutionService::new(config, Arc::new(sandbox), None)
            .await
            .expect("service"),
    )
}

async fn service() -> Arc<ExecutionService> {
    service_with(config(4)).await
}

fn input(language: Language, code: &str) -> ExecuteInput {
    ExecuteInput {
        language,
        code: code.into(),
        stdin: Vec::new(),
        args: Vec::new(),
        limits: LimitRequest::default(),
        idempotency_key: None,
    }
}

fn py(code: &str) -> ExecuteInput {
    input(Language::Python, code)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// PIDs of host processes running with a UID in `[base, base + count)`.
fn processes_with_uid(base: u32, count: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if uid.is_some_and(|u| (base..base + count).contains(&u)) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn host_loopback_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = service().await;
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('blocked', e.errno)\n"
    );
    let r = svc.execute("u", py(&code)).await.unwrap();
    assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
    assert_eq!(text(&r.stdout).trim(), "blocked 1", "EPERM from seccomp");
    assert!(
        listener.accept().is_err(),
        "the host listener saw no connection"
    );
}

#[tokio::test]
async fn inet_sockets_are_eperm_but_unix_socketpairs_work() {
    let svc = service().await;
    let code = "import socket, errno\nfor fam in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):\n    try:\n        socket.socket(fam, socket.SOCK_RAW if fam == socket.AF_PACKET else socket.SOCK_DGRAM)\n        print('open', fam)\n    except OSError as e:\n        print('denied', e.errno == errno.EPERM)\na, b = socket.socketpair()\na.send(b'ok'); print(b.recv(2).decode())\n";
    let r = svc.execute("u", py(code)).await.unwrap();
    assert_eq!(
        text(&r.stdout),
        "denied True\ndenied True\ndenied True\ndenied True\nok\n",
        "{}",
        text(&r.stderr)
    );
}

#[tokio::test]
async fn fork_bomb_stops_at_the_pids_limit_and_the_service_survives() {
    let cfg = config(2);
    let (base, slots) = (cfg.uid_base, cfg.max_concurrent as u32);
    let svc = service_with(cfg).await;
    let mut counted = py(
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)\n",
    );
    counted.limits.max_processes = Some(16);
    let r = svc.execute("u", counted).await.unwrap();
    let out = text(&r.stdout);
    let mut parts = out.split_whitespace();
    let forks: u32 = parts.next().expect("fork count").parse().unwrap();
    assert!(forks < 16, "at most pids.max - 1 children, got {forks}");
    assert_eq!(parts.next(), Some("11"), "EAGAIN at the limit");

    let mut bomb = input(Language::Bash, "bomb() { bomb | bomb & }; bomb; wait");
    bomb.limits.wall_time = Some(Duration::from_secs(2));
    let started = Instant::now();
    let r = svc.execute("u", bomb).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the wall limit"
    );
    assert!(
        matches!(
            r.status,
            RunStatus::Timeout | RunStatus::RuntimeError | RunStatus::Ok
        ),
        "{:?}",
        r.status
    );
    assert!(
        processes_with_uid(base, slots).is_empty(),
        "nothing of the bomb is left"
    );
    let r = svc.execute("u", py("print(6 * 7)")).await.unwrap();
    assert_eq!((r.status, text(&r.stdout).trim()), (RunStatus::Ok, "42"));
}

#[tokio::test]
async fn memory_hog_is_memory_limit() {
    let svc = service().await;
    let mut hog = py("b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n");
    hog.limits.memory_bytes = Some(64 << 20);
    let r = svc.execute("u", hog).await.unwrap();
    assert_eq!(r.status, RunStatus::MemoryLimit, "{}", text(&r.stderr));
    assert!(
        r.peak_memory_bytes >= 48 << 20 && r.peak_memory_bytes <= 64 << 20,
        "peak {}",
        r.peak_memory_bytes
    );
    assert_eq!(r.signal, libc_sigkill());
}

fn libc_sigkill() -> i32 {
    9
}

#[tokio::test]
async fn infinite_output_is_truncated_quickly() {
    let svc = service().await;
    let mut flood = py("while True:\n    print('x' * 1000)\n");
    flood.limits.output_bytes = Some(64 * 1024);
    let r = svc.execute("u", flood).await.unwrap();
    assert_eq!(r.status, RunStatus::OutputLimit);
    assert!(r.stdout_truncated && !r.stderr_truncated);
    assert_eq!(r.stdout.len(), 64 * 1024, "exactly the cap is kept");
    assert!(
        r.wall_time < Duration::from_secs(2),
        "stopped at once, took {:?}",
        r.wall_time
    );
}

#[tokio::test]
async fn busy_loop_hits_the_cpu_limit() {
    let svc = service().await;
    let mut spin = py("while True:\n    pass\n");
    spin.limits.cpu_time = Some(Duration::from_millis(500));
    let r = svc.execute("u", spin).await.unwrap();
    assert_eq!(r.status, RunStatus::CpuLimit);
    assert!(
        r.cpu_time >= Duration::from_millis(500),
        "cpu {:?}",
        r.cpu_time
    );
    assert!(
        r.wall_time < Duration::from_secs(3),
        "wall {:?}",
        r.wall_time
    );
}

#[tokio::test]
async fn sleep_times_out_at_wall_time_and_grandchildren_die() {
    let cfg = config(2);
    let (base, slots) = (cfg.uid_base, cfg.max_concurrent as u32);
    let svc = service_with(cfg).await;
    let mut sleeper = input(
        Language::Bash,
        "sh -c 'sleep 100 & sleep 100' &\nsleep 100\n",
    );
    sleeper.limits.wall_time = Some(Duration::from_secs(1));
    let r = svc.execute("u", sleeper).await.unwrap();
    assert_eq!(r.status, RunStatus::Timeout);
    assert!(
        r.wall_time >= Duration::from_secs(1) && r.wall_time < Duration::from_millis(1800),
        "{:?}",
        r.wall_time
    );
    assert_eq!((r.exit_code, r.signal), (-1, 9));
    assert!(
        processes_with_uid(base, slots).is_empty(),
        "children and grandchildren are gone"
    );
}

#[tokio::test]
#[allow(unsafe_code)]
async fn environment_has_no_host_variables() {
    // SAFETY: set once, before this test starts any sandbox; no other code of this binary
    // reads or writes the environment concurrently (sandbox environments are built explicitly).
    unsafe { std::env::set_var("UMCP_TEST_SECRET_TOKEN", "hunter2-do-not-leak") };
    let svc = service().await;
    let code = "import os, json\nprint(json.dumps(dict(os.environ)))\nprint(open('/proc/1/environ','rb').read().count(b'hunter2'))\n";
    let r = svc.execute("u", py(code)).await.unwrap();
    let out = text(&r.stdout);
    assert!(
        !out.contains("hunter2") && !out.contains("UMCP_TEST_SECRET"),
        "{out}"
    );
    let env: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let allowed: HashSet<String> = umcp_execution::runtime::base_env()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in env.keys() {
        assert!(
            allowed.contains(key) || key == "LC_CTYPE",
            "unexpected variable {key}"
        );
    }
    assert_eq!(out.lines().nth(1), Some("0"));
    assert!(
        !env["PATH"].as_str().unwrap().contains("pyenv"),
        "no host PATH"
    );
}

#[tokio::test]
async fn host_file_system_is_read_only_and_cannot_be_remounted() {
    let svc = service().await;
    let code = r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
for target in (b"/usr", b"/"):
    rc = libc.mount(None, target, None, MS_REMOUNT | MS_BIND, None)
    print("remount", target.decode(), rc, errno.errorcode.get(ctypes.get_errno()))
rc = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)
print("mount", rc, errno.errorcode.get(ctypes.get_errno()))
for path in ("/usr/umcp_escape_test", "/umcp_escape_test", "/box/x", "/etc/passwd"):
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as e:
        print("denied", path, errno.errorcode[e.errno])
open("/tmp/ok", "w").write("fine")
print("tmp", open("/tmp/ok").read(), "sys", os.path.exists("/sys"), "root", sorted(os.listdir("/")))
"#;
    let r = svc.execute("u", py(code)).await.unwrap();
    let out = text(&r.stdout);
    assert!(
        out.contains("remount /usr -1 EPERM") && out.contains("remount / -1 EPERM"),
        "{out}\n{}",
        text(&r.stderr)
    );
    assert!(out.contains("mount -1 EPERM"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("denied /usr/umcp_escape_test EROFS"), "{out}");
    assert!(out.contains("tmp fine sys False"), "{out}");
    assert!(
        !Path::new("/usr/umcp_escape_test").exists() && !Path::new("/umcp_escape_test").exists()
    );
}

#[tokio::test]
async fn no_host_processes_are_visible() {
    let svc = service().await;
    let code = "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint(pids)\nprint(open('/proc/1/cmdline','rb').read().split(b'\\0')[0].decode())\n";
    let r = svc.execute("u", py(code)).await.unwrap();
    let out = text(&r.stdout);
    assert_eq!(
        out.lines().next(),
        Some("[1]"),
        "only the program itself: {out}"
    );
    assert_eq!(out.lines().nth(1), Some("/usr/bin/python3"));
}

#[tokio::test]
async fn posix_system_runs_but_stays_contained() {
    let cfg = config(1);
    let uid = cfg.uid_base;
    let svc = service_with(cfg).await;
    let code = "from posix import system\nsystem(\"id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; hostname; cat /proc/self/cgroup | head -1\")\n";
    let r = svc.execute("u", py(code)).await.unwrap();
    let out = text(&r.stdout);
    assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
    assert!(
        out.starts_with(&format!("{uid}\n")),
        "runs as the slot's uid: {out}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000") && out.contains("CapBnd:\t0000000000000000"),
        "{out}"
    );
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    assert!(out.contains("sandbox\n"), "own hostname: {out}");
}

fn bash_true() -> RunSpec {
    RunSpec {
        program: "/usr/bin/bash".into(),
        args: vec!["-c".into(), "exit 0".into()],
        env: umcp_execution::runtime::base_env(),
        files: vec![SandboxFile {
            path: "main.sh".into(),
            contents: b"exit 0\n".to_vec(),
        }],
        binds: Vec::new(),
        workdir: "/tmp".into(),
        stdin: Vec::new(),
        limits: RunLimits::default(),
        capture_fd3: false,
    }
}

fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sequential_runs_leave_nothing_behind() {
    let base = uid_base();
    let sandbox = NamespaceSandbox::new(SandboxOptions {
        slots: 2,
        uid_base: base,
        ..SandboxOptions::default()
    })
    .unwrap();
    let owned: Vec<PathBuf> = sandbox.info().owned_paths;
    assert!(owned.iter().all(|p| p.exists()), "{owned:?}");
    let mounts_before = mount_count();
    for i in 0..1000 {
        let out = sandbox.run(bash_true(), None).await.unwrap();
        assert_eq!(
            out.termination,
            Termination::Ok,
            "run {i}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(
        mount_count(),
        mounts_before,
        "no mount leaked into the host namespace"
    );
    assert!(processes_with_uid(base, 2).is_empty());
    for dir in owned.iter().filter(|p| p.starts_with("/sys/fs/cgroup")) {
        for slot in std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            // Only this process may be listed: the slot's spawner thread lives there (v1).
            let procs = std::fs::read_to_string(slot.path().join("cgroup.procs")).unwrap();
            let own = std::process::id().to_string();
            assert!(
                procs.lines().all(|p| p == own),
                "{} holds {procs}",
                slot.path().display()
            );
        }
    }
    drop(sandbox);
    // The last slot is handed back (and the instance torn down) right after the final
    // namespace is unmounted on a blocking thread: allow it a moment.
    let removed = umcp_testkit::eventually(Duration::from_secs(5), || {
        let owned = owned.clone();
        async move { owned.iter().all(|p| !p.exists()) }
    })
    .await;
    assert!(
        removed,
        "left behind: {:?}",
        owned.iter().filter(|p| p.exists()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_executions_complete() {
    let svc = service_with(config(100)).await;
    let started = Instant::now();
    let runs = (0..100).map(|i| {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move {
            svc.execute("u", input(Language::Bash, &format!("sleep 1; echo {i}")))
                .await
        })
    });
    let results = futures_join(runs.collect()).await;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(
            (r.status, text(&r.stdout).trim().to_owned()),
            (RunStatus::Ok, i.to_string())
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "ran concurrently: {:?}",
        started.elapsed()
    );
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

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
                stream: umcp_execution::sandbox::StreamKind::Stdout,
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
        umcp_execution::run_with(listener, cfg, verifier, shutdown.wait())
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

#[tokio::test]
async fn weak_hosts_are_refused_unless_insecure_mode_is_explicit() {
    let opts = |allow| SandboxOptions {
        slots: 1,
        uid_base: uid_base(),
        cgroup_mode: umcp_execution::sandbox::cgroup::CgroupMode::V2,
        allow_without_cgroups: allow,
    };
    let v2_usable = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers"))
        .is_ok_and(|c| c.contains("memory") && c.contains("pids"));
    if v2_usable {
        return; // this host can enforce v2 limits; nothing to refuse
    }
    let err = NamespaceSandbox::new(opts(false)).unwrap_err();
    assert!(err.contains("cgroup v2"), "{err}");
    let weak = NamespaceSandbox::new(opts(true)).expect("insecure mode starts");
    assert_eq!(weak.info().cgroups, "none");
    let out = weak.run(bash_true(), None).await.unwrap();
    assert_eq!(out.termination, Termination::Ok);
}

#[tokio::test]
async fn killing_the_service_kills_its_sandboxes_and_the_next_start_cleans_up() {
    use umcp_proto::execution::v1 as pb;
    use umcp_proto::execution::v1::execution_service_client::ExecutionServiceClient;
    let base = uid_base();
    let port = umcp_testkit::free_port();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv");
    let issuer = umcp_testkit::issuer::TestIssuer::new();
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), issuer.jwks_json()).unwrap();
    let mut service = std::process::Command::new(env!("CARGO_BIN_EXE_umcp-execution"))
        .env_clear()
        .env("UMCP_AUTH__JWKS_FILE", jwks.path())
        .env("UMCP_LISTEN", format!("127.0.0.1:{port}"))
        .env("UMCP_UID_BASE", base.to_string())
        .env("UMCP_MAX_CONCURRENT", "2")
        .env("UMCP_TOOLS_VENV", venv)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start umcp-execution");
    let pid = service.id();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let developer = issuer.bearer("dev-1", &[umcp_authz::permissions::Role::Developer]);
    let mut client = ExecutionServiceClient::new(umcp_testkit::authed(channel, developer));
    let up = umcp_testkit::eventually(Duration::from_secs(15), || {
        let mut c = client.clone();
        async move { c.list_languages(pb::ListLanguagesRequest {}).await.is_ok() }
    })
    .await;
    assert!(up, "service came up");
    let sleeper = tokio::spawn(async move {
        client
            .execute(pb::ExecuteRequest {
                language: pb::Language::Bash as i32,
                code: "sleep 100".into(),
                ..Default::default()
            })
            .await
    });
    let running = umcp_testkit::eventually(Duration::from_secs(10), || async {
        !processes_with_uid(base, 2).is_empty()
    })
    .await;
    assert!(running, "the sandboxed sleep started");
    service.kill().unwrap();
    service.wait().unwrap();
    let gone = umcp_testkit::eventually(Duration::from_secs(5), || async {
        processes_with_uid(base, 2).is_empty()
    })
    .await;
    assert!(
        gone,
        "the kernel killed the orphaned sandbox (parent-death signal)"
    );
    assert!(
        sleeper.await.unwrap().is_err(),
        "the client saw the connection drop"
    );
    // The next sandbox instance removes the dead service's cgroups.
    drop(
        NamespaceSandbox::new(SandboxOptions {
            slots: 1,
            uid_base: uid_base(),
            ..SandboxOptions::default()
        })
        .unwrap(),
    );
    for ctrl in ["memory", "pids", "cpuacct"] {
        let parent = Path::new("/sys/fs/cgroup").join(ctrl).join("umcp-sandbox");
        let stale: Vec<_> = std::fs::read_dir(&parent)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{pid}-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            stale.is_empty(),
            "stale cgroups of the killed service in {}",
            parent.display()
        );
    }
    let root_prefix = format!("umcp-sandbox-root.{pid}.");
    let stale_roots = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&root_prefix))
        .count();
    assert_eq!(
        stale_roots, 0,
        "the killed service's root mount point was removed"
    );
}

#[tokio::test]
async fn file_size_open_files_and_tmp_size_are_enforced() {
    let svc = service().await;
    let code = r#"
import errno, os
try:
    open("/tmp/big", "wb").write(b"x" * (2 << 20))
    print("big written")
except OSError as e:
    print("big", errno.errorcode[e.errno], os.path.getsize("/tmp/big"))
os.remove("/tmp/big")
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("fds", len(fds) < 16, errno.errorcode[e.errno])
for fd in fds:
    os.close(fd)
try:
    for i in range(8):
        open(f"/tmp/part{i}", "wb").write(b"y" * (768 << 10))
    print("tmp unlimited")
except OSError as e:
    print("tmp", errno.errorcode[e.errno], i)
"#;
    let mut req = py(code);
    req.limits.file_size_bytes = Some(1 << 20);
    req.limits.open_files = Some(16);
    req.limits.tmp_bytes = Some(2 << 20);
    let r = svc.execute("u", req).await.unwrap();
    let out = text(&r.stdout);
    assert!(
        out.contains(&format!("big EFBIG {}", 1 << 20)),
        "{out}\n{}",
        text(&r.stderr)
    );
    assert!(out.contains("fds True EMFILE"), "{out}");
    assert!(out.contains("tmp ENOSPC 2"), "/tmp holds 2 MiB: {out}");
}

#[tokio::test]
async fn the_service_refuses_to_start_without_isolation_and_says_why() {
    let v2_usable = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| c.contains("memory") && c.contains("pids"));
    if v2_usable {
        return;
    }
    let cfg = ExecutionConfig {
        cgroup: umcp_execution::sandbox::cgroup::CgroupMode::V2,
        ..config(1)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = umcp_execution::run(listener, cfg, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to start") && err.contains("cgroup v2"),
        "{err}"
    );
    assert!(
        err.contains("UMCP_INSECURE_ALLOW_WEAK_SANDBOX"),
        "names the development escape hatch: {err}"
    );
}

#[tokio::test]
async fn setup_failures_are_reported_not_run() {
    let sandbox = NamespaceSandbox::new(SandboxOptions {
        slots: 1,
        uid_base: uid_base(),
        ..SandboxOptions::default()
    })
    .unwrap();
    let mut bad_dir = bash_true();
    bad_dir.workdir = "/does-not-exist".into();
    match sandbox.run(bad_dir, None).await {
        Err(umcp_execution::sandbox::SandboxError::Setup { step, source }) => {
            assert_eq!(step, "enter working directory");
            assert_eq!(source.raw_os_error(), Some(2));
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    let mut bad_bind = bash_true();
    bad_bind.binds.push(umcp_execution::sandbox::ExtraBind {
        host: "/no/such/tool".into(),
        inside: "/opt/x".into(),
    });
    assert!(matches!(
        sandbox.run(bad_bind, None).await,
        Err(umcp_execution::sandbox::SandboxError::Invalid(_))
    ));
    let mut escape = bash_true();
    escape.files.push(SandboxFile {
        path: "../../etc/cron.d/x".into(),
        contents: b"x".to_vec(),
    });
    assert!(matches!(
        sandbox.run(escape, None).await,
        Err(umcp_execution::sandbox::SandboxError::Invalid(_))
    ));
    // The slot is still usable afterwards.
    assert_eq!(
        sandbox.run(bash_true(), None).await.unwrap().termination,
        Termination::Ok
    );
}

/// Runs in a child process as `nobody` (see the next test): the rootless development mode.
#[tokio::test]
#[ignore = "run by rootless_mode_isolates_without_root as an unprivileged process"]
#[allow(clippy::print_stdout)] // the marker below is how the parent test sees success
async fn rootless_child() {
    let sandbox = NamespaceSandbox::new(SandboxOptions {
        slots: 2,
        uid_base: 61_000,
        allow_without_cgroups: true,
        ..SandboxOptions::default()
    })
    .expect("rootless sandbox");
    assert_eq!(sandbox.info().backend, "linux-namespaces (rootless)");
    let code = r#"
import os, socket, errno, ctypes
print("uid", os.getuid(), os.getgid())
print("status", [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapBnd", "NoNewPrivs", "Seccomp:"))])
for path in ("/usr/x", "/x"):
    try:
        open(path, "w"); print("WROTE", path)
    except OSError as e:
        print("denied", path, errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_INET); print("INET")
except OSError as e:
    print("inet", errno.errorcode[e.errno])
libc = ctypes.CDLL(None, use_errno=True)
print("remount", libc.mount(None, b"/usr", None, 32 | 4096, None), errno.errorcode.get(ctypes.get_errno()))
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
open("/tmp/ok", "w").write("x"); print("tmp ok")
"#;
    let spec = RunSpec {
        program: "/usr/bin/python3".into(),
        args: vec!["-c".into(), code.into()],
        ..bash_true()
    };
    let out = sandbox.run(spec, None).await.expect("run");
    let stdout = text(&out.stdout);
    assert_eq!(out.termination, Termination::Ok, "{}", text(&out.stderr));
    assert!(stdout.contains("uid 61000 61000"), "{stdout}");
    assert!(
        stdout.contains("status ['0000000000000000', '0000000000000000', '1', '2']"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("WROTE") && !stdout.contains("INET"),
        "{stdout}"
    );
    assert!(
        stdout.contains("inet EPERM") && stdout.contains("remount -1 EPERM"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pids [1]") && stdout.contains("tmp ok"),
        "{stdout}"
    );
    println!("ROOTLESS-OK");
}

#[tokio::test]
async fn rootless_mode_isolates_without_root() {
    use std::os::unix::process::CommandExt;
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "rootless_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", "/tmp")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ROOTLESS-OK"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}
