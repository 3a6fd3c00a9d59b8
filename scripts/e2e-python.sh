#!/usr/bin/env bash
# The Python gRPC client end to end: starts the mesh from the built binaries (scripts/e2e-mesh.sh,
# the same start as e2e-grpcurl.sh), then runs tests/python/grpc with pytest from .venv
# (grpcio + grpcio-tools from scripts/requirements-test.txt; stubs are generated from proto/ at
# test time). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$PWD/.venv/bin/python}  # not realpath: that would leave the venv
[ -x "$PYTHON" ] || { echo "e2e-python: $PYTHON missing (run: make tools)" >&2; exit 1; }
"$PYTHON" -c 'import grpc, grpc_tools, pytest' 2>/dev/null ||
  { echo "e2e-python: grpcio, grpcio-tools or pytest missing from $PYTHON (run: make tools)" >&2; exit 1; }

source scripts/e2e-mesh.sh
start_mesh
echo "e2e-python: mesh up, gateway on 127.0.0.1:$gw_port" >&2
status=0
UMCP_GATEWAY="127.0.0.1:$gw_port" UMCP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  "$PYTHON" -m pytest -p no:cacheprovider -q tests/python/grpc "$@" || status=$?
if [ "$status" != 0 ]; then
  echo "e2e-python: FAILED; last lines of the service logs:" >&2
  tail -n 15 "$work"/*.log >&2
fi
exit "$status"
