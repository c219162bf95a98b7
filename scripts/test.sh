#!/usr/bin/env bash
# Run the test suite; installs (or refreshes) .venv first, so a fresh clone needs nothing else.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CRYPTOBEAM_SKIP_DEMO=1 bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
