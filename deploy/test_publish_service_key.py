"""k8s/base/publish-service-key.py against a fake Kubernetes API (run by make deploy-check).

The fake keeps one Secret and records every request, so the tests see what the publisher asks
for: a GET, and a merge PATCH of only `data.api-key`, with the pod's current token.
"""

import base64
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "k8s" / "base" / "publish-service-key.py"
SECRET_PATH = "/api/v1/namespaces/umcp/secrets/umcp-service-key"


class FakeApi:
    def __init__(self):
        self.secret = {"metadata": {"name": "umcp-service-key"}, "type": "Opaque"}
        self.requests = []
        self.exists = True
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def answer(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                api.requests.append(("GET", self.path, self.headers.get("Authorization"), None))
                if self.path != SECRET_PATH or not api.exists:
                    return self.answer(404, {"kind": "Status", "code": 404})
                self.answer(200, api.secret)

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(("PATCH", self.path, self.headers.get("Authorization"), body))
                assert self.headers["Content-Type"] == "application/merge-patch+json"
                api.secret.setdefault("data", {}).update(body["data"])
                self.answer(200, api.secret)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def env(tmp_path, monkeypatch):
    api = FakeApi()
    tokens = tmp_path / "sa"
    tokens.mkdir()
    (tokens / "token").write_text("token-1\n")
    (tokens / "namespace").write_text("umcp")
    key_file = tmp_path / "data" / "service-key" / "api-key"
    monkeypatch.setenv("KUBERNETES_API_URL", api.url)
    monkeypatch.setenv("TOKEN_DIR", str(tokens))
    monkeypatch.setenv("KEY_FILE", str(key_file))
    spec = importlib.util.spec_from_file_location("publish_service_key", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, api, key_file, tokens
    api.server.shutdown()


def test_waits_for_the_key_file_without_calling_the_api(env):
    module, api, _, _ = env
    assert module.sync_once("umcp") == "waiting"
    assert api.requests == []


def test_publishes_the_key_once_then_leaves_it(env):
    module, api, key_file, _ = env
    key_file.parent.mkdir(parents=True)
    key_file.write_text("umcp_sk_example\n")
    assert module.sync_once("umcp") == "published"
    assert api.secret["data"]["api-key"] == base64.b64encode(b"umcp_sk_example").decode()
    patch = [r for r in api.requests if r[0] == "PATCH"]
    assert patch == [("PATCH", SECRET_PATH, "Bearer token-1", {"data": {"api-key": api.secret["data"]["api-key"]}})]
    assert module.sync_once("umcp") == "current"
    assert [r[0] for r in api.requests] == ["GET", "PATCH", "GET"]


def test_an_edited_secret_is_put_back_with_the_rotated_token(env):
    module, api, key_file, tokens = env
    key_file.parent.mkdir(parents=True)
    key_file.write_text("umcp_sk_example\n")
    module.sync_once("umcp")
    api.secret["data"]["api-key"] = base64.b64encode(b"tampered").decode()
    (tokens / "token").write_text("token-2\n")
    assert module.sync_once("umcp") == "published"
    assert api.requests[-1][2] == "Bearer token-2"
    assert api.secret["data"]["api-key"] == base64.b64encode(b"umcp_sk_example").decode()


def test_a_missing_secret_is_an_http_error_not_a_create(env):
    module, api, key_file, _ = env
    key_file.parent.mkdir(parents=True)
    key_file.write_text("umcp_sk_example\n")
    api.exists = False
    with pytest.raises(module.urllib.error.HTTPError) as e:
        module.sync_once("umcp")
    assert e.value.code == 404
    assert [r[0] for r in api.requests] == ["GET"]


def test_the_running_loop_publishes_logs_json_and_never_the_key(env):
    _, api, key_file, _ = env
    key_file.parent.mkdir(parents=True)
    key_file.write_text("umcp_sk_secret_value\n")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        env={**os.environ, "INTERVAL_SECS": "0.05"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while "data" not in api.secret and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, "SIGTERM stops it cleanly"
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message"] for line in lines] == ["service key published", "service key secret is current"]
    assert "umcp_sk_secret_value" not in out
