#!/usr/bin/env bash
# Times the node's page in headless Chromium (tests/support/page_check.py) against a devnet
# of NODES nodes (default 101, so that node 0 has about 100 contacts at k = 20): from
# navigation to the first drawing with all of node 0's contacts, and from pressing Enter on
# a key to the drawing of its lookup. RUNS runs (default 5); the binary is MEASURE_BIN or a
# release build. Needs scripts/setup-tools.sh (Chromium, the virtualenv).
# Usage: scripts/measure-page.sh [NODES] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-101}
RUNS=${2:-5}
BIN=${MEASURE_BIN:-target/release/kademlia}
[ -x "$BIN" ] || cargo build --release --locked --quiet
BASE=${BASE_PORT:-21000}  # below the ephemeral port range
HTTP=$((BASE + 2000))
log=$(mktemp)
"$BIN" devnet --nodes "$NODES" --base-port "$BASE" --http-base-port "$HTTP" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log" target/measure-page.png' EXIT
timeout 120 sh -c "until grep -q '^ready:' '$log'; do sleep 0.2; done" || { tail -5 "$log" >&2; exit 1; }
for i in $(seq 1 20); do "$BIN" put "measure-$i" v -a "127.0.0.1:$((BASE + NODES / 2))" >/dev/null; done
contacts=$("$BIN" routes -a "127.0.0.1:$BASE" | head -1 | sed 's/.*: \([0-9]*\) contacts.*/\1/')
echo "node 0 has $contacts contacts in a devnet of $NODES"
for run in $(seq 1 "$RUNS"); do
  .tools/venv/bin/python3 tests/support/page_check.py "http://127.0.0.1:$HTTP/" \
    --key "measure-$run" --contacts "$contacts" --screenshot target/measure-page.png |
    .tools/venv/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print("run: first drawing %.1f ms, lookup drawn %.1f ms after Enter, %d contacts drawn, errors %s" % (r["first_drawing_ms"], r["lookup_drawn_ms"], r["contacts"], r["errors"]))'
done
