#!/usr/bin/env bash
# Builds cargo-deny (pinned) from crates.io into target/tools, for .ci/run's offline dependency
# policy check (deny.toml). Idempotent: an installed binary of the pinned version is left alone,
# so a warm CI does not rebuild it.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
bin=target/tools/bin/cargo-deny
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  exit 0
fi
echo "installing cargo-deny $version into target/tools" >&2
# Its release profile asks for fat LTO and one codegen unit: minutes of CPU for a tool that
# runs for a second. Plain optimised code builds in a fraction of the time.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_TARGET_DIR=target/tools/build cargo install cargo-deny --locked --version "$version" \
  --root target/tools --quiet
rm -rf target/tools/build
