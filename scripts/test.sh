#!/usr/bin/env bash
# The whole test suite: installs test tools, checks formatting and lints, runs every test.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Each step says how long it took, so that a slow CI run shows where its time went.
step() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "== step '$name' took $((SECONDS - start)) s (total $SECONDS s)" >&2
}
step tools scripts/setup-tools.sh
export GRPCURL="$PWD/.tools/venv/bin/grpcurl"
step fmt cargo fmt --all -- --check
# Both lock files up to date (fuzz/ is a crate of its own, built by the last step): a stale one
# fails here in seconds rather than after the whole suite. (The crates fetched are needed anyway.)
HOST=$(rustc -vV | sed -n 's/^host: //p')
step locks bash -c "cargo fetch -q --locked --target $HOST &&
  cargo fetch -q --locked --target $HOST --manifest-path fuzz/Cargo.toml"
# The container tests run against this image, built offline from this checkout.
step image scripts/build-image.sh
step clippy cargo clippy --all-targets --locked -- -D warnings
# cargo-nextest bounds every test's runtime (.config/nextest.toml): a hang fails within
# minutes and names the test. The machines have it; a fresh one without it gets it here.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: installing it from crates.io (a few minutes)" >&2
  step install-nextest cargo install --locked cargo-nextest
fi
# Backstop: the whole run ends within 40 minutes even if nextest itself were stuck.
step tests timeout --signal=TERM --kill-after=60 40m cargo nextest run --locked --no-fail-fast
step doctests cargo test --locked --doc
# Coverage-guided fuzzing of what peers send, a bounded time per target (fuzz/, scripts/fuzz.sh).
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" step fuzz scripts/fuzz.sh
