# shellcheck shell=bash
# Sourced by the end-to-end scripts (e2e-grpcurl.sh, e2e-python.sh): starts the real mesh
# binaries (auth, audit, graph, execution, gateway) on free ports with a throw-away data
# directory, and stops them on exit.
#
# After `start_mesh`: $work (temp dir, removed on exit), $data (data root), $gw_port (the
# gateway), $mcp_port (its HTTP port, /mcp), $auth_port, ADMIN_PASSWORD (the bootstrap
# admin's, from $data/bootstrap-admin.txt).
# Environment: BIN_DIR / PROFILE pick the binaries (scripts/bin-dir.sh); extra UMCP_* variables
# reach every process.

# shellcheck source=scripts/bin-dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/bin-dir.sh"

work=$(mktemp -d)
pids=()
mesh_cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap mesh_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  echo "e2e: gave up waiting for $what" >&2; tail -n 20 "$work"/*.log >&2; return 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }

start_mesh() {
  local bin_dir key_file audit_port graph_port exec_port common
  bin_dir=$(bin_dir)
  data="$work/data"
  mkdir -p "$data"
  auth_port=$(free_port); audit_port=$(free_port); graph_port=$(free_port); exec_port=$(free_port); gw_port=$(free_port)
  mcp_port=$(free_port) # the gateway's HTTP port: /mcp, /metrics, /healthz, /readyz
  # Each service's operations port (/metrics, /healthz, /readyz), by component.
  declare -gA ops_port=([auth]=$(free_port) [audit]=$(free_port) [graph]=$(free_port) [execution]=$(free_port) [gateway]=$mcp_port)
  key_file="$data/service-api-key.txt"
  common=(UMCP_AUTH__URL="http://127.0.0.1:$auth_port" UMCP_AUTH__API_KEY_FILE="$key_file"
    UMCP_AUDIT__URL="http://127.0.0.1:$audit_port")

  env "${common[@]}" UMCP_LISTEN="127.0.0.1:$auth_port" UMCP_HTTP__LISTEN="127.0.0.1:${ops_port[auth]}" UMCP_DATA_ROOT="$data" UMCP_TRUST_FORWARDED_FOR=true \
    UMCP_BOOTSTRAP_SERVICE_KEY_FILE="$key_file" UMCP_AUDIT__SPOOL_DIR="$data/spool/auth" \
    "$bin_dir/umcp-auth" >"$work/auth.out" 2>"$work/auth.log" &
  pids+=($!)
  wait_for "auth" listening "$auth_port"
  wait_for "the service key file" test -s "$key_file"
  env "${common[@]}" UMCP_LISTEN="127.0.0.1:$audit_port" UMCP_HTTP__LISTEN="127.0.0.1:${ops_port[audit]}" UMCP_DATA_DIR="$data/audit" \
    "$bin_dir/umcp-audit" 2>"$work/audit.log" &
  pids+=($!)
  wait_for "audit" listening "$audit_port"
  env "${common[@]}" UMCP_LISTEN="127.0.0.1:$graph_port" UMCP_HTTP__LISTEN="127.0.0.1:${ops_port[graph]}" UMCP_DATA_DIR="$data/graph" \
    UMCP_AUDIT__SPOOL_DIR="$data/spool/graph" \
    "$bin_dir/umcp-graph" 2>"$work/graph.log" &
  pids+=($!)
  wait_for "graph" listening "$graph_port"
  env "${common[@]}" UMCP_LISTEN="127.0.0.1:$exec_port" UMCP_HTTP__LISTEN="127.0.0.1:${ops_port[execution]}" UMCP_GRAPH_URL="http://127.0.0.1:$graph_port" \
    UMCP_AUDIT__SPOOL_DIR="$data/spool/execution" \
    "$bin_dir/umcp-execution" 2>"$work/execution.log" &
  pids+=($!)
  wait_for "execution" listening "$exec_port"
  env "${common[@]}" UMCP_LISTEN="127.0.0.1:$gw_port" \
    UMCP_BACKENDS__AUTH="http://127.0.0.1:$auth_port" UMCP_BACKENDS__GRAPH="http://127.0.0.1:$graph_port" \
    UMCP_BACKENDS__EXECUTION="http://127.0.0.1:$exec_port" UMCP_BACKENDS__AUDIT="http://127.0.0.1:$audit_port" \
    UMCP_HEALTH_INTERVAL_MS=200 UMCP_AUDIT__SPOOL_DIR="$data/spool/gateway" \
    UMCP_HTTP__LISTEN="127.0.0.1:$mcp_port" \
    "$bin_dir/umcp-gateway" 2>"$work/gateway.log" &
  pids+=($!)
  wait_for "gateway" listening "$gw_port"
  wait_for "the bootstrap admin password" test -s "$data/bootstrap-admin.txt"
  # shellcheck disable=SC2034 # read by the scripts that source this one
  ADMIN_PASSWORD=$(sed -n 's/^password: //p' "$data/bootstrap-admin.txt")
  sleep 0.5 # one health round, so the first calls see every backend SERVING
}
