#!/usr/bin/env bash
# solcjs, the Solidity compiler of the npm registry, at the version contracts/compiled.json was
# built with, so tests/test_ethereum_rpc.py can compile contracts/*.sol again and compare the
# bytecode with the committed artifact. Idempotent. Prints the compiler's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.8.37
ROOT="$PWD/.tools/solc"
SOLCJS="$ROOT/node_modules/.bin/solcjs"
if [ ! -x "$SOLCJS" ] || ! "$SOLCJS" --version 2>/dev/null | grep -q "^$VERSION+"; then
  command -v npm >/dev/null 2>&1 || { echo "install_solc: npm not found" >&2; exit 1; }
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  npm install --prefix "$ROOT" --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
    "solc@$VERSION" >/dev/null
fi
"$SOLCJS" --version >&2
echo "$SOLCJS"
