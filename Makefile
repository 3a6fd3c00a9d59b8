# Ultimate MCP Mesh — every command a developer or CI needs.
#   make run     start the whole mesh on embedded defaults (foreground, Ctrl-C stops it)
#   make test    everything CI runs: proto lint, deployment files, unit + integration tests, grpcurl end to end
#   make bench   benchmarks; results go to bench-out/ and are summarised in BENCHMARKS.md

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := .tools
VENV := .venv
BUF := $(TOOLS)/node_modules/.bin/buf
GRPCURL := $(VENV)/bin/grpcurl
KUBECTL := $(TOOLS)/bin/kubectl
IMAGE ?= umcp:dev

.PHONY: run build test test-rust test-e2e deploy-check lint fmt clippy proto-lint bench tools venv buf redis neo4j clean \
	kubectl docker-build compose-env compose-up k8s-secrets k8s-render k8s-validate

## run: build the binaries and start gateway + services in the foreground
run: build venv
	scripts/run-mesh.sh

build:
	$(CARGO) build --bins

## test: what CI runs
test: tools proto-lint deploy-check test-rust test-e2e

test-rust:
	$(CARGO) test --workspace --all-targets

test-e2e: build
	scripts/e2e-grpcurl.sh
	scripts/e2e-python.sh
	scripts/e2e-mcp.sh
	scripts/e2e-ops.sh

## deploy-check: docker-compose.yml and k8s/ validated offline
deploy-check: venv kubectl
	scripts/deploy-check.sh

## docker-build: the one image every process runs ($(IMAGE))
docker-build:
	docker build -t $(IMAGE) .

## compose-env: deploy/compose.env, random passwords, mode 0600 (kept when present; never committed)
compose-env:
	deploy/gen-secrets.sh compose deploy/compose.env

## compose-up: the whole stack with Neo4j, a Redis Cluster, OpenTelemetry, Jaeger, Prometheus
compose-up: compose-env
	docker-compose --env-file deploy/compose.env up -d --build

## k8s-secrets: k8s/overlays/prod/secrets.env for the prod Secret (same rules as compose-env)
k8s-secrets:
	deploy/gen-secrets.sh k8s k8s/overlays/prod/secrets.env

## k8s-render: base and every overlay rendered by kubectl kustomize into build/k8s/
k8s-render: kubectl k8s-secrets
	scripts/deploy-check.sh render build/k8s

## k8s-validate: render every overlay, validate it (API schemas, strict) and the mesh's rules
k8s-validate: venv kubectl
	scripts/deploy-check.sh k8s

## lint: formatting, clippy (warnings are errors) and buf lint
lint: fmt clippy proto-lint

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

proto-lint: buf
	cd proto && ../$(BUF) lint

bench: tools
	scripts/install-tools.sh nginx
	scripts/bench.sh

## tools: everything the tests need that is not a Rust crate, installed locally (no global state)
tools: buf venv redis neo4j kubectl

redis:
	scripts/install-tools.sh redis

neo4j:
	scripts/install-tools.sh neo4j

buf: $(BUF)
$(BUF):
	scripts/install-tools.sh buf

kubectl: $(KUBECTL)
$(KUBECTL):
	scripts/install-tools.sh kubectl

venv: $(VENV)/.installed
$(VENV)/.installed: scripts/requirements-test.txt scripts/install-tools.sh
	scripts/install-tools.sh venv

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) $(VENV) bench-out
