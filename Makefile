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

.PHONY: run build test test-rust test-e2e deploy-check lint fmt clippy proto-lint bench tools venv buf redis neo4j clean

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

## deploy-check: docker-compose.yml and k8s/ validated offline
deploy-check: venv
	scripts/deploy-check.sh

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
tools: buf venv redis neo4j

redis:
	scripts/install-tools.sh redis

neo4j:
	scripts/install-tools.sh neo4j

buf: $(BUF)
$(BUF):
	scripts/install-tools.sh buf

venv: $(VENV)/.installed
$(VENV)/.installed: scripts/requirements-test.txt scripts/install-tools.sh
	scripts/install-tools.sh venv

clean:
	$(CARGO) clean
	rm -rf $(TOOLS) $(VENV) bench-out
