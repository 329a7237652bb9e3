#!/usr/bin/env bash
# Set up and run every check: generated code in step, lint, Dockerfile lint, the whole test suite.
# CI runs exactly this (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# System tools the tests use, from Debian's packages: openssl (an independent TLS client for
# the security tests), libfaketime (a node process whose clock runs days off), promtool (from
# `prometheus`: the console's /metrics and alert rules) and chromium with its driver (the
# console's pages driven by a real headless browser), LibreOffice's writer without its GUI and
# the Liberation fonts (Times-metric, with Vietnamese glyphs) for `report draft --format pdf`, and
# postgresql (the PostgreSQL sink's tests start their own cluster with its initdb).
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1 ] || missing+=(faketime)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v soffice >/dev/null 2>&1 || missing+=(libreoffice-writer-nogui)
[ -e /usr/share/fonts/truetype/liberation2/LiberationSerif-Regular.ttf ] || missing+=(fonts-liberation2)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (system tools the tests use)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Error: the tests need ${missing[*]}, which this machine does not have." >&2
    echo "Try: sudo apt-get install ${missing[*]} (or your system's packages), then run this again." >&2
    exit 1
  fi
fi
echo "== generated wire code matches proto/"
.venv/bin/python proto/generate.py --check
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
echo "== architecture contracts (import-linter: layers, wire code, no cycles)"
.venv/bin/lint-imports --no-cache
echo "== types (mypy: strict on sync/)"
# The folders are installed as lienthong.sync, .node, .adapters, .config: link them under one root for mypy.
mkdir -p .venv/typing-root/lienthong
for part in sync node adapters config; do ln -sfn "$PWD/$part" ".venv/typing-root/lienthong/$part"; done
.venv/bin/mypy
echo "== hadolint"
.venv/bin/hadolint Dockerfile
echo "== wheel (python -m build): tests/test_wheel.py installs it into a clean venv"
rm -rf dist
.venv/bin/python -m build --wheel --no-isolation --outdir dist . >/dev/null
LIENTHONG_WHEEL="$(ls "$PWD"/dist/lienthong-*.whl)"
export LIENTHONG_WHEEL
echo "== tests"
# Two workers: most of the suite waits on real node processes, so two cores run it in about half
# the time. `-n 0` (or any -n) after the command overrides it.
exec .venv/bin/python -m pytest -n 2 --durations=15 "$@"
