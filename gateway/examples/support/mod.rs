//! What the benchmarks share: the real release binaries as child processes, free ports, and a
//! token with the JWKS file that verifies it (so no auth service sits on the measured path —
//! verification is local in production too).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use umcp_authz::claims::{AuthMethod, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// A child process, killed and reaped when dropped.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release binary `name` (next to the example: `target/release/<name>`) with `env`.
pub(crate) fn spawn(name: &str, env: &[(&str, String)]) -> Proc {
    let exe = std::env::current_exe().expect("current exe");
    let bin: PathBuf = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join(name);
    let mut cmd = Command::new(&bin);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "start {} (build with `cargo build --release --bins`): {e}",
            bin.display()
        )
    }))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// Writes a JWKS to `jwks` and returns a one-hour token with `roles` it verifies.
pub(crate) fn mint(jwks: &Path, roles: &[&str]) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let doc = umcp_authz::keys::jwks_json(&[umcp_authz::keys::jwk("bench", &key.verifying_key())]);
    std::fs::write(jwks, doc).expect("write jwks");
    let now = umcp_authz::verifier::unix_now();
    let claims = Claims {
        iss: DEFAULT_ISSUER.into(),
        aud: DEFAULT_AUDIENCE.into(),
        sub: "bench".into(),
        name: "bench".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        jti: "bench-token".into(),
        sid: "bench-session".into(),
        amr: AuthMethod::Password,
        iat: now,
        nbf: now,
        exp: now + 3600,
    };
    umcp_authz::jws::sign(&claims, "bench", &key)
}

/// The peer a user would otherwise put in front of the services: nginx as a plain gRPC proxy
/// (`grpc_pass`, no authentication, no limits), listening on `port` and forwarding to
/// `upstream`, or `None` when nginx is not installed (`UMCP_NGINX`, default `/usr/sbin/nginx`;
/// `apt-get install nginx-light`).
// Only `bench_gateway` uses the peer; each example compiles this module on its own.
#[allow(dead_code)]
pub(crate) fn nginx(dir: &Path, port: u16, upstream: u16) -> Option<Nginx> {
    let bin = std::env::var("UMCP_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    if !Path::new(&bin).exists() {
        return None;
    }
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("logs")).expect("nginx dir");
    // Same shape as the gateway: one process per core, keep-alive HTTP/2 to the backend, and no
    // per-connection request cap (nginx closes a client connection after 1000 requests by
    // default, which the load generator would count as errors).
    let conf = format!(
        "worker_processes auto;\npid {root}/nginx.pid;\nerror_log {root}/logs/error.log error;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n\
           upstream graph {{ server 127.0.0.1:{upstream}; keepalive 32; keepalive_requests 1000000000; }}\n\
           server {{\n    listen 127.0.0.1:{port} http2;\n    http2_max_concurrent_streams 1024;\n\
             keepalive_requests 1000000000; keepalive_timeout 300s;\n\
             location / {{ grpc_pass grpc://graph; }}\n  }}\n}}\n",
        root = root.display()
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let child = Command::new(&bin)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Nginx {
        _master: Proc(child),
        stop: vec![
            bin,
            "-p".into(),
            root.display().to_string(),
            "-c".into(),
            path.display().to_string(),
            "-s".into(),
            "stop".into(),
        ],
    })
}

/// A running nginx: stopped with `nginx -s stop` when dropped, so its workers exit too (a
/// killed master leaves them running).
#[allow(dead_code)]
pub(crate) struct Nginx {
    _master: Proc,
    stop: Vec<String>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(&self.stop[0])
            .args(&self.stop[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
