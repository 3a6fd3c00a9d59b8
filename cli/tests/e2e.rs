//! The built `umcp` binary against the real mesh (started once in this process, see `mesh`):
//! exit codes, `--json` output, the credential store's modes, a stored login refreshing itself
//! after its access token expired, and clear errors for bad input.

mod mesh;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh::{ACCESS_TTL_SECS, ADMIN_PW, User, gateway};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn stored(user: &User) -> serde_json::Value {
    let text = std::fs::read_to_string(user.credentials()).expect("credentials file");
    serde_json::from_str(&text).expect("credentials JSON")
}

fn stored_login(user: &User) -> serde_json::Value {
    let endpoint = format!("http://{}", gateway());
    stored(user)["logins"][endpoint].clone()
}

#[test]
fn login_whoami_logout_with_a_private_store() {
    let user = User::new();
    let run = user.run(
        &["login", "-u", "admin", "--password-stdin"],
        "wrong password\n",
    );
    assert_eq!(run.code, 4, "a wrong password is UNAUTHENTICATED: {run:?}");
    assert!(
        run.stderr.contains("check the username and password"),
        "{run:?}"
    );

    user.login("admin", ADMIN_PW);
    assert_eq!(mode(&user.credentials()), 0o600);
    assert_eq!(mode(user.credentials().parent().unwrap()), 0o700);

    let me = user.run(&["whoami", "--json"], "");
    assert_eq!(me.code, 0, "{me:?}");
    let me = me.json();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["roles"][0], "ROLE_ADMIN");
    assert_eq!(me["authMethod"], "password");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "system:admin")
    );

    let out = user.run(&["logout", "--json"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["revoked"], true);
    let after = user.run(&["whoami"], "");
    assert_eq!(after.code, 4, "{after:?}");
    assert!(after.stderr.contains("run `umcp login`"), "{after:?}");
    assert!(stored_login(&user).is_null(), "logout forgets the login");
}

#[test]
fn a_stored_login_refreshes_itself_after_the_access_token_expired() {
    let user = User::new();
    user.login("admin", ADMIN_PW);
    let first = stored_login(&user);
    let old_access = first["access_token"].as_str().unwrap().to_owned();
    let expires_at = first["access_expires_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires_at <= now + ACCESS_TTL_SECS + 1);
    // Past the real expiry (plus a second for the verifier's clock), not just the CLI's margin.
    std::thread::sleep(Duration::from_secs(expires_at.saturating_sub(now) + 2));

    let expired = user.run(&["whoami"], "");
    let mut with_old = user.command(&["whoami"]);
    with_old.env("UMCP_TOKEN", &old_access);
    let refused = user.run_command(with_old, "");
    assert_eq!(
        refused.code, 4,
        "the old access token has expired: {refused:?}"
    );

    assert_eq!(expired.code, 0, "the stored login refreshed: {expired:?}");
    let second = stored_login(&user);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(
        second["refresh_token"], first["refresh_token"],
        "refresh tokens rotate"
    );
    assert_eq!(
        mode(&user.credentials()),
        0o600,
        "still private after the rewrite"
    );
    let me = user.run(&["whoami", "--json"], "");
    assert_eq!(me.json()["authMethod"], "refresh");
}

/// Refresh tokens rotate, and presenting a rotated one revokes the whole login: parallel runs
/// that all find the access token stale must refresh once between them (the store's lock).
#[test]
fn parallel_runs_with_a_stale_token_refresh_once_and_keep_the_login() {
    let user = User::new();
    user.login("admin", ADMIN_PW);
    let mut file = stored(&user);
    let endpoint = format!("http://{}", gateway());
    file["logins"][&endpoint]["access_expires_at"] = serde_json::json!(0);
    std::fs::write(user.credentials(), file.to_string()).unwrap();
    let before = stored_login(&user)["refresh_token"].clone();

    let children: Vec<_> = (0..4)
        .map(|_| user.command(&["whoami", "--json"]).spawn().unwrap())
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let after = stored_login(&user);
    assert_ne!(after["refresh_token"], before, "refreshed");
    let again = user.run(&["whoami"], "");
    assert_eq!(again.code, 0, "the login survived: {again:?}");
}

#[test]
fn exec_streams_output_and_exits_with_the_programs_code() {
    let user = User::new();
    user.login("admin", ADMIN_PW);
    let program = user.file(
        "fail.py",
        "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n",
    );
    let run = user.run(&["exec", program.to_str().unwrap()], "");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "to stdout\n");
    assert!(run.stderr.contains("to stderr"), "{run:?}");

    let json = user.run(&["exec", "--json", program.to_str().unwrap()], "");
    assert_eq!(json.code, 3, "{json:?}");
    let result = json.json();
    assert_eq!(result["status"], "RUN_STATUS_RUNTIME_ERROR");
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["stdout"], "to stdout\n");

    let stdin = user.run(
        &["exec", "-", "--lang", "bash", "--", "a b"],
        "echo \"arg=$1\"\n",
    );
    assert_eq!(
        (stdin.code, stdin.stdout.as_str()),
        (0, "arg=a b\n"),
        "{stdin:?}"
    );

    // The first line arrives while the program is still running.
    let slow = user.file(
        "slow.py",
        "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')\n",
    );
    let mut child = user
        .command(&["exec", slow.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line came only when the program ended"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(60));

    let missing = user.run(&["exec", "nope.py"], "");
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(
        missing.stderr.contains("cannot read nope.py"),
        "{missing:?}"
    );
    let unknown = user.run(&["exec", "-"], "echo hi\n");
    assert_eq!(unknown.code, 3, "{unknown:?}");
    assert!(unknown.stderr.contains("--lang"), "{unknown:?}");
}

#[test]
fn graph_upsert_query_metrics_delete() {
    let user = User::new();
    user.login("admin", ADMIN_PW);
    let file = user.file(
        "graph.json",
        r#"{"nodes": [{"key": "cli_a", "labels": ["CliNode"], "properties": {"n": 9007199254740993}},
                      {"key": "cli_b", "labels": ["CliNode"]}],
            "relationships": [{"start": "cli_a", "type": "CLI_LINK", "end": "cli_b"}]}"#,
    );
    let up = user.run(&["graph", "upsert", "--json", file.to_str().unwrap()], "");
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(up.json()["nodesCreated"], 2);
    assert_eq!(up.json()["relationshipsCreated"], 1);

    let query = user.run(
        &[
            "graph",
            "query",
            "--json",
            "-p",
            "k=cli_a",
            "MATCH (n:CliNode {key: $k}) RETURN n.n AS n",
        ],
        "",
    );
    assert_eq!(query.code, 0, "{query:?}");
    let rows = query.json();
    assert_eq!(rows["columns"][0], "n");
    assert_eq!(
        rows["rows"][0][0], 9_007_199_254_740_993_i64,
        "integers stay exact"
    );
    let table = user.run(
        &[
            "graph",
            "query",
            "MATCH (n:CliNode) RETURN n.key AS key ORDER BY key",
        ],
        "",
    );
    assert_eq!(table.code, 0, "{table:?}");
    assert_eq!(table.stdout, "key\ncli_a\ncli_b\n");

    let metrics = user.run(&["graph", "metrics", "--json"], "");
    assert_eq!(metrics.code, 0, "{metrics:?}");
    assert!(metrics.json()["labelCounts"]["CliNode"].as_u64().unwrap() >= 2);

    let write = user.run(&["graph", "query", "CREATE (n:X) RETURN n"], "");
    assert_eq!(
        write.code, 5,
        "writes in a query are PERMISSION_DENIED: {write:?}"
    );
    let connected = user.run(&["graph", "delete", "--node", "cli_a"], "");
    assert_eq!(
        connected.code, 6,
        "a connected node needs --detach: {connected:?}"
    );
    let gone = user.run(
        &[
            "graph", "delete", "--json", "--detach", "-n", "cli_a", "-n", "cli_b",
        ],
        "",
    );
    assert_eq!(gone.code, 0, "{gone:?}");
    assert_eq!(gone.json()["nodesDeleted"], 2);

    let bad = user.file("bad.json", "{\"nodes\": [");
    let run = user.run(&["graph", "upsert", bad.to_str().unwrap()], "");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("is not valid JSON"), "{run:?}");
    let shape = user.file("shape.json", r#"{"nodes": [{"labels": ["L"]}]}"#);
    let run = user.run(&["graph", "upsert", shape.to_str().unwrap()], "");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("nodes[0].key is missing"), "{run:?}");
    let run = user.run(&["graph", "upsert", "missing.json"], "");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("cannot read missing.json"), "{run:?}");
}

#[test]
fn lint_test_and_gen() {
    let user = User::new();
    user.login("admin", ADMIN_PW);
    let dirty = user.file("dirty.py", "import os\n");
    let lint = user.run(&["lint", "--json", dirty.to_str().unwrap()], "");
    assert_eq!(lint.code, 1, "an unused import is a finding: {lint:?}");
    assert_eq!(lint.json()["diagnostics"][0]["code"], "F401");
    let clean = user.file("clean.py", "print(1)\n");
    let lint = user.run(&["lint", clean.to_str().unwrap()], "");
    assert_eq!(lint.code, 0, "{lint:?}");

    let module = user.file("calc.py", "def add(a, b):\n    return a + b\n");
    let good = user.file(
        "test_calc.py",
        "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    );
    let run = user.run(
        &[
            "test",
            "--json",
            "-m",
            module.to_str().unwrap(),
            good.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["passed"], 1);
    let bad = user.file(
        "test_bad.py",
        "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 4\n",
    );
    let run = user.run(
        &[
            "test",
            "-m",
            module.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("0 passed, 1 failed"), "{run:?}");

    let template = user.file("hello.j2", "hello {{ name }} x{{ n + 1 }}");
    let run = user.run(
        &[
            "gen",
            template.to_str().unwrap(),
            "--set",
            "name=world",
            "--set",
            "n=41",
        ],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "hello world x42"),
        "{run:?}"
    );
    let context = user.file("ctx.json", "[1, 2]");
    let run = user.run(
        &[
            "gen",
            template.to_str().unwrap(),
            "-c",
            context.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("must be a JSON object"), "{run:?}");
}

#[test]
fn users_keys_and_what_each_role_may_do() {
    let admin = User::new();
    admin.login("admin", ADMIN_PW);
    let created = admin.run(
        &[
            "users",
            "create",
            "cli_dev",
            "--role",
            "developer",
            "--password-stdin",
            "--json",
        ],
        "cli developer password\n",
    );
    assert_eq!(created.code, 0, "{created:?}");
    assert_eq!(created.json()["roles"][0], "ROLE_DEVELOPER");
    let list = admin.run(&["users", "list", "--json"], "");
    assert!(
        list.json()["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "cli_dev")
    );

    let dev = User::new();
    dev.login("cli_dev", "cli developer password");
    let file = dev.file("g.json", r#"{"nodes": [{"key": "cli_dev_node"}]}"#);
    let denied = dev.run(&["graph", "upsert", file.to_str().unwrap()], "");
    assert_eq!(denied.code, 5, "{denied:?}");
    assert!(denied.stderr.contains("PERMISSION_DENIED"), "{denied:?}");
    assert!(
        denied.stderr.contains("umcp whoami"),
        "the hint says what to do: {denied:?}"
    );
    let audit = dev.run(&["audit", "verify"], "");
    assert_eq!(audit.code, 5, "{audit:?}");

    // An API key for scripts: exchanged per run, refused once revoked.
    let key = dev.run(&["keys", "create", "ci"], "");
    assert_eq!(key.code, 0, "{key:?}");
    let secret = key.stdout.trim().to_owned();
    assert!(secret.starts_with("umcp_"), "{key:?}");
    let script = User::new();
    let mut whoami = script.command(&["whoami", "--json"]);
    whoami.env("UMCP_API_KEY", &secret);
    let me = script.run_command(whoami, "");
    assert_eq!(me.code, 0, "{me:?}");
    assert_eq!(me.json()["authMethod"], "api_key");
    assert_eq!(me.json()["roles"], serde_json::json!(["ROLE_DEVELOPER"]));
    let keys = dev.run(&["keys", "list", "--json"], "");
    let listed = keys.json()["keys"].as_array().unwrap().clone();
    let id = listed.iter().find(|k| k["name"] == "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(dev.run(&["keys", "revoke", &id], "").code, 0);
    let mut again = script.command(&["whoami"]);
    again.env("UMCP_TOKEN", &secret);
    let refused = script.run_command(again, "");
    assert_eq!(refused.code, 4, "a revoked key is refused: {refused:?}");

    let roles = admin.run(
        &[
            "users",
            "set-roles",
            "cli_dev",
            "--role",
            "viewer",
            "--json",
        ],
        "",
    );
    assert_eq!(
        roles.json()["roles"],
        serde_json::json!(["ROLE_VIEWER"]),
        "{roles:?}"
    );
    let disabled = admin.run(&["users", "disable", "cli_dev", "--json"], "");
    assert_eq!(disabled.json()["disabled"], true, "{disabled:?}");
    let unknown = admin.run(&["users", "disable", "nobody_here"], "");
    assert_eq!(unknown.code, 3, "{unknown:?}");
}

#[test]
fn audit_query_tail_and_verify() {
    let admin = User::new();
    admin.login("admin", ADMIN_PW);
    let failed = User::new().run(&["login", "-u", "admin", "--password-stdin"], "not it\n");
    assert_eq!(failed.code, 4);
    // Producers batch: the event is committed within moments.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let run = admin.run(
            &[
                "audit",
                "query",
                "--json",
                "--type",
                "auth_failure",
                "--limit",
                "5",
            ],
            "",
        );
        assert_eq!(run.code, 0, "{run:?}");
        if !run.json()["events"].as_array().unwrap().is_empty() {
            assert_eq!(
                run.json()["events"][0]["eventType"],
                "EVENT_TYPE_AUTH_FAILURE"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no auth_failure event: {run:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = admin.run(&["audit", "query", "--limit", "3"], "");
    assert!(table.stdout.starts_with("SEQ"), "{table:?}");
    let verify = admin.run(&["audit", "verify"], "");
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.starts_with("ok: "), "{verify:?}");
    let tail = admin.run(
        &["audit", "tail", "--json", "--after", "1", "--count", "2"],
        "",
    );
    assert_eq!(tail.code, 0, "{tail:?}");
    let lines: Vec<serde_json::Value> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{tail:?}");
    assert!(lines[0]["sequence"].as_u64() < lines[1]["sequence"].as_u64());
    let bad = admin.run(&["audit", "query", "--type", "nonsense"], "");
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn usage_unreachable_endpoints_and_completions() {
    let user = User::new();
    let mut far = user.command(&["whoami", "--token", "x"]);
    far.env("UMCP_ENDPOINT", "127.0.0.1:1");
    let run = user.run_command(far, "");
    assert_eq!(run.code, 7, "{run:?}");
    assert!(
        run.stderr.contains("UNAVAILABLE") && run.stderr.contains("http://127.0.0.1:1"),
        "{run:?}"
    );
    let run = user.run(&["whoami"], "");
    assert_eq!(run.code, 4, "never logged in: {run:?}");
    let run = user.run(&["graph", "frobnicate"], "");
    assert_eq!(run.code, 2, "{run:?}");
    let run = user.run(
        &[
            "login",
            "--endpoint",
            "https://gw:443",
            "-u",
            "a",
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("plaintext"), "{run:?}");
    let run = user.run(&["completions", "bash"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("umcp"), "{run:?}");
}
