//! The escape corpus: every attempt must be contained.

use super::*;

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
    let (base, slots) = (cfg.uid_base, cfg.sandbox_slots() as u32);
    let svc = service_with(cfg).await;
    let code = "from posix import system\nsystem(\"id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; hostname; cat /proc/self/cgroup | head -1\")\n";
    let r = svc.execute("u", py(code)).await.unwrap();
    let out = text(&r.stdout);
    assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
    // A pooled run has the uid of the pooled sandbox's slot.
    let uid: u32 = out
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("uid");
    assert!(
        (base..base + slots).contains(&uid),
        "runs as a slot's uid: {out}"
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

/// The corpus's file-system, network and process checks in pre-started Node and Bash
/// sandboxes (their `/box` is a host directory bound read-only).
#[tokio::test]
async fn pooled_node_and_bash_sandboxes_contain_escapes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let svc = service().await;
    let bash = format!(
        r#"for p in /box/main.sh /box/x /usr/umcp_escape_test /umcp_escape_test /etc/passwd; do
  if (echo x > "$p") 2>/dev/null; then echo "WROTE $p"; else echo "denied $p"; fi
done
mount -o remount,rw /usr 2>/dev/null && echo REMOUNTED || echo "remount denied"
(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo CONNECTED || echo "connect denied"
pids=(/proc/[0-9]*); echo "${{#pids[@]}}"
env | grep -c -i -e secret -e cargo -e rust
"#
    );
    let hits = svc.warm_hits(Language::Bash);
    let r = svc
        .execute("u", input(Language::Bash, &bash))
        .await
        .unwrap();
    assert_eq!(svc.warm_hits(Language::Bash), hits + 1, "ran pooled");
    let out = text(&r.stdout);
    assert!(
        !out.contains("WROTE") && !out.contains("REMOUNTED"),
        "{out}"
    );
    assert!(
        out.contains("denied /box/main.sh") && out.contains("remount denied"),
        "{out}"
    );
    assert!(out.contains("connect denied"), "{out}");
    assert!(
        out.ends_with("connect denied\n1\n0\n"),
        "one process, no host variables: {out}"
    );

    let node = format!(
        r#"const fs = require('fs');
for (const p of ['/box/main.js', '/box/x', '/usr/umcp_escape_test', '/etc/passwd']) {{
  try {{ fs.writeFileSync(p, 'x'); console.log('WROTE', p); }} catch (e) {{ console.log('denied', p, e.code); }}
}}
console.log('loader', fs.existsSync('/box/.umcp-loader.js'), fs.readdirSync('/box'));
const s = require('net').connect({port}, '127.0.0.1');
s.on('connect', () => {{ console.log('CONNECTED'); process.exit(0); }});
s.on('error', (e) => console.log('connect', e.code));
console.log(fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).length);
"#
    );
    let hits = svc.warm_hits(Language::JavaScript);
    let r = svc
        .execute("u", input(Language::JavaScript, &node))
        .await
        .unwrap();
    assert_eq!(svc.warm_hits(Language::JavaScript), hits + 1, "ran pooled");
    let out = text(&r.stdout);
    assert!(
        !out.contains("WROTE") && !out.contains("CONNECTED"),
        "{out}\n{}",
        text(&r.stderr)
    );
    assert!(out.contains("denied /box/main.js EROFS"), "{out}");
    assert!(out.contains("loader false [ 'main.js' ]"), "{out}");
    assert!(out.contains("connect EPERM"), "{out}");
    assert!(
        listener.accept().is_err(),
        "the host listener saw no connection"
    );
    assert!(!Path::new("/usr/umcp_escape_test").exists());
}
