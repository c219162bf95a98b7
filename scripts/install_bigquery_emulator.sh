#!/usr/bin/env bash
# The local BigQuery emulator the tests run against: local-bigquery 0.3.2 in its own Python 3.13
# virtualenv (it needs 3.13), with DuckDB 1.5.5's extensions installed from their PyPI wheels into a
# private HOME, because DuckDB's extension host cannot be reached. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/.tools/bigquery-emulator"
PY313="${PYTHON313:-}"
if [ -z "$PY313" ] && command -v pyenv >/dev/null 2>&1; then PY313="$(pyenv root)/versions/3.13.0/bin/python3.13"; fi
if [ -z "$PY313" ] || [ ! -x "$PY313" ]; then PY313="$(command -v python3.13 || true)"; fi
if [ -z "$PY313" ]; then echo "install_bigquery_emulator: Python 3.13 not found (set PYTHON313)" >&2; exit 1; fi
if [ ! -x "$ROOT/venv/bin/local-bigquery" ]; then
  "$PY313" -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install --quiet local-bigquery==0.3.2 duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \
    duckdb-extension-spatial==1.5.5 duckdb-extension-icu==1.5.5
fi
mkdir -p "$ROOT/home"
HOME="$ROOT/home" "$ROOT/venv/bin/python" - <<'PY'
import glob, site
import duckdb
connection = duckdb.connect()
files = [f for root in site.getsitepackages() for f in glob.glob(f"{root}/duckdb_extension_*/extensions/*/*.duckdb_extension")]
assert files, "no DuckDB extension files found in the emulator's virtualenv"
for path in files:
    connection.execute(f"FORCE INSTALL '{path}'")
PY
