#!/bin/sh
# Forms a Redis Cluster of 3 masters + 3 replicas from six empty nodes, once:
#   redis-cluster-init.sh host:port host:port host:port host:port host:port host:port
# The password comes from REDISCLI_AUTH (redis-cli reads it; it never shows in `ps`).
# Used by docker-compose.yml (service redis-cluster-init) and the prod overlay's Job
# (k8s/components/redis-cluster). Safe to run again: a formed cluster is left alone, so the Job
# may be re-applied and compose may restart it.
# Exit status: 0 formed (now or before), 1 nodes unreachable, half-formed or never healthy.
set -eu
[ "$#" -eq 6 ] || { echo "redis-cluster-init: need 6 nodes (3 masters + 3 replicas), got $#" >&2; exit 2; }
WAIT_SECS=${WAIT_SECS:-180}

cli() { # host:port, then a command
  node=$1; shift
  redis-cli -h "${node%:*}" -p "${node##*:}" --no-auth-warning "$@"
}
info_field() { # host:port field: one field of CLUSTER INFO
  cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# Every node answers first (pods and containers start in any order).
for node in "$@"; do
  waited=0
  until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
    waited=$((waited + 2))
    if [ "$waited" -ge "$WAIT_SECS" ]; then
      echo "redis-cluster-init: $node does not answer PING after ${WAIT_SECS}s" >&2
      exit 1
    fi
    sleep 2
  done
done

first=$1
known=$(info_field "$first" cluster_known_nodes)
if [ "$(info_field "$first" cluster_state)" = ok ] && [ "${known:-0}" -ge 6 ]; then
  echo "redis-cluster-init: cluster already formed ($known nodes); nothing to do"
  exit 0
fi
for node in "$@"; do
  if [ "$(info_field "$node" cluster_known_nodes)" != 1 ]; then
    # A node that knows others but no healthy cluster: an earlier run stopped half way or a
    # node was replaced. `--cluster create` would refuse it; a person must look.
    echo "redis-cluster-init: $node already knows other nodes but the cluster is not ok;" \
      "repair it with redis-cli --cluster fix / add-node" >&2
    exit 1
  fi
done

# CLUSTER MEET takes addresses, not names: resolve each host once. The nodes announce their
# host names (cluster-announce-hostname) to clients, so a pod that comes back with a new address
# is still found.
addrs=
for node in "$@"; do
  host=${node%:*}
  ip=$(getent hosts "$host" | awk '{ print $1; exit }')
  [ -n "$ip" ] || { echo "redis-cluster-init: cannot resolve $host" >&2; exit 1; }
  addrs="$addrs $ip:${node##*:}"
done
echo "redis-cluster-init: creating the cluster from$addrs"
# shellcheck disable=SC2086 # one argument per address
redis-cli --no-auth-warning --cluster create $addrs --cluster-replicas 1 --cluster-yes

waited=0
for node in "$@"; do
  until [ "$(info_field "$node" cluster_state)" = ok ]; do
    waited=$((waited + 1))
    if [ "$waited" -ge "$WAIT_SECS" ]; then
      echo "redis-cluster-init: $node does not report cluster_state:ok after ${WAIT_SECS}s" >&2
      exit 1
    fi
    sleep 1
  done
done
echo "redis-cluster-init: cluster formed: 3 masters, 3 replicas, every node ok"
