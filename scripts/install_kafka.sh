#!/usr/bin/env bash
# Kafka's jars for a local single-node KRaft broker, from Maven Central (the Apache archive's
# tarball cannot be downloaded here). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
LIBS="$PWD/.tools/kafka/libs"
if [ ! -f "$LIBS/.complete" ]; then
  rm -rf "$LIBS"
  mvn -q -B -f runners/local_kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
fi
