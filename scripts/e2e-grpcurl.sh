#!/usr/bin/env bash
# End to end through the real binaries with the real grpcurl: starts graph + gateway on free
# ports with a throw-away data directory, then runs every grpcurl command of README.md that is
# marked `<!-- e2e ... -->`, checking its output (expect=) or its failure (expect-fail=).
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL=${GRPCURL:-.venv/bin/grpcurl}
BIN_DIR=${BIN_DIR:-target/debug}
[ -x "$GRPCURL" ] || { echo "e2e: $GRPCURL missing (run: make tools)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "e2e: nothing listens on $1" >&2; cat "$work"/*.log >&2; return 1
}

graph_port=$(free_port)
gw_port=$(free_port)
UMCP_LISTEN=127.0.0.1:$graph_port UMCP_DATA_DIR="$work/graph" "$BIN_DIR/umcp-graph" 2>"$work/graph.log" &
pids+=($!)
wait_port "$graph_port"
UMCP_LISTEN=127.0.0.1:$gw_port UMCP_BACKENDS__GRAPH=http://127.0.0.1:$graph_port \
  UMCP_BACKENDS__AUTH= UMCP_BACKENDS__EXECUTION= UMCP_BACKENDS__AUDIT= \
  UMCP_HEALTH_INTERVAL_MS=200 "$BIN_DIR/umcp-gateway" 2>"$work/gateway.log" &
pids+=($!)
wait_port "$gw_port"
sleep 0.5 # one health round, so the README's health check sees SERVING

# Extract (expectation, command) pairs from README.md.
python3 - "$work/cases" <<'PY'
import re, sys, json
text = open("README.md").read()
cases = []
for m in re.finditer(r'<!-- e2e (expect|expect-fail)="([^"]*)" -->\s*```(?:sh|bash)\n(.*?)```', text, re.S):
    kind, pattern, body = m.groups()
    cases.append({"kind": kind, "pattern": pattern, "command": body.strip()})
json.dump(cases, open(sys.argv[1], "w"))
print(f"e2e: {len(cases)} README commands", file=sys.stderr)
if len(cases) < 5:
    sys.exit("e2e: expected at least 5 marked grpcurl commands in README.md")
PY

passed=0
failed=0
count=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/cases")
for i in $(seq 0 $((count - 1))); do
  kind=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["kind"])' "$work/cases" "$i")
  pattern=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["pattern"])' "$work/cases" "$i")
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["command"])' "$work/cases" "$i" \
    | sed -e "s#^grpcurl #$GRPCURL #" -e "s#localhost:50051#127.0.0.1:$gw_port#g" > "$work/cmd.sh"
  set +e
  output=$(bash "$work/cmd.sh" 2>&1)
  rc=$?
  set -e
  ok=0
  if [ "$kind" = expect ] && [ $rc -eq 0 ] && grep -qF -- "$pattern" <<<"$output"; then ok=1; fi
  if [ "$kind" = expect-fail ] && [ $rc -ne 0 ] && grep -qF -- "$pattern" <<<"$output"; then ok=1; fi
  if [ $ok = 1 ]; then
    passed=$((passed + 1)); echo "e2e: ok   $(head -c 100 "$work/cmd.sh" | head -1)"
  else
    failed=$((failed + 1)); echo "e2e: FAIL ($kind \"$pattern\", exit $rc): $(cat "$work/cmd.sh")"; echo "$output" | head -30
  fi
done
echo "grpcurl: $passed passed, $failed failed"
[ "$failed" = 0 ]
