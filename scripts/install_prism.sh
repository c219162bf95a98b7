#!/usr/bin/env bash
# Prism, Beam's portable local runner, built from the Go module proxy at the same version as the
# installed apache-beam. Beam would otherwise download it from GitHub at run time, which fails
# without internet. Idempotent: .tools/prism/bin/prism-<version> is reused once built.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="$(.venv/bin/python -c 'import apache_beam; print(apache_beam.__version__)')"
BIN="$PWD/.tools/prism/bin"
TARGET="$BIN/prism-$VERSION"
if [ ! -x "$TARGET" ]; then
  mkdir -p "$BIN"
  GOBIN="$BIN.tmp" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$VERSION"
  mv "$BIN.tmp/prism" "$TARGET"
  rm -rf "$BIN.tmp"
fi
ln -sf "prism-$VERSION" "$BIN/prism"
