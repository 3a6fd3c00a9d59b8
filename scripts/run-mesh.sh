#!/usr/bin/env bash
# Starts the mesh on embedded defaults in the foreground: every service that exists, then the
# gateway on 127.0.0.1:50051. Ctrl-C (or SIGTERM) stops everything and waits for it.
#
# Environment: UMCP_* variables are passed to every process (see README "Configuration");
# BIN_DIR (default target/debug) picks the binaries; UMCP_DATA_ROOT (default ./data) the data.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-target/debug}
DATA_ROOT=${UMCP_DATA_ROOT:-./data}
mkdir -p "$DATA_ROOT"

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo "run-mesh: stopping ${#pids[@]} processes" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

start() { # name, then env assignments
  local name=$1; shift
  env "$@" "$BIN_DIR/umcp-$name" &
  pids+=($!)
  echo "run-mesh: started umcp-$name (pid $!)" >&2
}

wait_port() { # port: wait until something listens (the gateway reports health on its own)
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run-mesh: nothing listens on port $1 after 10 s" >&2
  return 1
}

# Auth first: it writes the service account's API key, which every other process uses to
# follow revocations (and, later, for its own calls).
key_file="$DATA_ROOT/service-api-key.txt"
start auth UMCP_LISTEN=127.0.0.1:50052 UMCP_DATA_ROOT="$DATA_ROOT" UMCP_TRUST_FORWARDED_FOR=true \
  UMCP_BOOTSTRAP_SERVICE_KEY_FILE="$key_file" UMCP_AUDIT__SPOOL_DIR="$DATA_ROOT/audit-spool/auth"
wait_port 50052
for _ in $(seq 1 100); do [ -s "$key_file" ] && break; sleep 0.1; done
common=(UMCP_AUTH__URL=http://127.0.0.1:50052 UMCP_AUTH__API_KEY_FILE="$key_file")

# Audit next, so producers find it at once (they spool until it answers either way).
start audit "${common[@]}" UMCP_LISTEN=127.0.0.1:50055 UMCP_DATA_DIR="$DATA_ROOT/audit"
wait_port 50055
audit_url=http://127.0.0.1:50055

start graph "${common[@]}" UMCP_LISTEN=127.0.0.1:50053 UMCP_DATA_DIR="$DATA_ROOT/graph" \
  UMCP_AUDIT__SPOOL_DIR="$DATA_ROOT/audit-spool/graph"
wait_port 50053
execution_url=
if [ -x "$BIN_DIR/umcp-execution" ]; then
  start execution "${common[@]}" UMCP_LISTEN=127.0.0.1:50054 UMCP_GRAPH_URL=http://127.0.0.1:50053 \
    UMCP_AUDIT__SPOOL_DIR="$DATA_ROOT/audit-spool/execution"
  wait_port 50054
  execution_url=http://127.0.0.1:50054
fi
# A service whose binary is not built is disabled in the gateway (its calls answer UNAVAILABLE
# saying so) instead of being reported as down.
start gateway "${common[@]}" UMCP_LISTEN=127.0.0.1:50051 \
  UMCP_AUDIT__SPOOL_DIR="$DATA_ROOT/audit-spool/gateway" \
  UMCP_BACKENDS__AUTH=http://127.0.0.1:50052 \
  UMCP_BACKENDS__GRAPH=http://127.0.0.1:50053 \
  UMCP_BACKENDS__EXECUTION="$execution_url" \
  UMCP_BACKENDS__AUDIT="$audit_url"
wait_port 50051
echo "run-mesh: gateway on 127.0.0.1:50051; admin password: $DATA_ROOT/bootstrap-admin.txt (first start only)" >&2
echo "run-mesh: try: grpcurl -plaintext localhost:50051 list   (Ctrl-C stops everything)" >&2

# Exit (and stop the others) as soon as any process exits.
set +e
wait -n "${pids[@]}"
status=$?
echo "run-mesh: a process exited with status $status" >&2
exit "$status"
