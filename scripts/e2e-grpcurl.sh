#!/usr/bin/env bash
# End to end through the real binaries with the real grpcurl: starts the mesh (auth, graph,
# execution, gateway) on free ports with a throw-away data directory, then runs every command block of
# README.md marked `<!-- e2e expect="..." -->` (output must contain the text, exit 0) or
# `<!-- e2e expect-fail="..." -->` (must fail and print the text), in order, in ONE shell, so
# variables set by one block (the token) are seen by the next.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bin-dir.sh

GRPCURL=$(realpath "${GRPCURL:-.venv/bin/grpcurl}")
BIN_DIR=$(bin_dir)
[ -x "$GRPCURL" ] || { echo "e2e: $GRPCURL missing (run: make tools)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  echo "e2e: gave up waiting for $what" >&2; tail -n 20 "$work"/*.log >&2; return 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }

data="$work/data"
mkdir -p "$data"
auth_port=$(free_port); audit_port=$(free_port); graph_port=$(free_port); exec_port=$(free_port); gw_port=$(free_port)
key_file="$data/service-api-key.txt"
common=(UMCP_AUTH__URL="http://127.0.0.1:$auth_port" UMCP_AUTH__API_KEY_FILE="$key_file"
  UMCP_AUDIT__URL="http://127.0.0.1:$audit_port")

env "${common[@]}" UMCP_LISTEN="127.0.0.1:$auth_port" UMCP_DATA_ROOT="$data" UMCP_TRUST_FORWARDED_FOR=true \
  UMCP_BOOTSTRAP_SERVICE_KEY_FILE="$key_file" UMCP_AUDIT__SPOOL_DIR="$data/spool/auth" \
  "$BIN_DIR/umcp-auth" >"$work/auth.out" 2>"$work/auth.log" &
pids+=($!)
wait_for "auth" listening "$auth_port"
wait_for "the service key file" test -s "$key_file"
env "${common[@]}" UMCP_LISTEN="127.0.0.1:$audit_port" UMCP_DATA_DIR="$data/audit" \
  "$BIN_DIR/umcp-audit" 2>"$work/audit.log" &
pids+=($!)
wait_for "audit" listening "$audit_port"
env "${common[@]}" UMCP_LISTEN="127.0.0.1:$graph_port" UMCP_DATA_DIR="$data/graph" \
  UMCP_AUDIT__SPOOL_DIR="$data/spool/graph" \
  "$BIN_DIR/umcp-graph" 2>"$work/graph.log" &
pids+=($!)
wait_for "graph" listening "$graph_port"
env "${common[@]}" UMCP_LISTEN="127.0.0.1:$exec_port" UMCP_GRAPH_URL="http://127.0.0.1:$graph_port" \
  UMCP_AUDIT__SPOOL_DIR="$data/spool/execution" \
  "$BIN_DIR/umcp-execution" 2>"$work/execution.log" &
pids+=($!)
wait_for "execution" listening "$exec_port"
env "${common[@]}" UMCP_LISTEN="127.0.0.1:$gw_port" \
  UMCP_BACKENDS__AUTH="http://127.0.0.1:$auth_port" UMCP_BACKENDS__GRAPH="http://127.0.0.1:$graph_port" \
  UMCP_BACKENDS__EXECUTION="http://127.0.0.1:$exec_port" UMCP_BACKENDS__AUDIT="http://127.0.0.1:$audit_port" \
  UMCP_HEALTH_INTERVAL_MS=200 UMCP_AUDIT__SPOOL_DIR="$data/spool/gateway" \
  "$BIN_DIR/umcp-gateway" 2>"$work/gateway.log" &
pids+=($!)
wait_for "gateway" listening "$gw_port"
sleep 0.5 # one health round, so the README's health check sees SERVING

# Patterns are quoted with " or ' (use ' when the pattern holds a ").
# README.md → one script: each case runs in this shell (braces, not a subshell) and is checked.
python3 - "$work/cases.sh" "$GRPCURL" "$gw_port" "$data" <<'PY'
import re, sys, shlex
out, grpcurl, port, data = sys.argv[1:5]
text = open("README.md").read()
cases = [(k, dq if q.startswith('"') else sq, body) for k, q, dq, sq, body in
         re.findall(r'<!-- e2e (expect|expect-fail)=((?=")"([^"]*)"|(?=\')\'([^\']*)\') -->\s*```(?:sh|bash)\n(.*?)```', text, re.S)]
if len(cases) < 8:
    sys.exit(f"e2e: expected at least 8 marked command blocks in README.md, found {len(cases)}")
lines = ["passed=0; failed=0", "check() { # kind pattern rc file",
         '  if { [ "$1" = expect ] && [ "$3" = 0 ]; } || { [ "$1" = expect-fail ] && [ "$3" != 0 ]; }; then',
         '    if [ -z "$2" ] || grep -qF -- "$2" "$4"; then passed=$((passed+1)); echo "e2e: ok   $5"; return; fi; fi',
         '  failed=$((failed+1)); echo "e2e: FAIL $5 ($1 \\"$2\\", exit $3)"; head -30 "$4"; }']
for i, (kind, pattern, body) in enumerate(cases):
    body = body.replace("localhost:50051", f"127.0.0.1:{port}").replace("data/", f"{data}/")
    body = re.sub(r'(^|[\s(])grpcurl ', lambda m: m.group(1) + grpcurl + " ", body)
    title = " ".join(body.split())[:90].replace(grpcurl, "grpcurl").replace("'", "")
    lines.append(f"{{\n{body}\n}} > out.{i} 2>&1; check {shlex.quote(kind)} {shlex.quote(pattern)} $? out.{i} {shlex.quote(title)}")
lines.append('echo "grpcurl: $passed passed, $failed failed"')
lines.append('[ "$failed" = 0 ]')
open(out, "w").write("\n".join(lines) + "\n")
print(f"e2e: {len(cases)} README command blocks", file=sys.stderr)
PY
cd "$work" && set +e && bash "$work/cases.sh"
