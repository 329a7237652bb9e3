#!/usr/bin/env bash
# Create .venv and install lienthong with its test tools (pinned in pyproject's `dev` extra).
# pip's output goes to .venv/setup.log; it is shown only if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$PYTHON" --version) ..."
  "$PYTHON" -m venv .venv
fi
log=.venv/setup.log
echo "Installing lienthong and its tools into .venv (log: $log) ..."
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "Error: installing lienthong's dependencies failed (see $log)." >&2
  echo "Try: check that this machine reaches the Python package index, then run this again." >&2
  exit 1
fi
