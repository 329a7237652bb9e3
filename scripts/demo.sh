#!/usr/bin/env bash
# Set up (first run only) and run the demo: a province and subordinate nodes on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lienthong demo "$@"
