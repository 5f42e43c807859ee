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
cargo test --locked --no-fail-fast -- --test-threads=2
