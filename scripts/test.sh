#!/usr/bin/env bash
# Run the test suite; sets up first what is missing (all of it on a fresh clone, nothing once it is there).
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CRYPTOBEAM_SKIP_DEMO=1 bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
