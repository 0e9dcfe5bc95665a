#!/usr/bin/env bash
# The whole test suite: installs what the tests talk to (Debian packages via apt-get, the
# pinned MCP Python client via pip), then runs every test with cargo-nextest. `.ci/run` calls
# this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
scripts/install-python-deps.sh
exec cargo nextest run --workspace --no-fail-fast "$@"
