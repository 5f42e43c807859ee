#!/usr/bin/env bash
# Fuzzes what a peer can send (fuzz/: the wire conversions, and the core handling peer
# messages and lookup answers) with libFuzzer: each target first replays its regression
# inputs (fuzz/regressions/TARGET/, crashes found before), then runs for FUZZ_SECONDS
# (default 60) from its corpus in target/fuzz-corpus/TARGET. A crash fails the script;
# libFuzzer saves the input under fuzz/artifacts/TARGET/: fix the bug, then move the input to
# fuzz/regressions/TARGET/ so that every later run replays it. scripts/test.sh (CI) runs this.
#
# The targets are built as `cargo fuzz build --sanitizer none --debug-assertions` builds them
# (the same sanitizer-coverage instrumentation for libFuzzer, `--cfg fuzzing`), but on the
# fuzzed crates only (below), and with plain cargo: a fresh machine needs no cargo-fuzz, whose install took CI several minutes, and the
# default codegen units instead of cargo fuzz's one per crate, which made the build of every
# dependency serial. (With cargo-fuzz installed, `cargo fuzz run TARGET` works on fuzz/ too.)
# No sanitizer: the stable toolchain builds this instrumentation, not ASan, and the code is
# safe Rust; debug assertions on, so overflows and broken invariants panic.
#
# Only the crates fuzzed are instrumented (scripts/fuzz-rustc.sh, a RUSTC_WRAPPER): this
# node's library, the targets and prost. cargo fuzz instruments every dependency (tonic,
# OpenTelemetry, rustls, redb...), which the targets barely run and whose edges would only
# dilute the feedback: on 2 cores the build took 319 s that way and takes 127 s this way, and
# `wire` runs about 3 times as many inputs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
FLAGS=(-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing -Cdebug-assertions)
case "$TRIPLE" in *-linux-*) FLAGS+=(-Cllvm-args=-sanitizer-coverage-stack-depth) ;; esac
start=$SECONDS
# --target keeps the instrumentation off build scripts and proc macros, as cargo fuzz does.
# Cargo does not see the wrapper's flags: after changing FLAGS, remove target/fuzz-only.
FUZZ_INSTRUMENT="${FLAGS[*]}" RUSTC_WRAPPER="$PWD/scripts/fuzz-rustc.sh" \
  cargo build --manifest-path fuzz/Cargo.toml --locked --release \
  --target "$TRIPLE" --target-dir target/fuzz-only --bins --quiet
echo "fuzz: targets built in $((SECONDS - start)) s"
BINS=target/fuzz-only/$TRIPLE/release
TARGETS=$(sed -n 's/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml | grep -v '^kademlia-fuzz$')
for target in $TARGETS; do
  regressions="fuzz/regressions/$target"
  if compgen -G "$regressions/*" >/dev/null; then
    echo "fuzz $target: replaying $(ls "$regressions" | wc -l) regression inputs"
    "$BINS/$target" -runs=1 "$regressions"/*
  fi
  corpus="target/fuzz-corpus/$target"
  artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz $target: ${SECONDS_EACH}s"
  log="target/fuzz-$target.log"
  status=0
  "$BINS/$target" -artifact_prefix="$artifacts/" -max_total_time="$SECONDS_EACH" -max_len=4096 \
    -rss_limit_mb=2048 -print_final_stats=1 "$corpus" >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -60 "$log"
    echo "fuzz $target: FAILED (exit $status); the input is under $artifacts/" >&2
    exit 1
  fi
done
