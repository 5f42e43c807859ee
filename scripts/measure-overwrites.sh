#!/usr/bin/env bash
# Measures overwrites of large values: starts a devnet of N nodes (default 20) on loopback that
# accepts values of VALUE_BYTES (default 1 MiB), then `kademlia bench --keys` puts OPS times
# (default 100) over 5 keys, one at a time, so all but the first 5 puts overwrite a value held
# by k replicas; it reports the put and get latencies (also in pings) and the devnet's peak
# resident memory. Everything it starts, it stops.
# Usage: scripts/measure-overwrites.sh [NODES] [OPS]
# MEASURE_BIN runs another build (e.g. an older one, to compare; the bench client is always
# this checkout's, so that both are measured alike).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-20}
OPS=${2:-100}
VALUE_BYTES=${VALUE_BYTES:-1048576}
# Below the kernel's ephemeral range (32768+), so outgoing connections cannot take our ports.
BASE=${BASE_PORT:-24000}
cargo build --release --locked --quiet
BENCH=target/release/kademlia
BIN=${MEASURE_BIN:-$BENCH}
LOG=$(mktemp -d)
cleanup() { kill "${DEVNET:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$LOG"; }
trap cleanup EXIT

"$BIN" devnet --nodes "$NODES" --base-port "$BASE" --set "max_value_bytes=$VALUE_BYTES" \
  >"$LOG/devnet.out" 2>"$LOG/devnet.err" &
DEVNET=$!
for _ in $(seq 1 600); do grep -q '^ready:' "$LOG/devnet.out" && break; sleep 0.1; done
grep -q '^ready:' "$LOG/devnet.out" || { echo "devnet did not start"; tail "$LOG/devnet.err"; exit 1; }
# The joins' follow-up lookups keep the cores busy for a few seconds after ready.
sleep "${SETTLE_SECONDS:-10}"
echo "== $OPS puts over 5 keys of $VALUE_BYTES bytes, $NODES nodes, concurrency 1 =="
"$BENCH" bench --quiet --nodes "$NODES" --base-port "$BASE" --pings 200 --puts "$OPS" \
  --keys 5 --gets 50 --value-size "$VALUE_BYTES" -c 1
echo "devnet peak RSS: $(awk '/VmHWM/ {print $2}' "/proc/$DEVNET/status") KiB"
