#!/usr/bin/env bash
# A local Flink session cluster's parts, for runners/local_flink. Idempotent: each part is
# redone only when its marker (which records its version) is missing or stale.
#  1. Flink itself: the distribution (bin/, lib/, conf/) that the apache-flink wheel ships inside
#     pyflink/, in its own virtualenv .tools/flink/venv, because the wheel pins an old apache-beam
#     that must never reach .venv. The Apache archive's tarball cannot be downloaded here.
#  2. Beam's Flink job server jar, shaded by Maven from the Flink runner's jars on Maven Central
#     (runners/local_flink/pom.xml says why it is not the ready-made job-server artifact).
#  3. Beam's Python SDK boot program, from the Go module proxy at the installed apache-beam's
#     version: the command a PROCESS environment runs to start Python workers.
set -euo pipefail
cd "$(dirname "$0")/.."
FLINK_PYPI_VERSION="1.19.3"  # the cluster; must match FLINK_VERSION in runners/local_flink/__init__.py
TOOLS="$PWD/.tools/flink"
PYTHON="${PYTHON:-python3.11}"
mkdir -p "$TOOLS"

if [ "$(cat "$TOOLS/venv/.complete" 2>/dev/null)" != "$FLINK_PYPI_VERSION" ]; then
  rm -rf "$TOOLS/venv"
  "$PYTHON" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --upgrade pip
  "$TOOLS/venv/bin/python" -m pip install --quiet "apache-flink==$FLINK_PYPI_VERSION"
  echo "$FLINK_PYPI_VERSION" > "$TOOLS/venv/.complete"
fi
"$TOOLS/venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))' > "$TOOLS/flink_home"

POM_HASH="$(sha256sum runners/local_flink/pom.xml | cut -d' ' -f1)"
if [ "$(cat "$TOOLS/jars/.complete" 2>/dev/null)" != "$POM_HASH" ]; then
  rm -rf "$TOOLS/jars"
  mvn -q -B -f runners/local_flink/pom.xml package -Djars.dir="$TOOLS/jars"
  rm -rf "$TOOLS/jars/build"
  echo "$POM_HASH" > "$TOOLS/jars/.complete"
fi

BEAM_VERSION="$(.venv/bin/python -c 'import apache_beam; print(apache_beam.__version__)')"
bash scripts/go_install.sh github.com/apache/beam/sdks/v2/python/container "$BEAM_VERSION" "$TOOLS/bin" beam-python-boot
