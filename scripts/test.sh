#!/usr/bin/env bash
# Run the test suite; sets up first what is missing (all of it on a fresh clone, nothing once it is there).
#   bash scripts/test.sh             everything
#   bash scripts/test.sh ARGS...     pytest with these arguments (one file, -m "not integration", ...)
set -euo pipefail
cd "$(dirname "$0")/.."
CRYPTOBEAM_SKIP_DEMO=1 bash scripts/setup.sh
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# Everything: the Flink tests spend most of their time waiting on their cluster, so they run in a
# second pytest process beside the rest. Disjoint port ranges keep the two from picking one port.
mkdir -p test-artifacts
CRYPTOBEAM_PORT_RANGE=20000-24999 .venv/bin/python -m pytest -m flink -p no:cacheprovider \
  >test-artifacts/flink-tests.log 2>&1 &
flink=$!
status=0
CRYPTOBEAM_PORT_RANGE=25000-29999 .venv/bin/python -m pytest -m "not flink" || status=$?
flink_status=0
wait "$flink" || flink_status=$?
echo "== the Flink tests (test-artifacts/flink-tests.log) =="
tail -n 40 test-artifacts/flink-tests.log
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$flink_status"
