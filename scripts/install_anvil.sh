#!/usr/bin/env bash
# anvil, Foundry's local Ethereum node, for the on-chain tests: from the npm registry, where each
# platform's binary is its own package (@foundry-rs/anvil-<os>-<arch>, what @foundry-rs/anvil picks
# for the machine). Only that package is installed, with its scripts off, so nothing but npm is
# contacted. Idempotent: an installed binary of this version is kept. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.7.1
ROOT="$PWD/.tools/anvil"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) PLATFORM=linux-amd64 ;;
  Linux-aarch64 | Linux-arm64) PLATFORM=linux-arm64 ;;
  Darwin-x86_64) PLATFORM=darwin-amd64 ;;
  Darwin-arm64) PLATFORM=darwin-arm64 ;;
  *) echo "install_anvil: no anvil package for $(uname -s) $(uname -m)" >&2; exit 1 ;;
esac
BINARY="$ROOT/node_modules/@foundry-rs/anvil-$PLATFORM/bin/anvil"
if [ ! -x "$BINARY" ] || ! "$BINARY" --version 2>/dev/null | grep -q "Version: $VERSION\b"; then
  command -v npm >/dev/null 2>&1 || { echo "install_anvil: npm not found" >&2; exit 1; }
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  npm install --prefix "$ROOT" --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
    "@foundry-rs/anvil-$PLATFORM@$VERSION" >/dev/null
fi
ln -sf "node_modules/@foundry-rs/anvil-$PLATFORM/bin/anvil" "$ROOT/anvil"
"$BINARY" --version | head -1 >&2
echo "$ROOT/anvil"
