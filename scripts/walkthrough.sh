#!/usr/bin/env bash
# Runs every `sh` code block of p2p_setup.md, in order, as one bash script (with -e), and
# cleans up what the walkthrough creates even when a step fails. The test suite runs it
# (tests/compose.rs), so the page cannot drift from the product.
#
# Where only the standalone `docker-compose` (v1) is installed, as on the CI machines, the
# page's `docker compose ...` commands are passed to it: same arguments, same file.
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-kadwalk}
if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
SCRIPT=$(mktemp)
SHIM=$(mktemp -d)
if [ "$COMPOSE" = docker-compose ]; then
  # A `docker` on PATH that hands `docker compose ...` to docker-compose (also in sub-shells).
  REAL_DOCKER=$(command -v docker)
  printf '#!/bin/sh\nif [ "$1" = compose ]; then shift; exec docker-compose "$@"; fi\nexec %s "$@"\n' "$REAL_DOCKER" >"$SHIM/docker"
  chmod +x "$SHIM/docker"
  export PATH="$SHIM:$PATH"
fi
cleanup() {
  docker rm -f kad1 kad2 kad3 kad4 >/dev/null 2>&1 || true
  docker network rm kadnet >/dev/null 2>&1 || true
  scripts/compose-down.sh >/dev/null 2>&1 || true
  rm -rf "$SCRIPT" "$SHIM"
}
trap cleanup EXIT
FENCE='```'
{
  echo 'set -euo pipefail'
  awk -v open="${FENCE}sh" -v fence="$FENCE" '
    $0 == open        { inblock = 1; n++; printf "echo \"### block %d (p2p_setup.md line %d)\" >&2\n", n, NR; next }
    index($0, fence) == 1 { inblock = 0; next }
    inblock           { print }
  ' p2p_setup.md
} >"$SCRIPT"
BLOCKS=$(grep -c "^${FENCE}sh\$" p2p_setup.md)
echo "running $BLOCKS blocks from p2p_setup.md" >&2
bash "$SCRIPT"
echo "walkthrough: all $BLOCKS blocks ran" >&2
