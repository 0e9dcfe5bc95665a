#!/usr/bin/env bash
# Makes the Python virtualenvs the tests run, each from its own pinned requirements file on PyPI:
#   target/python-venv            tests/python/requirements.txt            the MCP SDK 2.x (tests/mcp.rs)
#   target/python-venv-langchain  tests/python/requirements-langchain.txt  mcp 1.x + langchain-mcp-adapters (tests/mcp.rs)
#   target/python-venv-contract   tests/python/requirements-contract.txt   schemathesis, openapi-spec-validator (tests/api_contract.rs)
# Separate venvs, because langchain-mcp-adapters needs mcp<2. Idempotent: a venv whose stamp
# matches its requirements file is left alone. Only installing reaches the network (PyPI); the
# tests run offline against loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing python3-venv" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

install() {
  local venv=$1 requirements=$2
  local stamp="$venv/requirements.sha256"
  local want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  echo "creating $venv from $requirements" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
  echo "$want" > "$stamp"
}

install target/python-venv tests/python/requirements.txt
install target/python-venv-langchain tests/python/requirements-langchain.txt
install target/python-venv-contract tests/python/requirements-contract.txt
