#!/usr/bin/env bash
# Compares this node with the DHTs people would pick instead, on this machine, one after the
# other (never at once): bmuller's python kademlia 2.2.3 (PyPI) and OpenDHT 2.4.12 (Debian's
# python3-opendht), each as N nodes on loopback in one process, and this node as a devnet of N
# nodes driven over gRPC by `kademlia bench` from a separate process. Each runs OPS puts, then
# OPS gets of those keys, at concurrency 1 and then 32 (this node twice: its puts and gets as
# unary calls, and as frames on one Stream per node); prints the figures, this node's ratio to
# each and issue 12's goals, for each of its two APIs. Installs what it needs (a venv in .tools/compare-venv; Debian's
# python3-opendht through apt-get, as root) and stops everything it starts. A peer's phase
# stops starting ops after PHASE_SECONDS (180) and is marked * in the table; a peer that fails
# shows "no run" and the others still print. RUNS=N repeats the whole comparison N times, one
# table each, then counts each goal over the runs and judges it by its median margin
# (compare/summary.py): on a shared machine a goal met by a small margin can fall either side
# from one run to the next, and a run slowed by other work moves every ratio of that run.
# Usage: scripts/compare.sh [NODES] [OPS]   (defaults 100 and 1000; 100 nodes and 300 ops take
# about 30 s after the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-100}
OPS=${2:-1000}
RUNS=${RUNS:-1}
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a whole number of runs, at least 1 (got '$RUNS')" >&2; exit 2; }
BASE=${BASE_PORT:-21000}
VENV=.tools/compare-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kademlia' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'kademlia==2.2.3'
fi
# OpenDHT's Python binding is built for Debian's own interpreter.
if ! /usr/bin/python3 -c 'import opendht' 2>/dev/null; then
  echo "installing Debian's python3-opendht" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-opendht >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-opendht >/dev/null; }
fi
cargo build --release --locked --quiet
BIN=target/release/kademlia
OUT=$(mktemp -d)
cleanup() { kill "${DEVNET:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"; }
trap cleanup EXIT

# One comparison: this node, then python kademlia, then OpenDHT; the raw figures go to $1.
compare_once() {
  local R=$1
  echo "== this node: $NODES-node devnet, kademlia bench over gRPC ==" >&2
  "$BIN" devnet --nodes "$NODES" --base-port "$BASE" >"$R/devnet.out" 2>"$R/devnet.err" &
  DEVNET=$!
  for _ in $(seq 1 600); do grep -q '^ready:' "$R/devnet.out" && break; sleep 0.1; done
  grep -q '^ready:' "$R/devnet.out" || { echo "devnet did not start"; tail "$R/devnet.err"; exit 1; }
  # For about 10 s after ready the joins' follow-up refresh lookups keep the cores busy; figures
  # taken then measure that, not the node (ping p99 60-90 ms). SETTLE_SECONDS=0 skips the wait.
  sleep "${SETTLE_SECONDS:-20}"
  # Each concurrency twice: puts and gets as unary calls, then as frames on one Stream per node.
  for c in 1 32; do
    "$BIN" bench --quiet --json --nodes "$NODES" --base-port "$BASE" \
      --pings "$OPS" --puts "$OPS" --gets "$OPS" -c "$c" >"$R/ours-c$c.json"
    "$BIN" bench --quiet --json --nodes "$NODES" --base-port "$BASE" --stream \
      --pings "$OPS" --puts "$OPS" --gets "$OPS" -c "$c" >"$R/stream-c$c.json"
  done
  kill "$DEVNET"; wait "$DEVNET" 2>/dev/null || true; DEVNET=

  echo "== python kademlia 2.2.3: $NODES nodes in one process ==" >&2
  timeout 1800 "$VENV/bin/python" scripts/compare/pykad_bench.py --nodes "$NODES" --ops "$OPS" \
    --base-port $((BASE + 2000)) --phase-seconds "$PHASE" >"$R/pykad.json" ||
    echo "python kademlia's run failed (exit $?)" >&2
  echo "== OpenDHT 2.4.12: $NODES nodes in one process ==" >&2
  timeout 1800 /usr/bin/python3 scripts/compare/opendht_bench.py --nodes "$NODES" --ops "$OPS" \
    --base-port $((BASE + 4000)) --phase-seconds "$PHASE" >"$R/opendht.json" ||
    echo "OpenDHT's run failed (exit $?)" >&2

  python3 scripts/compare/table.py "$R/ours-c1.json" "$R/ours-c32.json" "$R/pykad.json" \
    "$R/opendht.json" "$R/goals.json" --stream "$R/stream-c1.json" "$R/stream-c32.json"
}

PHASE=${PHASE_SECONDS:-180}
for run in $(seq 1 "$RUNS"); do
  mkdir -p "$OUT/run$run"
  if [ "$RUNS" -gt 1 ]; then echo "== run $run of $RUNS ==" >&2; echo "run $run of $RUNS:"; fi
  compare_once "$OUT/run$run"
  if [ "$RUNS" -gt 1 ]; then echo; fi
done
if [ "$RUNS" -gt 1 ]; then
  python3 scripts/compare/summary.py $(for run in $(seq 1 "$RUNS"); do echo "$OUT/run$run/goals.json"; done)
fi
if [ -n "${KEEP_JSON:-}" ]; then
  for run in $(seq 1 "$RUNS"); do
    D="$KEEP_JSON"; if [ "$RUNS" -gt 1 ]; then D="$KEEP_JSON/run$run"; fi
    mkdir -p "$D" && cp "$OUT/run$run"/*.json "$D"/
  done
fi
