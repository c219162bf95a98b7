#!/usr/bin/env bash
# go_install.sh PACKAGE VERSION BIN_DIR NAME: build a Go command from the Go module proxy into
# BIN_DIR/NAME-VERSION once, and point BIN_DIR/NAME at it. Used for Prism and Beam's Python boot.
set -euo pipefail
PACKAGE="$1"; VERSION="$2"; BIN="$3"; NAME="$4"
TARGET="$BIN/$NAME-$VERSION"
if [ ! -x "$TARGET" ]; then
  mkdir -p "$BIN"
  GOBIN="$BIN/.tmp-$NAME" GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$PACKAGE@v$VERSION"
  mv "$BIN/.tmp-$NAME/$(basename "$PACKAGE")" "$TARGET"
  rm -rf "$BIN/.tmp-$NAME"
fi
ln -sf "$NAME-$VERSION" "$BIN/$NAME"
