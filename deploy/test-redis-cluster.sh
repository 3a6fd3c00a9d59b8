#!/usr/bin/env bash
# The Redis Cluster exactly as docker-compose.yml and the prod overlay run it, on this machine:
# six redis-server nodes from k8s/components/redis-cluster/redis.conf (only the data directory
# and port moved), the password included from a 0600 file, host names announced; formed by
# redis-cluster-init.sh, which must then leave the formed cluster alone. Checks: 3 masters with
# a replica each, clients are sent host names, the password is required, and keys in every
# slot range are written and read through redirects. Part of make deploy-check (skipped
# without redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "test-redis-cluster: redis-server/redis-cli not installed (make redis); skipped" >&2
  exit 0
fi
work=$(mktemp -d)
pids=()
cleanup() {
  # Throw-away nodes: SIGKILL, so none lingers (SIGTERM waits for replicas and a final AOF
  # write, and a node refuses to exit when that write fails).
  local pid
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Six free ports whose cluster-bus ports (+10000) are free too.
read -r -a ports <<< "$(python3 -c '
import random, socket
def free(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False
found = []
while len(found) < 6:
    p = random.randint(20000, 29999)
    if p not in found and free(p) and free(p + 10000):
        found.append(p)
print(" ".join(map(str, found)))')"

export REDISCLI_AUTH=test-password-0123456789
nodes=()
for port in "${ports[@]}"; do
  dir="$work/$port"
  mkdir -p "$dir"
  sed "s#/data#$dir#g" k8s/components/redis-cluster/redis.conf > "$dir/redis.conf"
  (umask 077 && printf 'requirepass %s\nmasterauth %s\n' "$REDISCLI_AUTH" "$REDISCLI_AUTH" > "$dir/auth.conf")
  redis-server "$dir/redis.conf" --port "$port" --bind 127.0.0.1 --cluster-announce-hostname localhost \
    --include "$dir/auth.conf" --logfile "$dir/log" &
  pids+=($!)
  nodes+=("localhost:$port")
done

sh k8s/components/redis-cluster/redis-cluster-init.sh "${nodes[@]}" > "$work/init.log"
again=$(sh k8s/components/redis-cluster/redis-cluster-init.sh "${nodes[@]}")
case "$again" in *"already formed"*) ;; *) echo "test-redis-cluster: a second run did not leave the cluster alone: $again" >&2; exit 1 ;; esac

cli() { redis-cli --no-auth-warning -h localhost -p "${ports[0]}" "$@"; }
masters=0 replicas=0
for port in "${ports[@]}"; do
  case "$(redis-cli --no-auth-warning -p "$port" role | head -1)" in
    master) masters=$((masters + 1)) ;;
    slave) replicas=$((replicas + 1)) ;;
  esac
done
if [ "$masters" != 3 ] || [ "$replicas" != 3 ]; then
  echo "test-redis-cluster: $masters masters, $replicas replicas" >&2
  exit 1
fi
cli cluster slots | grep -qx localhost || { echo "test-redis-cluster: CLUSTER SLOTS does not name hosts" >&2; exit 1; }
noauth=$(REDISCLI_AUTH='' redis-cli -p "${ports[0]}" get k 2>&1 || true)
case "$noauth" in *NOAUTH*) ;; *) echo "test-redis-cluster: no password, yet: $noauth" >&2; exit 1 ;; esac
# Keys whose slots fall on every master, written and read through MOVED redirects.
for key in a b c d e f g h; do cli -c set "umcp:test:$key" "v$key" >/dev/null; done
for key in a b c d e f g h; do
  [ "$(cli -c get "umcp:test:$key")" = "v$key" ] || { echo "test-redis-cluster: key $key lost" >&2; exit 1; }
done
for port in "${ports[@]}"; do
  if [ "$(redis-cli --no-auth-warning -p "$port" role | head -1)" = master ] \
    && [ "$(redis-cli --no-auth-warning -p "$port" dbsize)" = 0 ]; then
    echo "test-redis-cluster: master on $port holds none of the keys" >&2
    exit 1
  fi
done
echo "test-redis-cluster: 3 masters + 3 replicas formed from redis.conf, host names announced, password required, keys on every master readable; a second init left it alone"
