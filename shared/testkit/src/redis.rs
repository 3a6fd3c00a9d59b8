//! Real Redis servers for tests, from the `redis-server` binary (Debian package `redis-server`;
//! `make test` installs it): a standalone server and a 3-master + 3-replica cluster on free
//! loopback ports.
//!
//! [`standalone`] and [`cluster`] are shared by every test of one binary and live until the
//! test process exits; [`RedisServer::start`] and [`RedisCluster::start`] give a test its own,
//! stopped when dropped (for tests that kill nodes). Each `redis-server` runs under a tiny
//! shell that kills it when its stdin closes, so no server outlives the test process even
//! when the process is killed (statics are never dropped).
//!
//! Everything here is synchronous and blocking: call it at the start of a test.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server or the cluster may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `redis-server` binary: `UMCP_REDIS_SERVER` or `redis-server` on `PATH`.
fn server_binary() -> String {
    std::env::var("UMCP_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// Whether `redis-server` can run here (tests that need it say so when it cannot).
#[must_use]
pub fn available() -> bool {
    Command::new(server_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The `redis-server` process id (not the wrapper's).
    pub pid: u32,
    wrapper: Child,
    /// Closing it stops the server (see the module docs).
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a standalone server on a free port, without persistence.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up.
    #[must_use]
    pub fn start() -> Self {
        Self::spawn(free_port(false), &[])
    }

    fn spawn(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("redis temp dir");
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            "redis.log",
        ];
        args.extend_from_slice(extra);
        let (wrapper, stdin, pid) = spawn_wrapped(dir.path(), &args);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Self {
            addr,
            pid,
            wrapper,
            stdin: Some(stdin),
            _dir: dir,
        };
        server.wait_until_up();
        server
    }

    /// `redis://127.0.0.1:port`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// `127.0.0.1:port`.
    #[must_use]
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Runs `redis-cli -p port args…` and returns its output (for test set-up and checks).
    ///
    /// # Panics
    /// When `redis-cli` cannot run.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.addr.port(), args)
    }

    /// Stops the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        self.stdin.take();
        let _ = self.wrapper.wait();
    }

    fn wait_until_up(&self) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if self.cli(&["ping"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on {} did not come up", self.addr);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-server args…` in `dir` under `sh`, which prints its pid and kills it once
/// stdin reaches end of file.
fn spawn_wrapped(dir: &Path, args: &[&str]) -> (Child, ChildStdin, u32) {
    let script = r#"bin="$1"; shift; "$bin" "$@" & pid=$!; echo "$pid"; cat >/dev/null; kill -9 "$pid" 2>/dev/null"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(server_binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (install it: apt-get install redis-server, or `make redis`)");
    let stdout = child.stdout.take().expect("wrapper stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("redis-server pid");
    let pid = line.trim().parse().expect("redis-server pid is a number");
    let stdin = child.stdin.take().expect("wrapper stdin");
    (child, stdin, pid)
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (package redis-tools)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A free loopback port; with `bus`, `port + 10000` (the cluster bus) is free as well.
fn free_port(bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster of three masters, each with one replica.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, masters and replicas (roles change on failover).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes and joins them with `redis-cli --cluster create --cluster-replicas 1`;
    /// returns once every node reports `cluster_state:ok`. The node timeout is 1 s, so a
    /// killed master is replaced by its replica within a few seconds.
    ///
    /// # Panics
    /// When the servers or the cluster do not come up.
    #[must_use]
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::spawn(
                    free_port(true),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // A replica promotes itself however long its link was down: tests
                        // kill masters moments after the cluster formed.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let cluster = Self { nodes };
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(cluster.nodes.iter().map(RedisServer::host_port));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let created = cluster.nodes[0].cli(&args);
        assert!(
            created.contains("All 16384 slots covered"),
            "redis cluster create failed: {created}"
        );
        cluster.wait_until_ok();
        cluster
    }

    /// `host:port` of every node, comma-separated (the form of `UMCP_REDIS__CLUSTER_NODES`).
    #[must_use]
    pub fn node_list(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::host_port)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Positions in [`Self::nodes`] of the nodes that are masters now.
    #[must_use]
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].stdin.is_some() && self.nodes[i].cli(&["role"]).starts_with("master")
            })
            .collect()
    }

    /// Waits until every live node reports `cluster_state:ok` and every replica has finished
    /// its sync with its master (after creation or a failover), so a killed master's data
    /// survives in its replica.
    ///
    /// # Panics
    /// When that does not happen within 30 s.
    pub fn wait_until_ok(&self) {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            let ok = self.nodes.iter().filter(|n| n.stdin.is_some()).all(|n| {
                let role = n.cli(&["role"]);
                let synced = !role.starts_with("slave")
                    || role
                        .lines()
                        .nth(3)
                        .is_some_and(|state| state.trim() == "connected");
                synced && n.cli(&["cluster", "info"]).contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis cluster did not reach cluster_state:ok");
    }
}

/// The standalone server shared by every test of this binary.
///
/// # Panics
/// When `redis-server` is missing or does not come up.
pub fn standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// The cluster shared by every test of this binary (tests must not kill its nodes; start
/// their own [`RedisCluster`] for that).
///
/// # Panics
/// When the cluster does not come up.
pub fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// Whether something accepts TCP connections on `addr` now.
#[must_use]
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}
