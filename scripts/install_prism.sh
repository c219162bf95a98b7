#!/usr/bin/env bash
# Prism, Beam's portable local runner, built from the Go module proxy at the same version as the
# installed apache-beam. Beam would otherwise download it from GitHub at run time, which fails
# without internet. Idempotent: .tools/prism/bin/prism-<version> is reused once built.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="$(.venv/bin/python -c 'import apache_beam; print(apache_beam.__version__)')"
bash scripts/go_install.sh github.com/apache/beam/sdks/v2/go/cmd/prism "$VERSION" "$PWD/.tools/prism/bin" prism
