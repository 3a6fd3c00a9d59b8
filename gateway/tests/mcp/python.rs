//! The official MCP Python SDK (`mcp`, pinned in scripts/requirements-test.txt, installed into
//! `.venv` by `make venv`) as the client of the whole mesh: `tests/python/mcp/test_http.py`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use umcp_proto::auth::v1 as pb;

use super::audited::{McpMesh, start, user};
use crate::audit::{ADMIN_PW, login};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `.venv/bin/python` when it can import the SDK; `None` (and a loud line) when the venv does
/// not exist at all; a failure when the venv exists without the SDK (run `make venv`).
fn python() -> Option<PathBuf> {
    let python = repo().join(".venv/bin/python");
    if !python.exists() {
        eprintln!("SKIPPED: {} missing (run `make venv`)", python.display());
        return None;
    }
    let probe = std::process::Command::new(&python)
        .args(["-c", "import mcp.client.streamable_http"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "the MCP Python SDK is not installed in .venv: run `make venv`"
    );
    Some(python)
}

/// Runs `script` with `env`; its output is printed, a non-zero exit fails the test.
pub(crate) async fn run_script(python: &Path, script: &str, env: &[(&str, String)]) {
    let mut command = tokio::process::Command::new(python);
    command
        .arg(repo().join("tests/python/mcp").join(script))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the Python SDK test did not finish within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_drives_mcp_over_http() {
    let Some(python) = python() else { return };
    let McpMesh { mesh, mcp } = start().await;
    let admin = login(mesh.gateway.channel(), "admin", ADMIN_PW, "py-setup").await;
    let viewer = user(&mesh, &admin, "py-viewer", pb::Role::Viewer).await;
    let env = [
        (
            "UMCP_MCP_URL",
            format!("http://127.0.0.1:{}/mcp", mcp.addr.port()),
        ),
        ("UMCP_ADMIN_TOKEN", admin),
        ("UMCP_VIEWER_TOKEN", viewer),
    ];
    run_script(&python, "test_http.py", &env).await;
}
