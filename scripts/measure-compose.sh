#!/usr/bin/env bash
# Figures for the Compose deployment: image size, time from `up --scale node=N` until all N
# are healthy, routing-table sizes, get/put latency through the published ports
# (`kademlia bench`), idle memory per container. Tears down what it starts.
# Usage: scripts/measure-compose.sh [N] [OPS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
OPS=${2:-1000}
export COMPOSE_PROJECT_NAME=kadmeasure
if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
trap 'scripts/compose-down.sh >/dev/null 2>&1 || true' EXIT
scripts/build-image.sh
cargo build --release --locked --quiet
BIN=target/release/kademlia

START=$(date +%s%N)
$COMPOSE up -d --scale node="$N" >/dev/null 2>&1
until [ "$(docker ps -q --filter label=com.docker.compose.project=$COMPOSE_PROJECT_NAME --filter health=healthy | wc -l)" -eq "$N" ]; do
  [ $(( ($(date +%s%N) - START) / 1000000000 )) -lt 180 ] || { echo "not all healthy after 180 s"; exit 1; }
  sleep 0.2
done
echo "all $N healthy $(( ($(date +%s%N) - START) / 1000000 )) ms after up"

ADDRS=""
for id in $($COMPOSE ps -q node); do ADDRS="$ADDRS,$(docker port "$id" 50051 | head -n 1)"; done
ADDRS=${ADDRS#,}
echo "routing table sizes (peers per node):"
for a in ${ADDRS//,/ }; do "$BIN" info -a "$a" | awk '/peers/ {printf "%s ", $2}'; done; echo
sleep 5
echo "idle memory per container:"
docker stats --no-stream --format '{{.MemUsage}}' $($COMPOSE ps -q node) | awk '{print $1}' | sort -h | awk '{a[NR]=$1} END {print "  min " a[1] "  median " a[int((NR+1)/2)] "  max " a[NR]}'
"$BIN" bench --quiet --addrs "$ADDRS" --puts "$OPS" --gets "$OPS" -c 1
"$BIN" bench --quiet --addrs "$ADDRS" --puts "$OPS" --gets "$OPS" -c 32
