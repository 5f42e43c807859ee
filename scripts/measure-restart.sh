#!/usr/bin/env bash
# Restart figures for a node with a data dir: fills one node (a network of its own) with
# RECORDS records through `kademlia bench`, then restarts it twice (SIGTERM, then SIGKILL)
# and reports the time from exec until it reports SERVING with every record, and the data
# dir's size. Everything it starts, it stops; the data dir is deleted at the end.
# Usage: scripts/measure-restart.sh [RECORDS] [VALUE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-100000}
VALUE=${2:-100}
PORT=${PORT:-21900}
cargo build --release --locked --quiet
BIN=target/release/kademlia
DIR=$(mktemp -d)
cleanup() { kill -9 "${NODE:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

start() {
  P2P_REMOTE_HOST= RUST_LOG=warn "$BIN" node --host 127.0.0.1 --port "$PORT" --data-dir "$DIR/node" \
    --set max_records=$((RECORDS * 2)) 2>>"$DIR/node.err" &
  NODE=$!
}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Waits for SERVING, then for the node to report every record; prints both times.
wait_serving() {
  local t0=$1
  until "$BIN" health -a "127.0.0.1:$PORT" >/dev/null 2>&1; do sleep 0.01; done
  local serving=$(( $(ms) - t0 ))
  local records
  records=$("$BIN" info -a "127.0.0.1:$PORT" | awk '/^records/ {print $2}')
  echo "SERVING after ${serving} ms holding ${records} records"
}

start
wait_serving "$(ms)" >/dev/null
echo "== filling one node with $RECORDS records of $VALUE bytes =="
"$BIN" bench --quiet --nodes 1 --base-port "$PORT" --pings 1 --puts "$RECORDS" --gets 1000 \
  --value-size "$VALUE" --max-seconds 1800 -c 32
echo "data dir: $(du -sh "$DIR/node" | cut -f1) for $RECORDS records"

echo "== restart after SIGTERM =="
kill -TERM "$NODE"; wait "$NODE" 2>/dev/null || true
T=$(ms); start; wait_serving "$T"
echo "== restart after SIGKILL =="
kill -9 "$NODE"; wait "$NODE" 2>/dev/null || true
T=$(ms); start; wait_serving "$T"
echo "RSS after restart: $(awk '/VmRSS/ {print $2, $3}' "/proc/$NODE/status")"
