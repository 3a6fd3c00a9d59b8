//! Escape corpus and service behaviour of umcp-execution, against the real sandbox.
//!
//! Needs root and cgroups (like the service itself). Every test builds its own sandbox with
//! its own UID range, so tests running in parallel never share slots, UIDs or cgroups.

#[path = "sandbox/escapes.rs"]
mod escapes;
#[path = "sandbox/lifecycle.rs"]
mod lifecycle;
#[path = "sandbox/pooled.rs"]
mod pooled;
#[path = "sandbox/queueing.rs"]
mod queueing;
#[path = "sandbox/reports.rs"]
mod reports;
#[path = "sandbox/rpcs.rs"]
mod rpcs;
#[path = "sandbox/templates.rs"]
mod templates;

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
use umcp_execution::service::ExecutionService;
use umcp_sandbox::process::{
    NamespaceSandbox, RunLimits, RunSpec, Sandbox, SandboxFile, SandboxOptions, Termination,
};

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
        renderer: env!("CARGO_BIN_EXE_umcp-execution").into(),
        ..ExecutionConfig::default()
    }
}

/// The service as `serve` builds it, warm pool included (default size): the escape corpus
/// runs in pooled sandboxes (Python, Node, Bash), since the pools are full before the first
/// call.
async fn service_with(config: ExecutionConfig) -> Arc<ExecutionService> {
    let size = config.warm_pool_size;
    let sandbox = umcp_execution::build_sandbox(&config).expect("sandbox");
    let svc = ExecutionService::new(config, Arc::new(sandbox.clone()), None)
        .await
        .expect("service")
        .with_warm_pool(&sandbox);
    wait_for_pool(&svc, size).await;
    Arc::new(svc)
}

/// Waits (bounded) until `size` pooled sandboxes are ready for every installed language.
async fn wait_for_pool(svc: &ExecutionService, size: usize) {
    let bound = Instant::now() + Duration::from_secs(30);
    for language in Language::ALL {
        if svc.runtimes().interpreter(language).is_none() {
            continue;
        }
        while svc.warm_ready(language) < size {
            assert!(Instant::now() < bound, "the warm pool never filled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
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

fn libc_sigkill() -> i32 {
    9
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

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
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
