#!/usr/bin/env bash
# Set up and run every check: generated code in step, lint, Dockerfile lint, the whole test suite.
# CI runs exactly this (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== generated wire code matches proto/"
.venv/bin/python proto/generate.py --check
echo "== ruff"
.venv/bin/ruff check .
echo "== hadolint"
.venv/bin/hadolint Dockerfile
echo "== tests"
exec .venv/bin/python -m pytest "$@"
