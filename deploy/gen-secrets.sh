#!/usr/bin/env bash
# Writes the secrets of a deployment to a new env file, random values, mode 0600:
#   gen-secrets.sh compose deploy/compose.env          (make compose-env; docker-compose --env-file)
#   gen-secrets.sh k8s k8s/overlays/prod/secrets.env   (make k8s-secrets; the prod secretGenerator)
# An existing file is kept as it is: Neo4j and Redis keep the password of their first start in
# their volumes, so a new value would lock the services out. Delete the file (and the volumes)
# to start over. Neither file is ever committed (.gitignore).
set -euo pipefail
format=${1:-}
out=${2:-}
if [ -z "$format" ] || [ -z "$out" ]; then
  echo "usage: $0 compose|k8s FILE" >&2
  exit 2
fi
if [ -e "$out" ]; then
  echo "gen-secrets: $out exists; keeping it" >&2
  exit 0
fi
# 32 characters from [A-Za-z0-9] (190 bits): valid unquoted in env files, URLs, redis.conf and
# NEO4J_AUTH, and long enough for the auth service's 12-byte minimum.
random() { python3 -c 'import secrets, string; a = string.ascii_letters + string.digits; print("".join(secrets.choice(a) for _ in range(32)))'; }
admin=$(random)
neo4j=$(random)
redis=$(random)
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
  umask 077
  case "$format" in
    compose)
      {
        echo "# docker-compose.yml secrets (make compose-env). Never commit this file."
        echo "UMCP_BOOTSTRAP_ADMIN_PASSWORD=$admin"
        echo "NEO4J_PASSWORD=$neo4j"
        echo "REDIS_PASSWORD=$redis"
      } > "$tmp"
      ;;
    k8s)
      {
        echo "# k8s/overlays/prod Secret umcp-secrets (make k8s-secrets). Never commit this file."
        echo "admin_password=$admin"
        echo "neo4j_password=$neo4j"
        echo "redis_password=$redis"
      } > "$tmp"
      ;;
    *)
      echo "usage: $0 compose|k8s FILE" >&2
      exit 2
      ;;
  esac
)
chmod 0600 "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "gen-secrets: wrote $out (mode 0600)" >&2
