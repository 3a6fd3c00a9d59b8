#!/usr/bin/env bash
# Starts the mesh on embedded defaults in the foreground: every service that exists, then the
# gateway on 127.0.0.1:50051, and keeps it up: a process that exits is restarted with backoff
# (1 s, doubling to 30 s; back to 1 s after 60 s of uptime) and a loud line naming it and its
# exit status. Ctrl-C (or SIGTERM) stops everything and waits for it.
#
# Environment: UMCP_* variables are passed to every process (see README "Configuration");
# BIN_DIR picks the binaries (default: where cargo builds them, see scripts/bin-dir.sh);
# UMCP_DATA_ROOT (default ./data) the data.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bin-dir.sh

BIN_DIR=$(bin_dir)
DATA_ROOT=${UMCP_DATA_ROOT:-./data}
mkdir -p "$DATA_ROOT"

supervisors=()
stop() {
  trap - INT TERM EXIT
  if [ ${#supervisors[@]} -gt 0 ]; then
    echo "run-mesh: stopping ${#supervisors[@]} processes" >&2
    kill -TERM "${supervisors[@]}" 2>/dev/null || true
    wait "${supervisors[@]}" 2>/dev/null || true
  fi
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

describe() { # exit status as the shell reports it
  if [ "$1" -gt 128 ]; then
    echo "killed by signal $(($1 - 128)) ($(kill -l "$(($1 - 128))" 2>/dev/null || echo '?'))"
  else
    echo "exit status $1"
  fi
}

# Runs one process until the mesh stops; restarts it when it exits on its own.
supervise() { # name, then env assignments
  local name=$1; shift
  local delay=1 child= started status
  trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; [ -n "$child" ] && wait "$child" 2>/dev/null; exit 0' TERM INT
  while true; do
    started=$SECONDS
    env "$@" "$BIN_DIR/umcp-$name" &
    child=$!
    echo "run-mesh: started umcp-$name (pid $child)" >&2
    status=0
    wait "$child" || status=$?
    child=
    [ $((SECONDS - started)) -ge 60 ] && delay=1
    echo "run-mesh: !!! umcp-$name EXITED ($(describe "$status")); restarting it in ${delay}s" >&2
    sleep "$delay"
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

start() { # name, then env assignments
  supervise "$@" &
  supervisors+=($!)
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
# follow revocations, for its own calls, and (the gateway) to vouch for client addresses.
key_file="$DATA_ROOT/service-api-key.txt"
start auth UMCP_LISTEN=127.0.0.1:50052 UMCP_DATA_ROOT="$DATA_ROOT" \
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

# The supervisors never return on their own; this waits until Ctrl-C or SIGTERM.
wait
