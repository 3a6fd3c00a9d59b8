# One image for every umcp process; the container command picks the service.
# Build: make docker-build (docker build -t umcp:dev .); used by docker-compose.yml and k8s/.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate: no system package needed.
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
# The execution service runs these interpreters and tools inside its sandbox, by absolute path.
# python3 also runs the container health checks (urllib against the process's HTTP port) and
# k8s/base/publish-service-key.py, so the image needs no curl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv nodejs bash shellcheck ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/umcp/venv \
 && /opt/umcp/venv/bin/pip install --no-cache-dir ruff==0.17.5 pytest==9.2.0
# Every process but execution runs as this user (uid/gid 65532, as in the k8s manifests). The
# data and keys directories exist in the image, owned by it, so a fresh Docker named volume
# mounted there starts out writable by it.
RUN groupadd --system --gid 65532 umcp \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/umcp --no-create-home --shell /usr/sbin/nologin umcp \
 && mkdir -p /var/lib/umcp/data /var/lib/umcp/keys \
 && chown -R 65532:65532 /var/lib/umcp
COPY --from=build /src/target/release/umcp-gateway /src/target/release/umcp-auth \
     /src/target/release/umcp-graph /src/target/release/umcp-execution \
     /src/target/release/umcp-audit /src/target/release/umcp /usr/local/bin/
ENV UMCP_LOG__FORMAT=json UMCP_TOOLS_VENV=/opt/umcp/venv
WORKDIR /var/lib/umcp
USER 65532:65532
# gRPC ports, then the HTTP ports (metrics, health; MCP on the gateway's).
EXPOSE 50051 50052 50053 50054 50055 8080 9102 9103 9104 9105
