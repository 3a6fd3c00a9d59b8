//! A real Neo4j 5.26 for tests: Neo4j's own test harness (`org.neo4j.test:neo4j-harness`) in
//! a JVM, behind the launcher in `tools/neo4j-launcher` (built into `.tools/neo4j-launcher/` by
//! `make neo4j` / `scripts/install-tools.sh neo4j`, or here on first use when Maven is present).
//!
//! [`shared`] starts one DBMS per test binary and keeps it until the process exits; tests that
//! kill the server start their own with [`Neo4j::start`]. The launcher stops its DBMS when its
//! stdin closes, so no JVM outlives the test process, even when that process is killed.
//!
//! The harness runs WITHOUT authentication (any user and password are accepted): it is a test
//! fixture, never a model of a production server, which always authenticates.
//!
//! Settings: `UMCP_JAVA` (default `java` on `PATH`), `UMCP_NEO4J_LAUNCHER` (the launcher
//! directory, default `<workspace>/.tools/neo4j-launcher`), `UMCP_NEO4J_HEAP` (the JVM's `-Xmx`,
//! default `512m`). Everything here is blocking: call it at the start of a test.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the DBMS may take to accept Bolt connections (a cold JVM on a loaded 2-core
/// machine takes 10-20 s).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Heap of the JVM unless `UMCP_NEO4J_HEAP` says otherwise.
const DEFAULT_HEAP: &str = "512m";

/// The launcher's main class.
const MAIN_CLASS: &str = "dev.umcp.neo4jlauncher.Launcher";

fn java() -> String {
    std::env::var("UMCP_JAVA").unwrap_or_else(|_| "java".to_owned())
}

fn workspace_root() -> PathBuf {
    // shared/testkit → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn launcher_dir() -> PathBuf {
    std::env::var_os("UMCP_NEO4J_LAUNCHER").map_or_else(
        || workspace_root().join(".tools/neo4j-launcher"),
        PathBuf::from,
    )
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why Neo4j cannot run here, or `None` when it can. Builds the launcher first when it is
/// missing and Java and Maven are present.
///
/// # Panics
/// When Java and Maven are present but building the launcher fails (a real failure, not a
/// missing tool).
#[must_use]
pub fn unavailable_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(check_or_build).clone()
}

fn check_or_build() -> Option<String> {
    if !runs(&java(), "-version") {
        return Some(format!(
            "`{}` is missing (install a Java 17 runtime or set UMCP_JAVA)",
            java()
        ));
    }
    let jar = launcher_dir().join("neo4j-launcher.jar");
    if jar.is_file() {
        return None;
    }
    if std::env::var_os("UMCP_NEO4J_LAUNCHER").is_some() {
        return Some(format!("UMCP_NEO4J_LAUNCHER has no {}", jar.display()));
    }
    if !runs("mvn", "-v") {
        return Some(format!(
            "the launcher {} is not built and `mvn` is missing (install Maven, then `make neo4j`)",
            jar.display()
        ));
    }
    eprintln!("neo4j: building the launcher (scripts/install-tools.sh neo4j)…");
    let status = Command::new(workspace_root().join("scripts/install-tools.sh"))
        .arg("neo4j")
        .status()
        .expect("run scripts/install-tools.sh neo4j");
    assert!(
        status.success() && jar.is_file(),
        "scripts/install-tools.sh neo4j failed ({status}); Java and Maven are present, so this is a real failure"
    );
    None
}

/// The DBMS shared by every test of this binary, or `None` (after printing why) when Java or
/// the launcher (and Maven to build it) is missing. Tests must not kill it.
///
/// # Panics
/// When the tools are present but the DBMS does not start.
pub fn shared() -> Option<&'static Neo4j> {
    static SHARED: OnceLock<Option<Neo4j>> = OnceLock::new();
    SHARED
        .get_or_init(|| match unavailable_reason() {
            Some(why) => {
                eprintln!("neo4j: SKIPPED, {why}");
                None
            }
            None => Some(Neo4j::start()),
        })
        .as_ref()
}

/// One Neo4j DBMS in its own JVM, listening for Bolt on a loopback port. Stopped when dropped.
#[derive(Debug)]
pub struct Neo4j {
    port: u16,
    uri: String,
    running: Option<Running>,
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Running {
    child: Child,
    /// Closing it stops the DBMS (see the module docs).
    stdin: Option<ChildStdin>,
}

impl Neo4j {
    /// Starts a DBMS on a free loopback port and returns once it accepts Bolt connections.
    ///
    /// # Panics
    /// When Java or the launcher is missing (check [`unavailable_reason`] first) or the DBMS
    /// does not come up within 3 minutes.
    #[must_use]
    pub fn start() -> Self {
        if let Some(why) = unavailable_reason() {
            panic!("neo4j cannot start: {why}");
        }
        let dir = tempfile::tempdir().expect("neo4j temp dir");
        let port = crate::free_port();
        let (running, uri) = spawn(port, dir.path(), 0).unwrap_or_else(|e| panic!("{e}"));
        Self {
            port,
            uri,
            running: Some(running),
            dir,
        }
    }

    /// The Bolt URI, `bolt://127.0.0.1:<port>`.
    #[must_use]
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The Bolt port (the same across [`Neo4j::restart`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the JVM is running (not killed).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Kills the JVM at once (SIGKILL), as a crash would: open connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            running.stdin.take();
            let _ = running.child.wait();
        }
    }

    /// Starts the DBMS again on the same port, with an EMPTY database (the harness keeps no
    /// state across starts). Kills the running one first.
    ///
    /// # Panics
    /// When it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        static GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The killed JVM's port can take a moment to be free again: retry a few times.
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            match spawn(self.port, self.dir.path(), generation * 10 + attempt) {
                Ok((running, uri)) => {
                    self.running = Some(running);
                    self.uri = uri;
                    return;
                }
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }
}

impl Drop for Neo4j {
    fn drop(&mut self) {
        self.kill();
    }
}

fn heap() -> String {
    std::env::var("UMCP_NEO4J_HEAP").unwrap_or_else(|_| DEFAULT_HEAP.to_owned())
}

/// Starts the launcher and waits for its `bolt <uri>` line. Its stderr goes to a log file in
/// `dir`, returned in the error when it fails to start.
fn spawn(port: u16, dir: &Path, generation: u32) -> Result<(Running, String), String> {
    let launcher = launcher_dir();
    let classpath = format!(
        "{}:{}",
        launcher.join("neo4j-launcher.jar").display(),
        launcher.join("lib/*").display()
    );
    let work = dir.join(format!("db-{generation}"));
    let log = dir.join(format!("neo4j-{generation}.log"));
    let stderr = std::fs::File::create(&log).expect("neo4j log file");
    let started = Instant::now();
    let mut child = Command::new(java())
        .arg(format!("-Xmx{}", heap()))
        .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp"])
        .arg(&classpath)
        .arg(MAIN_CLASS)
        .arg(port.to_string())
        .arg(&work)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the neo4j launcher");
    let stdout = child.stdout.take().expect("launcher stdout");
    let (tx, rx) = mpsc::channel();
    // Reads the ready line, then drains stdout for the JVM's lifetime so it never blocks on a
    // full pipe.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if let Some(uri) = line.trim().strip_prefix("bolt ") {
                        let _ = tx.send(uri.trim_end_matches('/').to_owned());
                        break;
                    }
                }
            }
        }
        let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
    });
    let uri = match rx.recv_timeout(START_TIMEOUT) {
        Ok(uri) => uri,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let start = tail.len().saturating_sub(4000);
            let tail = tail.get(start..).unwrap_or(&tail);
            return Err(format!(
                "neo4j did not start on port {port}; its log:\n{tail}"
            ));
        }
    };
    eprintln!(
        "neo4j: {uri} up in {:.1}s (heap {}, no authentication: test harness)",
        started.elapsed().as_secs_f64(),
        heap()
    );
    let stdin = child.stdin.take();
    Ok((Running { child, stdin }, uri))
}
