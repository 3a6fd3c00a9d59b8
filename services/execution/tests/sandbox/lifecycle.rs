//! Nothing left behind, concurrency, refusing weak hosts, rootless mode, a killed service.

use super::*;

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

#[tokio::test]
async fn weak_hosts_are_refused_unless_insecure_mode_is_explicit() {
    let opts = |allow| SandboxOptions {
        slots: 1,
        uid_base: uid_base(),
        cgroup_mode: umcp_sandbox::process::CgroupMode::V2,
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
    // Every uid the service may use: its 2 running slots and the warm pools' own (the sleep
    // below may run in a pooled sandbox).
    let slots = u32::try_from(
        umcp_execution::ExecutionConfig {
            max_concurrent: 2,
            ..umcp_execution::ExecutionConfig::default()
        }
        .sandbox_slots(),
    )
    .unwrap();
    let port = umcp_testkit::free_port();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv");
    let issuer = umcp_testkit::issuer::TestIssuer::new();
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), issuer.jwks_json()).unwrap();
    let mut service = std::process::Command::new(env!("CARGO_BIN_EXE_umcp-execution"))
        .env_clear()
        .env("UMCP_AUTH__JWKS_FILE", jwks.path())
        .env("UMCP_LISTEN", format!("127.0.0.1:{port}"))
        // No operations port: its fixed default is taken by any other instance on this machine.
        .env("UMCP_HTTP__LISTEN", "")
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
        !processes_with_uid(base, slots).is_empty()
    })
    .await;
    assert!(running, "the sandboxed sleep started");
    service.kill().unwrap();
    service.wait().unwrap();
    let gone = umcp_testkit::eventually(Duration::from_secs(5), || async {
        processes_with_uid(base, slots).is_empty()
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
async fn the_service_refuses_to_start_without_isolation_and_says_why() {
    let v2_usable = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| c.contains("memory") && c.contains("pids"));
    if v2_usable {
        return;
    }
    let cfg = ExecutionConfig {
        cgroup: umcp_sandbox::process::CgroupMode::V2,
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
        Err(umcp_sandbox::process::RunError::Setup { step, source }) => {
            assert_eq!(step, "enter working directory");
            assert_eq!(source.raw_os_error(), Some(2));
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    let mut bad_bind = bash_true();
    bad_bind.binds.push(umcp_sandbox::process::ExtraBind {
        host: "/no/such/tool".into(),
        inside: "/opt/x".into(),
    });
    assert!(matches!(
        sandbox.run(bad_bind, None).await,
        Err(umcp_sandbox::process::RunError::Invalid(_))
    ));
    let mut escape = bash_true();
    escape.files.push(SandboxFile {
        path: "../../etc/cron.d/x".into(),
        contents: b"x".to_vec(),
    });
    assert!(matches!(
        sandbox.run(escape, None).await,
        Err(umcp_sandbox::process::RunError::Invalid(_))
    ));
    // The slot is still usable afterwards.
    assert_eq!(
        sandbox.run(bash_true(), None).await.unwrap().termination,
        Termination::Ok
    );
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
