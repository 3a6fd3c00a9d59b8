#!/usr/bin/env bash
# The operations side of every real binary: /healthz, /readyz and /metrics on each process's
# HTTP port (names, types, and counters that move when a call is made through the gateway),
# and no secret in any process's logs after a scenario (bootstrap password, access and refresh
# tokens, the service API key).
set -euo pipefail
cd "$(dirname "$0")/.."
GRPCURL=$(realpath "${GRPCURL:-.venv/bin/grpcurl}")
[ -x "$GRPCURL" ] || { echo "e2e-ops: $GRPCURL missing (run: make tools)" >&2; exit 1; }
source scripts/e2e-mesh.sh
start_mesh

login=$("$GRPCURL" -plaintext -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" \
  "127.0.0.1:$gw_port" umcp.auth.v1.AuthService/Login)
token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])' <<<"$login")
refresh=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["refreshToken"])' <<<"$login")
call() { # method, grpcurl flags...
  local method=$1; shift
  "$GRPCURL" -plaintext -H "authorization: Bearer $token" "$@" "127.0.0.1:$gw_port" "$method"
}

ports=$(for c in "${!ops_port[@]}"; do printf '%s=%s ' "$c" "${ops_port[$c]}"; done)
python3 - "$ports" "$work" <<'PY'
import sys, time, urllib.request
ports = dict(p.split("=") for p in sys.argv[1].split())
def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
failed = 0
def check(ok, what):
    global failed
    print(f"e2e-ops: {'ok  ' if ok else 'FAIL'} {what}")
    failed += 0 if ok else 1
for comp, port in sorted(ports.items()):
    check(get(port, "/healthz")[0] == 200, f"{comp} /healthz 200")
    for _ in range(50):
        status, body = get(port, "/readyz")
        if status == 200: break
        time.sleep(0.1)
    check(status == 200, f"{comp} /readyz 200 ({body.strip()})")
    status, text = get(port, "/metrics")
    for family, kind in [("umcp_rpc_requests", "counter"), ("umcp_rpc_duration_seconds", "histogram")]:
        check(status == 200 and f"# TYPE {family} {kind}" in text, f"{comp} /metrics has {family} ({kind})")
    extra = {"gateway": [("umcp_breaker_state", "gauge"), ("umcp_ratelimit_decisions", "counter"),
                         ("umcp_audit_client_spool_bytes", "gauge"), ("umcp_audit_client_events", "counter")],
             "graph": [("umcp_cache_hits", "counter"), ("umcp_cache_l1_bytes", "gauge"),
                       ("umcp_store_query_slots", "gauge"), ("umcp_store_query_admissions", "counter")]}
    for family, kind in extra.get(comp, []):
        check(f"# TYPE {family} {kind}" in text, f"{comp} /metrics has {family} ({kind})")
    open(f"{sys.argv[2]}/metrics.before.{comp}", "w").write(text)
sys.exit(1 if failed else 0)
PY

call umcp.graph.v1.GraphService/GetMetrics >/dev/null
call umcp.graph.v1.GraphService/GetMetrics >/dev/null
call umcp.graph.v1.GraphService/Query -d '{"cypher":"MATCH (n) RETURN count(n) AS c"}' >/dev/null
"$GRPCURL" -plaintext "127.0.0.1:$gw_port" umcp.graph.v1.GraphService/GetMetrics >/dev/null 2>&1 || true

python3 - "${ops_port[gateway]}" "${ops_port[graph]}" "$work" <<'PY'
import re, sys, urllib.request
gw, graph, work = sys.argv[1:4]
def count(text, component, code):
    pattern = (r'^umcp_rpc_requests_total\{component="%s",service="umcp\.graph\.v1\.GraphService",'
               r'method="GetMetrics",code="%s"\} (\S+)$') % (component, code)
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0
failed = 0
for comp, port, code, moved in [("gateway", gw, "OK", 2), ("graph", graph, "OK", 2),
                                ("gateway", gw, "UNAUTHENTICATED", 1)]:
    before = open(f"{work}/metrics.before.{comp}").read()
    after = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    delta = count(after, comp, code) - count(before, comp, code)
    ok = delta >= moved
    failed += 0 if ok else 1
    print(f"e2e-ops: {'ok  ' if ok else 'FAIL'} {comp} GetMetrics {code} counted {delta:g} (expected >= {moved})")
def admitted(text):
    m = re.search(r'^umcp_store_query_admissions_total\{outcome="admitted"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0
before = open(f"{work}/metrics.before.graph").read()
after = urllib.request.urlopen(f"http://127.0.0.1:{graph}/metrics", timeout=5).read().decode()
ok = admitted(after) - admitted(before) >= 1
failed += 0 if ok else 1
print(f"e2e-ops: {'ok  ' if ok else 'FAIL'} graph Query took a store query slot")
sys.exit(1 if failed else 0)
PY

# Logout (a revocation) and an API key, so the logs have had every kind of secret to leak.
api_key=$(call umcp.auth.v1.AuthService/CreateApiKey -d '{"name":"e2e-ops"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])')
"$GRPCURL" -plaintext -H "authorization: Bearer $token" -d "{\"refresh_token\":\"$refresh\"}" \
  "127.0.0.1:$gw_port" umcp.auth.v1.AuthService/Logout >/dev/null
leaks=0
logs=("$work"/*.log)
for secret in "$ADMIN_PASSWORD" "$token" "$refresh" "$api_key" "$(cat "$data/service-api-key.txt")"; do
  if grep -lF -- "$secret" "${logs[@]}"; then leaks=$((leaks + 1)); fi
done
echo "e2e-ops: $leaks secrets found in ${#logs[@]} process logs"
[ "$leaks" = 0 ]
