#!/usr/bin/env bash
# The whole test suite: installs test tools, checks formatting and lints, runs every test.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
scripts/setup-tools.sh
export GRPCURL="$PWD/.tools/venv/bin/grpcurl"
cargo fmt --all -- --check
# The container tests run against this image, built offline from this checkout.
scripts/build-image.sh
cargo clippy --all-targets --locked -- -D warnings
# cargo-nextest bounds every test's runtime (.config/nextest.toml): a hang fails within
# minutes and names the test. The machines have it; a fresh one without it gets it here.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: installing it from crates.io (a few minutes)" >&2
  cargo install --locked cargo-nextest
fi
# Backstop: the whole run ends within 40 minutes even if nextest itself were stuck.
timeout --signal=TERM --kill-after=60 40m cargo nextest run --locked --no-fail-fast
cargo test --locked --doc
# Coverage-guided fuzzing of what peers send, a bounded time per target (fuzz/, scripts/fuzz.sh).
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh
