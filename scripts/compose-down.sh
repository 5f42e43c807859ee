#!/usr/bin/env bash
# Tears down the Compose project and deletes each replica's data volume.
# Usage: scripts/compose-down.sh [compose options, e.g. -p NAME -f FILE]
#
# `docker compose down -v` is not enough: Compose v1 hands a recreated container its
# predecessor's anonymous volume (`up -d --force-recreate` keeps the data, as it should), but
# `down -v` then leaves that volume behind. So the volumes are listed first, then removed.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
ids=$("${COMPOSE[@]}" "$@" ps -q)
volumes=""
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086 # one argument per container id
  volumes=$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' $ids)
fi
"${COMPOSE[@]}" "$@" down -v --remove-orphans
for v in $volumes; do
  # Already gone when `down -v` could remove it.
  docker volume rm "$v" >/dev/null 2>&1 || true
done
