#!/usr/bin/env bash
# Installs the system packages the test suite talks to, from Debian's archive.
# Idempotent: does nothing when everything is already there.
#   prometheus-alertmanager  the real Alertmanager, used as a webhook client in tests
#   openssh-server           Debian's sshd, which the SSH executor is tested against
#   openssh-client, curl     the README's lab walkthrough, run as a test
#   bsdutils                 script(1), a terminal for the CLI's colour test (essential, so normally there)
#   chromium, chromium-driver  headless Chromium and its WebDriver, which drive the web page
set -euo pipefail

missing=()
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Keep the packages' maintainer scripts from starting their daemons: the tests start their own,
# on loopback, with their own config.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" -eq 1 ] && $sudo rm -f "$policy"; }
trap cleanup EXIT

echo "installing test dependencies: ${missing[*]}" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
