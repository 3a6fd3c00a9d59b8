#!/usr/bin/env bash
# Validates the deployment files offline (make deploy-check, part of make test):
#   - docker-compose.yml with docker-compose's own parser, with a throw-away env file from
#     deploy/gen-secrets.sh, and refused without one (the secrets are mandatory);
#   - every kustomize overlay (k8s/overlays/*) and the base rendered by a real
#     `kubectl kustomize` (.tools/bin/kubectl, scripts/install-tools.sh kubectl), the output
#     validated against the Kubernetes API schemas (kubernetes-validate --strict) and checked
#     against the mesh's deployment rules (deploy/check-k8s.py: lock-down and its named
#     exceptions, probes, references, headless backends, the exact caller graph of the
#     network policies, autoscaling and disruption budgets);
#   - the service key publisher of the auth pod against a fake API server
#     (deploy/test_publish_service_key.py);
#   - the Redis Cluster's redis.conf and init script on six local redis-server nodes
#     (deploy/test-redis-cluster.sh);
#   - the Dockerfile copies exactly the workspace's binaries (cargo metadata, no build);
#   - the deployment shell scripts with shellcheck and its Python with ruff, when installed.
# Usage: deploy-check.sh [all|compose|k8s|smoke]   |   deploy-check.sh render OUT_DIR
# `smoke` (not part of `all`: it needs built binaries) starts each umcp binary with the
# environment the dev and prod overlays and docker-compose.yml give its container
# (deploy/smoke-config.py); BIN_DIR as in scripts/bin-dir.sh.
# `render` writes every overlay to OUT_DIR/<overlay>.yaml (make k8s-render); prod needs
# k8s/overlays/prod/secrets.env (make k8s-secrets). The checks never touch that file: they
# render a copy of k8s/ with throw-away secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
KUBECTL=${KUBECTL:-.tools/bin/kubectl}
VALIDATE=${VALIDATE:-.venv/bin/kubernetes-validate}
PYTHON=${PYTHON:-.venv/bin/python}
# The Kubernetes version the manifests are written for (kubectl's; schemas ship with the validator).
K8S_VERSION=${K8S_VERSION:-1.35.0}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

check_compose() {
  if ! command -v docker-compose >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -qq docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null; }
    fi
  fi
  if ! command -v docker-compose >/dev/null; then
    echo "deploy-check: docker-compose not installed; compose file not checked" >&2
    return 0
  fi
  if docker-compose -f docker-compose.yml config -q >/dev/null 2>"$scratch/no-env.err"; then
    echo "deploy-check: docker-compose.yml accepted without its secrets (every password must be mandatory)" >&2
    return 1
  fi
  grep -q 'make compose-env' "$scratch/no-env.err" || { cat "$scratch/no-env.err" >&2; return 1; }
  deploy/gen-secrets.sh compose "$scratch/compose.env" 2>/dev/null
  docker-compose --env-file "$scratch/compose.env" -f docker-compose.yml config > "$scratch/compose.yaml"
  "$PYTHON" deploy/check-k8s.py --compose "$scratch/compose.yaml"
  echo "deploy-check: docker-compose.yml ok (validated with docker-compose config; not run)"
}

need_kubectl() {
  [ -x "$KUBECTL" ] || { echo "deploy-check: $KUBECTL missing: run scripts/install-tools.sh kubectl" >&2; exit 1; }
  [ -x "$VALIDATE" ] || { echo "deploy-check: $VALIDATE missing: run make venv" >&2; exit 1; }
}

# Renders base and every overlay from `root` (a k8s/ tree) into `out`/<name>.yaml; the names
# rendered are left in `rendered`.
rendered=()
render_all() { # root out
  local root=$1 out=$2 dir name
  mkdir -p "$out"
  for dir in "$root/base" "$root"/overlays/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    (umask 077 && "$KUBECTL" kustomize "$dir" > "$out/$name.yaml")
    rendered+=("$name")
  done
}

check_k8s() {
  need_kubectl
  cp -r k8s "$scratch/k8s"
  if [ -f "$scratch/k8s/overlays/prod/kustomization.yaml" ]; then
    rm -f "$scratch/k8s/overlays/prod/secrets.env"
    deploy/gen-secrets.sh k8s "$scratch/k8s/overlays/prod/secrets.env" 2>/dev/null
    # The committed template names exactly the keys the generator writes.
    local keys='s/^\([a-z_]*\)=.*/\1/p'
    if ! diff <(sed -n "$keys" k8s/overlays/prod/secrets.env.example) \
      <(sed -n "$keys" "$scratch/k8s/overlays/prod/secrets.env") >/dev/null; then
      echo "deploy-check: k8s/overlays/prod/secrets.env.example and deploy/gen-secrets.sh disagree on the keys" >&2
      return 1
    fi
  fi
  render_all "$scratch/k8s" "$scratch/out"
  local f
  for f in "$scratch"/out/*.yaml; do
    "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$f"
  done
  "$PYTHON" deploy/check-k8s.py "$scratch/out"
  echo "deploy-check: kustomize ${rendered[*]} rendered by $("$KUBECTL" version --client | sed -n 's/^Kustomize Version: //p') and valid for Kubernetes $K8S_VERSION (strict)"
}

check_smoke() {
  need_kubectl
  # shellcheck source=scripts/bin-dir.sh
  source scripts/bin-dir.sh
  local bins overlay
  bins=$(bin_dir)
  cp -r k8s "$scratch/k8s"
  rm -f "$scratch/k8s/overlays/prod/secrets.env"
  deploy/gen-secrets.sh k8s "$scratch/k8s/overlays/prod/secrets.env" 2>/dev/null
  render_all "$scratch/k8s" "$scratch/out"
  for overlay in dev prod; do
    "$PYTHON" deploy/smoke-config.py "$scratch/out/$overlay.yaml" "$bins"
  done
  deploy/gen-secrets.sh compose "$scratch/compose.env" 2>/dev/null
  docker-compose --env-file "$scratch/compose.env" -f docker-compose.yml config > "$scratch/compose.yaml"
  "$PYTHON" deploy/smoke-config.py --compose "$scratch/compose.yaml" "$bins"
}

# The image ships every binary of the workspace, and only those.
check_dockerfile() {
  local bins copied
  bins=$(${CARGO:-cargo} metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"])))')
  copied=$(sed -n '/^COPY --from=build/,/[^\\]$/p' Dockerfile | grep -o 'target/release/[a-z-]*' | sed 's|target/release/||' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')
  if [ "$bins" != "$copied" ]; then
    echo "deploy-check: Dockerfile copies [$copied], the workspace builds [$bins]" >&2
    return 1
  fi
  echo "deploy-check: Dockerfile ships every workspace binary ($bins)"
}

check_publisher() {
  "$PYTHON" -m pytest -q -p no:cacheprovider deploy/test_publish_service_key.py
  find deploy k8s -name __pycache__ -type d -prune -exec rm -rf {} +
}

check_scripts() {
  if command -v shellcheck >/dev/null; then
    shellcheck -x deploy/gen-secrets.sh deploy/test-redis-cluster.sh scripts/deploy-check.sh
    shellcheck -s sh k8s/components/redis-cluster/redis-cluster-init.sh
    echo "deploy-check: deployment scripts pass shellcheck"
  fi
  if [ -x .venv/bin/ruff ]; then
    .venv/bin/ruff check --quiet --line-length 120 deploy k8s
    .venv/bin/ruff format --quiet --check --line-length 120 deploy k8s
    echo "deploy-check: deployment Python passes ruff"
  fi
}

case "$mode" in
  all) check_compose; check_k8s; check_dockerfile; check_publisher; deploy/test-redis-cluster.sh; check_scripts ;;
  compose) check_compose ;;
  k8s) check_k8s ;;
  smoke) check_smoke ;;
  render)
    out=${2:?usage: deploy-check.sh render OUT_DIR}
    need_kubectl
    [ -f k8s/overlays/prod/secrets.env ] || { echo "deploy-check: k8s/overlays/prod/secrets.env missing: run make k8s-secrets" >&2; exit 1; }
    render_all k8s "$out"
    echo "deploy-check: rendered ${rendered[*]} into $out/ (mode 0600: prod holds its Secret)"
    ;;
  *) echo "usage: $0 [all|compose|k8s|smoke] | render OUT_DIR" >&2; exit 2 ;;
esac
