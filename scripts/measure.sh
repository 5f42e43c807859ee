#!/usr/bin/env bash
# Measures a local network: starts a devnet of N nodes (default 100) on loopback plus one
# separate node process, runs `kademlia bench` at concurrency 1 and 32, and reports resident
# memory. Everything it starts, it stops. Usage: scripts/measure.sh [NODES] [OPS]
# Node settings in the environment (KADEMLIA_*, e.g. KADEMLIA_CONDITIONAL_PUTS=true) apply to every
# node it starts.
# DATA_DIR=DIR gives every node a data dir under DIR (records fsynced before each ack);
# empty (the default) measures the memory-only store.
# TLS=1 runs peers over mTLS on ports of their own (devnet --tls-dir; peer ports BASE+1000+i).
# TRACES=1 exports every node's spans over OTLP/gRPC to the tests' receiver
# (tests/support/otlp_receiver.py, from scripts/setup-tools.sh), to measure tracing's cost.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-100}
OPS=${2:-2000}
# Below the kernel's ephemeral range (32768+), so outgoing connections cannot take our ports.
BASE=${BASE_PORT:-21000}
# MEASURE_BIN runs another build (e.g. one with symbols for perf) instead of the release one.
if [ -z "${MEASURE_BIN:-}" ]; then cargo build --release --locked --quiet; fi
BIN=${MEASURE_BIN:-target/release/kademlia}
# BENCH_BIN runs the client side with another build (e.g. the current bench against an older
# node), so that two builds are measured by the same client.
BENCH=${BENCH_BIN:-$BIN}
LOG=$(mktemp -d)
cleanup() { kill "${DEVNET:-}" "${SOLO:-}" "${RECEIVER:-}" 2>/dev/null || true; wait 2>/dev/null || true; if [ -n "${KEEP_LOGS:-}" ]; then echo "logs in $LOG"; else rm -rf "$LOG"; fi; }
trap cleanup EXIT

DEVNET_DIR=(); SOLO_DIR=()
if [ -n "${DATA_DIR:-}" ]; then DEVNET_DIR=(--data-dir "$DATA_DIR"); SOLO_DIR=(--data-dir "$DATA_DIR/solo"); fi
SEED="127.0.0.1:$BASE"; SOLO_TLS=()
if [ -n "${TLS:-}" ]; then
  DEVNET_DIR+=(--tls-dir "$LOG/ca" --peer-base-port $((BASE + 1000)))
  SEED="127.0.0.1:$((BASE + 1000))"
  SOLO_TLS=(--peer-port $((BASE + 1000 + NODES)) --set "tls_ca_cert=$LOG/ca/ca.pem" --set "tls_ca_key=$LOG/ca/ca-key.pem")
fi
if [ -n "${TRACES:-}" ]; then
  .tools/venv/bin/python3 tests/support/otlp_receiver.py "$LOG/spans.jsonl" >"$LOG/receiver.out" &
  RECEIVER=$!
  for _ in $(seq 1 100); do grep -q '^grpc ' "$LOG/receiver.out" && break; sleep 0.1; done
  export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(awk '/^grpc/ {print $2}' "$LOG/receiver.out")"
  export OTEL_EXPORTER_OTLP_PROTOCOL=grpc
fi
"$BIN" devnet --nodes "$NODES" --base-port "$BASE" "${DEVNET_DIR[@]}" >"$LOG/devnet.out" 2>"$LOG/devnet.err" &
DEVNET=$!
for _ in $(seq 1 600); do grep -q '^ready:' "$LOG/devnet.out" && break; sleep 0.1; done
grep '^ready:' "$LOG/devnet.out" || { echo "devnet did not start"; tail "$LOG/devnet.err"; exit 1; }
# For about 10 s after ready the joins' follow-up refresh lookups keep the cores busy; figures
# taken then measure that, not the node (ping p99 60-90 ms). SETTLE_SECONDS=0 skips the wait.
sleep "${SETTLE_SECONDS:-20}"
SOLO_PORT=$((BASE + NODES))
P2P_REMOTE_HOST="$SEED" RUST_LOG=warn "$BIN" node --host 127.0.0.1 --port "$SOLO_PORT" "${SOLO_DIR[@]}" "${SOLO_TLS[@]}" 2>"$LOG/solo.err" &
SOLO=$!
for _ in $(seq 1 100); do "$BIN" health -a "127.0.0.1:$SOLO_PORT" >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" health -a "127.0.0.1:$SOLO_PORT" >/dev/null || { echo "separate node did not join"; cat "$LOG/solo.err"; exit 1; }

echo "== bench, concurrency 1 =="
"$BENCH" bench --quiet --nodes "$NODES" --base-port "$BASE" --puts "$OPS" --gets "$OPS" -c 1
echo "== bench, concurrency 32 =="
"$BENCH" bench --quiet --nodes "$NODES" --base-port "$BASE" --puts "$OPS" --gets "$OPS" -c 32

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
D=$(rss "$DEVNET"); S=$(rss "$SOLO")
echo "== memory =="
echo "devnet process: ${D} KiB RSS for ${NODES} nodes = $((D / NODES)) KiB per node (shared runtime)"
echo "separate node process: ${S} KiB RSS ($("$BIN" info -a "127.0.0.1:$SOLO_PORT" | awk '/peers|records/ {printf "%s %s ", $1, $2}'))"
if [ -n "${TRACES:-}" ]; then
  echo "== traces =="
  echo "spans received so far: $(wc -l <"$LOG/spans.jsonl")"
fi
