# One image for every umcp process; the container command picks the service.
# Build: docker build -t umcp:dev .   (see docker-compose.yml and k8s/)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
# The execution service runs these interpreters and tools inside its sandbox, by absolute path.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv nodejs bash shellcheck ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/umcp/venv \
 && /opt/umcp/venv/bin/pip install --no-cache-dir ruff==0.17.5 pytest==9.2.0
COPY --from=build /src/target/release/umcp-gateway /src/target/release/umcp-auth \
     /src/target/release/umcp-graph /src/target/release/umcp-execution \
     /src/target/release/umcp-audit /usr/local/bin/
ENV UMCP_LOG__FORMAT=json UMCP_TOOLS_VENV=/opt/umcp/venv
WORKDIR /var/lib/umcp
EXPOSE 50051 50052 50053 50054 50055
