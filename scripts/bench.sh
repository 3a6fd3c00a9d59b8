#!/usr/bin/env bash
# Runs every benchmark with release builds, each comparing against its own baseline in the same
# run, and keeps the raw output in bench-out/. BENCHMARKS.md quotes these numbers.
# BENCH_SECONDS (default 5) sets the length of each throughput round.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bin-dir.sh
mkdir -p bench-out
cargo build --release --bins --examples
bin=$(PROFILE=release bin_dir)/examples
run() { # name, title, command...
  local name=$1 title=$2; shift 2
  echo "== $title"
  "$@" | tee "bench-out/$name.txt"
}
run verify "token verification (EdDSA, JWKS cache, revocation set)" "$bin/bench_verify"
run gateway "gateway overhead: GetMetrics direct / through the gateway / gateway without auth" \
  "$bin/bench_gateway" "${BENCH_SECONDS:-5}" 4 16
run sandbox "sandbox overhead: python print(1) sandboxed vs bare" "$bin/sandbox_bench"
run execute-phases "one Execute, phase by phase (tracing spans), vs a bare interpreter" "$bin/execute_phases" 200
run execute "end-to-end Execute through the gateway vs direct" "$bin/bench_execute" 200
[ -x "$bin/bench_breaker" ] && run breaker "circuit breaker: rejection while open, closed overhead" "$bin/bench_breaker"
[ -x "$bin/audit_bench" ] && run audit "audit: durable append and query on 1M events" "$bin/audit_bench"
run cache "two-tier cache: L1 hit (and the previous moka hit path), L2 (Redis) hit" "$bin/latency"
run backends "graph store: the same Query/Upsert mix on embedded Grafeo and on Neo4j (harness, or UMCP_NEO4J__URI; wiped)" \
  "$bin/bench_backends" "${BENCH_SECONDS:-5}" 8
run ratelimit "rate-limit decision: in process, Redis, Redis killed (local fallback)" "$bin/decision_latency" 20000
run ratelimit-throughput "rate-limit decisions/s and CPU per decision (client, redis-server), 64 in flight" \
  "$bin/decision_throughput" "${BENCH_SECONDS:-5}" 64
echo "== raw output in bench-out/"
