#!/usr/bin/env bash
# Validates the deployment files offline: docker-compose.yml with docker-compose's own parser,
# every Kubernetes manifest against the API schemas (kubernetes-validate, strict), and the
# kustomize overlay rendering when kubectl is available.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq docker-compose >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null; }
  fi
fi
if command -v docker-compose >/dev/null; then
  docker-compose -f docker-compose.yml config -q
  echo "deploy-check: docker-compose.yml ok"
else
  echo "deploy-check: docker-compose not installed; compose file not checked" >&2
fi
validate=.venv/bin/kubernetes-validate
for f in k8s/base/*.yaml k8s/overlays/*/*.yaml; do
  case "$(basename "$f")" in kustomization.yaml) continue ;; esac
  "$validate" --strict --quiet "$f"
done
echo "deploy-check: k8s manifests ok"
if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  kubectl kustomize k8s/overlays/dev > "$rendered"
  "$validate" --strict --quiet "$rendered"
  rm -f "$rendered"
  echo "deploy-check: kustomize overlay ok"
fi
