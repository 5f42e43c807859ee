#!/usr/bin/env bash
# Builds the kademlia:latest image with no network access: a static binary compiled on the
# host (glibc's static getaddrinfo still reads /etc/hosts and Docker's DNS), packaged by the
# Dockerfile's `prebuilt` stage onto `scratch`. Used by the tests, CI and p2p_setup.md.
# Usage: scripts/build-image.sh [IMAGE]   (default kademlia:latest; also tagged
# kademlia:<crate version>, the tag deploy/ uses)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-kademlia:latest}
# Run from a test (the p2p_setup walkthrough runs this script), the environment holds what
# cargo-nextest sets for a test: OUT_DIR, CARGO_MANIFEST_DIR, CARGO_PKG_*... ring's build
# script reruns when any of them changes, and the whole build after it: clear them.
for var in $(compgen -e | grep -E '^(OUT_DIR|CARGO_(MANIFEST_|PKG_|CRATE_NAME|BIN_|PRIMARY_PACKAGE|TARGET_TMPDIR|RUSTC_CURRENT_DIR|CFG_|FEATURE_))'); do
  unset "$var"
done
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu
# The classic builder (no BuildKit plugin needed); it stops at the requested stage.
if ! out=$(DOCKER_BUILDKIT=0 docker build --quiet --target prebuilt -t "$IMAGE" . 2>&1); then
  echo "$out" >&2
  exit 1
fi
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
docker tag "$IMAGE" "kademlia:$VERSION"
docker image inspect "$IMAGE" --format "built $IMAGE (and kademlia:$VERSION): {{.Size}} bytes"
