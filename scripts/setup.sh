#!/usr/bin/env bash
# Set up a fresh clone and run the main job on the bundled data set.
#   bash scripts/setup.sh
# Creates .venv in the repo root, installs cryptobeam with its test tools, then runs
# a backfill of data/XRPETH-aggTrades-*.zip into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The packages are installed again only when what decides them changed since the last set-up
# that finished: setup.py (and this script). Each install_*.sh below installs only what is missing.
STAMP=.venv/.cryptobeam-installed
WANTED="$(cat setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANTED" ] || [ ! -x .venv/bin/cryptobeam ]; then
  rm -f "$STAMP"
  .venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=68" wheel  # Beam builds the sdist Dataflow workers install
  .venv/bin/python -m pip install --quiet -e ".[test]"
fi
# The project is installed editable, so its own modules are imported from here; where the
# environment sets PYTHONDONTWRITEBYTECODE they would be compiled again at every start.
.venv/bin/python -m compileall -q beam_pipelines transforms io_connectors runners schemas benchmarks >/dev/null
bash scripts/install_bigquery_emulator.sh   # a real BigQuery emulator for the sink tests
bash scripts/install_kafka.sh               # Kafka's jars for a real local broker
bash scripts/install_prism.sh               # Prism, the local streaming runner, from the Go module proxy
bash scripts/install_flink.sh               # a Flink 1.19 cluster (own venv) and Beam's Flink job server jar
bash scripts/install_debian_packages.sh     # Prometheus with promtool, and Chromium for the report's browser test
bash scripts/install_anvil.sh               # anvil, a local Ethereum node for the chain tests, from the npm registry
bash scripts/install_solc.sh                # solc for the test that recompiles contracts/*.sol against contracts/compiled.json
echo "$WANTED" > "$STAMP"
if [ "${CRYPTOBEAM_SKIP_DEMO:-0}" != "1" ]; then
  .venv/bin/cryptobeam backfill --source binance-aggtrades --input 'data/XRPETH-aggTrades-*.zip' \
    --interval 1m --fill-gaps --out out/ --overwrite
fi
