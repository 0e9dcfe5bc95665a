#!/usr/bin/env bash
# Installs the system packages the test suite talks to, from Debian's archive, and says what
# each one is for as it installs it. Idempotent: does nothing when everything is already there.
# tests/fresh_install.rs runs this script in a fresh Debian root filesystem to prove it.
set -euo pipefail

# package, the file that shows it is installed, and what the tests use it for.
packages=(
  "prometheus-alertmanager|/usr/bin/prometheus-alertmanager|the real Alertmanager, a webhook client in tests and the compose file's alertmanager.yml"
  "prometheus|/usr/bin/promtool|promtool: checks deploy/prometheus's alert rules and lints a real /metrics scrape (tests/metrics.rs, tests/monitoring.rs)"
  "openssh-server|/usr/sbin/sshd|Debian's sshd, which the SSH executor is tested against"
  "openssh-client|/usr/bin/ssh|ssh, for the README's lab walkthrough (run as a test)"
  "curl|/usr/bin/curl|curl, for the README's lab walkthrough (run as a test)"
  "bsdutils|/usr/bin/script|script(1), a terminal for the CLI's colour test"
  "chromium|/usr/bin/chromium|headless Chromium, which drives the web page"
  "chromium-driver|/usr/bin/chromedriver|Chromium's WebDriver"
  "podman|/usr/bin/podman|builds and runs the Dockerfile's image (tests/container.rs)"
  "runc|/usr/sbin/runc|the OCI runtime podman runs that image with here"
  "debootstrap|/usr/sbin/debootstrap|builds the Debian base image locally (no container registry is reachable)"
  "kubernetes-client|/usr/bin/kubectl|kubectl: kubectl kustomize renders deploy/kubernetes offline (tests/deploy.rs)"
  "systemd|/usr/bin/systemd-analyze|systemd-analyze verify checks the unit in deploy/systemd"
  "sqlite3|/usr/bin/sqlite3|the sqlite3 shell, another program holding the database's write lock (tests/faults.rs)"
  "gcc|/usr/bin/gcc|compiles the slow-fsync LD_PRELOAD shim (tests/faults.rs)"
)

missing=()
for entry in "${packages[@]}"; do
  IFS='|' read -r package file why <<<"$entry"
  [ -e "$file" ] || missing+=("$package|$why")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Keep the packages' maintainer scripts from starting their daemons: the tests start their own,
# on loopback, with their own config. A policy-rc.d that is already there is left as it was.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
cleanup() {
  # An `if`, not `[ ... ] && ...`: a false test must not become the script's exit status.
  if [ "$created_policy" -eq 1 ]; then
    $sudo rm -f "$policy"
  fi
}
trap cleanup EXIT

echo "install-test-deps: updating the package lists" >&2
$sudo apt-get update -qq
names=()
for entry in "${missing[@]}"; do
  IFS='|' read -r package why <<<"$entry"
  echo "install-test-deps: installing $package: $why" >&2
  names+=("$package")
done
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${names[@]}" >/dev/null
# The tests start their own sshd and Alertmanager on loopback and only need Prometheus's
# promtool; a developer's machine must not start any of them at boot because the test set-up
# installed it.
for pair in openssh-server:ssh.service prometheus-alertmanager:prometheus-alertmanager.service prometheus:prometheus.service; do
  package=${pair%%:*}
  unit=${pair#*:}
  if [[ " ${names[*]} " == *" $package "* ]]; then
    echo "install-test-deps: disabling $unit at boot (the tests start their own)" >&2
    $sudo systemctl disable "$unit" >/dev/null 2>&1 || true
    $sudo systemctl stop "$unit" >/dev/null 2>&1 || true
  fi
done
echo "install-test-deps: done" >&2
