#!/usr/bin/env bash
# Set up and run every check: generated code in step, lint, Dockerfile lint, the whole test suite.
# CI runs exactly this (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The security tests talk to the node with a TLS client this project did not write.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing openssl (the independent TLS client the security tests use)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "Error: the tests need the openssl command line tool, and it is not installed." >&2
    echo "Try: sudo apt-get install openssl (or your system's package), then run this again." >&2
    exit 1
  fi
fi
echo "== generated wire code matches proto/"
.venv/bin/python proto/generate.py --check
echo "== ruff"
.venv/bin/ruff check .
echo "== hadolint"
.venv/bin/hadolint Dockerfile
echo "== tests"
exec .venv/bin/python -m pytest "$@"
