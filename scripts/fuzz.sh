#!/usr/bin/env bash
# Fuzzes what a peer can send (fuzz/: the wire conversions, and the core handling peer
# messages and lookup answers) with cargo fuzz (libFuzzer): each target first replays its
# regression inputs (fuzz/regressions/TARGET/, crashes found before), then runs for
# FUZZ_SECONDS (default 60) from its corpus in target/fuzz-corpus/TARGET. A crash fails the
# script; libFuzzer saves the input under fuzz/artifacts/TARGET/: fix the bug, then move the
# input to fuzz/regressions/TARGET/ so that every later run replays it.
# scripts/test.sh (CI) runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
# Like cargo-nextest (scripts/test.sh): a machine that lacks cargo-fuzz gets it from
# crates.io once, beside cargo, so that later runs and fresh clones reuse it.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: installing it from crates.io (a few minutes)" >&2
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
# No sanitizer: the stable toolchain builds the instrumentation for libFuzzer, not ASan (the
# code is safe Rust); debug assertions on, so overflows and broken invariants panic.
FUZZ=(--sanitizer none --debug-assertions --target-dir target/fuzz)
start=$SECONDS
cargo fuzz build "${FUZZ[@]}"
echo "fuzz: targets built in $((SECONDS - start)) s"
for target in $(cargo fuzz list); do
  regressions="fuzz/regressions/$target"
  if compgen -G "$regressions/*" >/dev/null; then
    echo "fuzz $target: replaying $(ls "$regressions" | wc -l) regression inputs"
    cargo fuzz run "${FUZZ[@]}" "$target" "$regressions"/* -- -runs=1
  fi
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz $target: ${SECONDS_EACH}s"
  log="target/fuzz-$target.log"
  status=0
  cargo fuzz run "${FUZZ[@]}" "$target" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -60 "$log"
    echo "fuzz $target: FAILED (exit $status); the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
