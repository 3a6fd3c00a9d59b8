#!/usr/bin/env bash
# Runs every benchmark with release builds and keeps the raw output in bench-out/.
# The numbers quoted in BENCHMARKS.md come from this script.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench-out
cargo build --release --bins --examples
echo "== gateway overhead (GetMetrics direct vs through the gateway)"
target/release/examples/bench_gateway "${BENCH_SECONDS:-5}" 4 16 | tee bench-out/gateway.txt
if [ -x target/release/examples/sandbox_bench ]; then
  echo "== sandbox overhead (python print(1) sandboxed vs bare)"
  target/release/examples/sandbox_bench | tee bench-out/sandbox.txt
fi
