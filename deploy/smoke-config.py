#!/usr/bin/env python3
"""Starts each umcp binary with the environment a rendered overlay gives its container.

    smoke-config.py RENDERED.yaml BIN_DIR            (scripts/deploy-check.sh smoke)
    smoke-config.py --compose CONFIG.yaml BIN_DIR    (`docker-compose config` output)

For every umcp workload: the ConfigMap (envFrom) and env values of its first container, secrets
decoded from the rendered Secret, paths under /var/lib/umcp/data and /var/run/umcp/service-key
moved into a scratch directory, listen addresses moved to 127.0.0.1:0 (nothing collides with a
running mesh). A process whose configuration is refused exits at once (code 78); one that is
still up after a few seconds accepted every value. Cluster names do not resolve here: the
processes log that and keep retrying, which is what they do in a cluster whose dependencies
are not up yet. The auth process must also have written the bootstrap service key (mode 0600),
which the auth pod's publisher copies into the Secret.
"""

import base64
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

UP_SECS = 4


def relocate(env, scratch):
    """Moves the container paths into the scratch directory and the listeners to port 0."""
    for k, v in env.items():
        for inside, outside in (
            ("/var/lib/umcp/data", "data"),
            ("/var/run/umcp/service-key", "service-key"),
            ("/var/lib/umcp/keys", "keys"),
        ):
            v = v.replace(inside, f"{scratch}/{outside}")
        env[k] = v
    env["UMCP_LISTEN"] = "127.0.0.1:0"
    if "UMCP_HTTP__LISTEN" in env:
        env["UMCP_HTTP__LISTEN"] = "127.0.0.1:0"
    return env


def container_env(doc, index, scratch):
    c = doc["spec"]["template"]["spec"]["containers"][0]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for source in c.get("envFrom", []):
        env.update(index[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        env[e["name"]] = base64.b64decode(index[("Secret", ref["name"])]["data"][ref["key"]]).decode()
    return c["command"][0], relocate(env, scratch)


def run(binary, env, scratch):
    """Returns (exit code, or None when still up after UP_SECS; output)."""
    proc = subprocess.Popen([binary], env=env, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return proc.wait(timeout=UP_SECS), proc.stdout.read()
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None, proc.stdout.read()


def k8s_processes(rendered):
    """(name, scratch -> (command, env)) of every umcp workload of a rendered overlay."""
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    index = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for doc in docs:
        part_of = doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")
        if doc["kind"] in ("Deployment", "StatefulSet") and part_of == "umcp":
            yield doc["metadata"]["name"], lambda scratch, doc=doc: container_env(doc, index, scratch)


def compose_processes(config):
    """The same for the umcp services of `docker-compose config` output."""
    for name, svc in yaml.safe_load(Path(config).read_text())["services"].items():
        if svc.get("image", "").startswith("umcp:"):
            env = {k: str(v) for k, v in svc.get("environment", {}).items()}
            env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
            yield name, lambda scratch, svc=svc, env=env: (svc["command"][0], relocate(dict(env), scratch))


def main(processes, what, bin_dir):
    problems = []
    started = 0
    for name, make_env in processes:
        with tempfile.TemporaryDirectory() as scratch:
            command, env = make_env(scratch)
            for key_dir in (Path(scratch, "service-key"), Path(scratch, "keys")):
                key_dir.mkdir()
            (Path(scratch, "service-key") / "api-key").write_text("umcp_smoke_key\n")
            if name != "auth":
                # Compose: auth writes this file into the shared volume before the others start.
                (Path(scratch, "keys") / "service-api-key.txt").write_text("umcp_smoke_key\n")
            if name in ("umcp-execution", "execution") and os.geteuid() != 0:
                # Without root the sandbox refuses to start; the config is what is checked here.
                env["UMCP_INSECURE_ALLOW_WEAK_SANDBOX"] = "true"
            code, out = run(os.path.join(bin_dir, command), env, scratch)
            started += 1
            if code is not None:
                why = "configuration refused" if code == 78 else "not a configuration error: a dependency?"
                problems.append(f"{name} exited at start with code {code} ({why}):\n{out[-2000:]}")
                continue
            bootstrap = env.get("UMCP_BOOTSTRAP_SERVICE_KEY_FILE")
            if bootstrap:
                path = Path(bootstrap)
                if not path.exists():
                    problems.append(f"{name} did not write the bootstrap service key {bootstrap}")
                elif stat.S_IMODE(path.stat().st_mode) != 0o600:
                    problems.append(f"{name} wrote {bootstrap} with mode {oct(path.stat().st_mode)}")
    for p in problems:
        print(f"smoke-config: {p}", file=sys.stderr)
    if problems or not started:
        return 1
    print(f"smoke-config: {started} processes accept the environment of {what}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compose":
        sys.exit(main(compose_processes(sys.argv[2]), "docker-compose.yml", sys.argv[3]))
    if len(sys.argv) == 3:
        sys.exit(main(k8s_processes(sys.argv[1]), Path(sys.argv[1]).name, sys.argv[2]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
