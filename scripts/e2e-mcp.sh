#!/usr/bin/env bash
# MCP end to end with the official MCP Python SDK (`mcp` from scripts/requirements-test.txt, in
# .venv): starts the mesh from the built binaries (scripts/e2e-mesh.sh; the gateway's HTTP port
# on $mcp_port), logs an admin and a new viewer in with the built `umcp`, then runs
#   tests/python/mcp/test_http.py   MCP over Streamable HTTP at http://127.0.0.1:$mcp_port/mcp
#   tests/python/mcp/test_stdio.py  `umcp mcp` launched by the SDK, with the stored logins
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$PWD/.venv/bin/python}  # not realpath: that would leave the venv
[ -x "$PYTHON" ] || { echo "e2e-mcp: $PYTHON missing (run: make tools)" >&2; exit 1; }
"$PYTHON" -c 'import mcp.client.streamable_http, mcp.client.stdio' 2>/dev/null ||
  { echo "e2e-mcp: the MCP Python SDK is missing from $PYTHON (run: make tools)" >&2; exit 1; }

source scripts/e2e-mesh.sh
start_mesh
umcp="$(bin_dir)/umcp"
[ -x "$umcp" ] || { echo "e2e-mcp: $umcp missing (run: cargo build --bins)" >&2; exit 1; }
endpoint="127.0.0.1:$gw_port"
admin_cfg="$work/umcp-admin"; viewer_cfg="$work/umcp-viewer"
viewer_pw="e2e-mcp viewer password"
as_admin() { UMCP_CONFIG_DIR="$admin_cfg" UMCP_ENDPOINT="$endpoint" "$umcp" "$@"; }
printf '%s\n' "$ADMIN_PASSWORD" | as_admin login -u admin --password-stdin >/dev/null
printf '%s\n' "$viewer_pw" | as_admin users create mcpviewer --role viewer --password-stdin >/dev/null
printf '%s\n' "$viewer_pw" |
  UMCP_CONFIG_DIR="$viewer_cfg" UMCP_ENDPOINT="$endpoint" "$umcp" login -u mcpviewer --password-stdin >/dev/null
token() { "$PYTHON" -c 'import json, sys; print(next(iter(json.load(open(sys.argv[1]))["logins"].values()))["access_token"])' "$1/credentials.json"; }
echo "e2e-mcp: mesh up, gateway gRPC on $endpoint, MCP on 127.0.0.1:$mcp_port/mcp" >&2

status=0
UMCP_MCP_URL="http://127.0.0.1:$mcp_port/mcp" UMCP_ADMIN_TOKEN="$(token "$admin_cfg")" \
  UMCP_VIEWER_TOKEN="$(token "$viewer_cfg")" "$PYTHON" tests/python/mcp/test_http.py || status=$?
if [ "$status" = 0 ]; then
  UMCP_BIN="$umcp" UMCP_ENDPOINT="$endpoint" UMCP_ADMIN_CONFIG="$admin_cfg" UMCP_VIEWER_CONFIG="$viewer_cfg" \
    "$PYTHON" tests/python/mcp/test_stdio.py || status=$?
fi
if [ "$status" != 0 ]; then
  echo "e2e-mcp: FAILED; last lines of the service logs:" >&2
  tail -n 15 "$work"/*.log >&2
fi
exit "$status"
