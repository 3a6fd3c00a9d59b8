#!/usr/bin/env python3
"""Copies the auth service's bootstrap service API key into the umcp-service-key Secret.

Runs beside umcp-auth in its pod (k8s/base/auth.yaml). The auth service writes the key of its
`mesh-services` account to KEY_FILE on first start (UMCP_BOOTSTRAP_SERVICE_KEY_FILE); this loop
waits for the file and makes the Secret's `api-key` equal to it, then keeps checking, so a
deleted or edited Secret is put back. It may only get and patch that one Secret (Role
umcp-service-key-publisher). The key is never logged.

Environment: KEY_FILE (default /var/lib/umcp/data/service-key/api-key), SECRET_NAME (default
umcp-service-key), INTERVAL_SECS (default 10), KUBERNETES_API_URL (default
https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT), TOKEN_DIR (default
/var/run/secrets/kubernetes.io/serviceaccount: token, ca.crt, namespace).
"""

import base64
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request

KEY_FILE = os.environ.get("KEY_FILE", "/var/lib/umcp/data/service-key/api-key")
SECRET_NAME = os.environ.get("SECRET_NAME", "umcp-service-key")
INTERVAL_SECS = float(os.environ.get("INTERVAL_SECS", "10"))
TOKEN_DIR = os.environ.get("TOKEN_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
SECRET_KEY = "api-key"


def log(level, message, **fields):
    """One JSON line, like the umcp processes' container logs."""
    print(json.dumps({"level": level, "message": message, **fields}), flush=True)


def api_url():
    url = os.environ.get("KUBERNETES_API_URL")
    if url:
        return url.rstrip("/")
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def request(method, path, body=None):
    """Calls the API server with the pod's (rotated, so re-read) token; returns the JSON answer."""
    headers = {"Authorization": "Bearer " + read(os.path.join(TOKEN_DIR, "token")), "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/merge-patch+json"
    context = None
    ca = os.path.join(TOKEN_DIR, "ca.crt")
    if os.path.exists(ca):
        context = ssl.create_default_context(cafile=ca)
    req = urllib.request.Request(api_url() + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10, context=context) as answer:
        return json.load(answer)


def sync_once(namespace):
    """Returns 'waiting', 'current' or 'published'."""
    try:
        key = read(KEY_FILE)
    except FileNotFoundError:
        return "waiting"
    if not key:
        return "waiting"
    wanted = base64.b64encode(key.encode()).decode()
    path = f"/api/v1/namespaces/{namespace}/secrets/{SECRET_NAME}"
    secret = request("GET", path)
    if (secret.get("data") or {}).get(SECRET_KEY) == wanted:
        return "current"
    request("PATCH", path, {"data": {SECRET_KEY: wanted}})
    return "published"


def main():
    # PID 1 ignores SIGTERM unless it handles it: stop at once when the pod stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    namespace = read(os.path.join(TOKEN_DIR, "namespace"))
    last = None
    while True:
        try:
            state = sync_once(namespace)
            if state != last:
                if state == "waiting":
                    log("info", "waiting for the auth service to write the service key", file=KEY_FILE)
                elif state == "published":
                    log("info", "service key published", secret=SECRET_NAME)
                else:
                    log("info", "service key secret is current", secret=SECRET_NAME)
            last = state
        except urllib.error.HTTPError as e:
            # 404: the overlay's Secret template was not applied; 403: the Role is missing.
            log("error", "kubernetes api refused the secret update", secret=SECRET_NAME, status=e.code)
            last = None
        except (OSError, ValueError) as e:
            log("error", "cannot publish the service key", secret=SECRET_NAME, error=type(e).__name__)
            last = None
        time.sleep(INTERVAL_SECS)


if __name__ == "__main__":
    main()
