#!/usr/bin/env bash
# Makes the Python virtualenv the MCP client test uses (tests/mcp.rs), at target/python-venv,
# with the pinned packages of tests/python/requirements.txt from PyPI. Idempotent: does nothing
# when the venv already holds exactly those pins.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-venv
requirements=tests/python/requirements.txt
stamp="$venv/requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && exit 0

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing python3-venv" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

echo "creating $venv from $requirements" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
echo "$want" > "$stamp"
