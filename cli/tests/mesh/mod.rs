//! The whole mesh in this test process, shared by every test: the real auth, audit, graph and
//! execution services and the gateway on `127.0.0.1:0`, started as gateway/tests/audit does, on
//! a runtime of their own (so they outlive any one test), with a 60 s access-token lifetime (the
//! shortest the auth service accepts) so a stored login can be seen refreshing. Plus a runner
//! for the built `umcp` binary with a private HOME and config directory per test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use umcp_audit_client::AuditClientConfig;
use umcp_auth::{AuthConfig, PasswordConfig, Secret};
use umcp_authz::AuthClientConfig;
use umcp_testkit::{Spawned, eventually};

pub(crate) const ADMIN_PW: &str = "cli-admin-password";
/// The auth service's access-token lifetime in this mesh.
pub(crate) const ACCESS_TTL_SECS: u64 = 60;
/// No `umcp` run may take longer than this (a hung run fails instead of hanging the suite).
const RUN_BOUND: Duration = Duration::from_secs(120);

static GATEWAY: OnceLock<String> = OnceLock::new();

/// The gateway's address (`127.0.0.1:port`); starts the mesh on first use.
pub(crate) fn gateway() -> &'static str {
    GATEWAY.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("mesh runtime");
            runtime.block_on(async move {
                let mesh = start().await;
                tx.send(mesh.gateway.addr.to_string()).expect("test waits");
                // Up for the life of the test process.
                std::future::pending::<()>().await;
                drop(mesh);
            });
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the mesh started within 60 s")
    })
}

struct Running {
    _dir: tempfile::TempDir,
    _servers: Vec<Spawned>,
    gateway: Spawned,
}

fn audit_client(url: &str, spool: PathBuf) -> AuditClientConfig {
    AuditClientConfig {
        url: url.to_owned(),
        spool_dir: spool,
        batch_delay_ms: 5,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..AuditClientConfig::default()
    }
}

fn verifier(auth: &Spawned, key_file: &Path) -> AuthClientConfig {
    AuthClientConfig {
        url: auth.url(),
        api_key_file: key_file.display().to_string(),
        leeway_secs: 0,
        jwks_refresh_secs: 1,
        ..AuthClientConfig::default()
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let root = dir.path().to_path_buf();
    let key_file = root.join("service-api-key.txt");
    let audit_port = umcp_testkit::free_port();
    let audit_url = format!("http://127.0.0.1:{audit_port}");
    let spool = |name: &str| audit_client(&audit_url, root.join("spool").join(name));

    let auth_config = AuthConfig {
        data_root: root.clone(),
        bootstrap_admin_password: Some(Secret::new(ADMIN_PW)),
        bootstrap_service_key_file: Some(key_file.clone()),
        password: PasswordConfig::fast_for_tests(),
        access_ttl_secs: ACCESS_TTL_SECS,
        clock_leeway_secs: 0,
        trust_forwarded_for: true,
        audit: spool("auth"),
        ..AuthConfig::default()
    };
    let auth = Spawned::start(|l, stop| umcp_auth::run(l, auth_config, stop.wait())).await;
    let written = eventually(Duration::from_secs(10), || {
        let ready = key_file.exists();
        async move { ready }
    })
    .await;
    assert!(written, "auth never wrote the service key");

    let audit_config = umcp_audit::AuditConfig {
        listen: format!("127.0.0.1:{audit_port}"),
        data_dir: root.join("audit"),
        key_file: root.join("audit/chain.key"),
        auth: verifier(&auth, &key_file),
        ..umcp_audit::AuditConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", audit_port))
        .await
        .expect("audit port");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        umcp_audit::run(listener, audit_config, async move {
            let _ = rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    let audit = Spawned::adopt(([127, 0, 0, 1], audit_port).into(), tx, handle);

    let graph_config = umcp_graph::GraphConfig {
        data_dir: root.join("graph"),
        auth: verifier(&auth, &key_file),
        audit: spool("graph"),
        ..umcp_graph::GraphConfig::default()
    };
    let graph = Spawned::start(|l, stop| umcp_graph::run(l, graph_config, stop.wait())).await;

    let execution_config = umcp_execution::ExecutionConfig {
        max_concurrent: 2,
        max_per_user: 2,
        max_queue: 8,
        uid_base: 61_000,
        tools_venv: Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
        graph_url: String::new(),
        auth: verifier(&auth, &key_file),
        audit: spool("execution"),
        ..umcp_execution::ExecutionConfig::default()
    };
    let execution =
        Spawned::start(|l, stop| umcp_execution::run(l, execution_config, stop.wait())).await;

    let mut gw_config = umcp_gateway::GatewayConfig::default();
    gw_config.backends.auth = auth.url();
    gw_config.backends.graph = graph.url();
    gw_config.backends.execution = execution.url();
    gw_config.backends.audit = audit_url.clone();
    gw_config.auth = verifier(&auth, &key_file);
    gw_config.audit = spool("gateway");
    gw_config.health_interval_ms = 100;
    // Many logins and calls from parallel tests: rate limits have their own tests.
    gw_config.rate_limits.enabled = false;
    let gateway = Spawned::start(|l, stop| umcp_gateway::run(l, gw_config, stop.wait())).await;
    // One health round, so the first calls find every backend serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Running {
        _dir: dir,
        _servers: vec![audit, auth, graph, execution],
        gateway,
    }
}

/// What a `umcp` run did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// The stdout parsed as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// One user of the CLI: a private HOME / XDG_CONFIG_HOME, pointed at the shared mesh.
pub(crate) struct User {
    pub(crate) home: tempfile::TempDir,
}

impl User {
    pub(crate) fn new() -> Self {
        gateway();
        Self {
            home: tempfile::tempdir().expect("home"),
        }
    }

    /// Where `umcp` keeps this user's credentials.
    pub(crate) fn credentials(&self) -> PathBuf {
        self.home.path().join("config/umcp/credentials.json")
    }

    /// A command with this user's environment and nothing inherited that could change it.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_umcp"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("UMCP_ENDPOINT", gateway())
            .current_dir(self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `umcp args…` with `stdin`, bounded by [`RUN_BOUND`].
    pub(crate) fn run(&self, args: &[&str], stdin: &str) -> Run {
        self.run_command(self.command(args), stdin)
    }

    pub(crate) fn run_command(&self, mut command: Command, stdin: &str) -> Run {
        let mut child = command.spawn().expect("spawn umcp");
        if let Some(mut pipe) = child.stdin.take() {
            // A command that never reads stdin may close it first: not an error here.
            let _ = pipe.write_all(stdin.as_bytes());
        }
        let output = wait_bounded(child);
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Writes `content` to `name` in the home directory; returns the path.
    pub(crate) fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, content).expect("write test file");
        path
    }

    /// `umcp login` as `user`; panics unless it succeeds.
    pub(crate) fn login(&self, user: &str, password: &str) {
        let run = self.run(
            &["login", "-u", user, "--password-stdin"],
            &format!("{password}\n"),
        );
        assert_eq!(run.code, 0, "login {user}: {run:?}");
    }
}

/// Waits for `child` (reading its output as it comes, so a full pipe never blocks it), killing
/// it after [`RUN_BOUND`].
fn wait_bounded(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_BOUND) {
        Ok(output) => output.expect("umcp output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("umcp (pid {pid}) ran longer than {RUN_BOUND:?}");
        }
    }
}
