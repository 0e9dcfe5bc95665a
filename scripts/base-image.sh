#!/usr/bin/env bash
# Provides the Debian base image the Dockerfile's runtime stage starts from, built on this
# machine: no container registry is reachable from here or from CI. A minimal debootstrap
# (minbase) of bookworm from the Debian mirror apt already uses, imported into podman under the
# name the Dockerfile uses. The root filesystem tarball is cached under target/, so later runs
# only import it (or do nothing when podman has the image).
#   scripts/base-image.sh            the image, for `podman build --pull=never`
#   scripts/base-image.sh --tarball  only the tarball (tests/fresh_install.rs unpacks it)
set -euo pipefail
cd "$(dirname "$0")/.."

image=docker.io/library/debian:bookworm-slim
dir=target/base-image
tarball=$dir/bookworm-minbase.tar
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

# Tests run in parallel: one builds, the others wait for it.
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9

if [ ! -s "$tarball" ]; then
  echo "base-image: debootstrap bookworm (minbase) from $mirror into $dir" >&2
  rm -rf "$dir/rootfs" "$tarball.partial"
  mkdir -p "$dir"
  debootstrap --variant=minbase bookworm "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
    tail -n 20 "$dir/debootstrap.log" >&2
    exit 1
  }
  # What a slim image leaves out: apt's package lists and caches, docs and man pages.
  rm -rf "$dir"/rootfs/var/lib/apt/lists/* "$dir"/rootfs/var/cache/apt/*.bin \
    "$dir"/rootfs/usr/share/doc/* "$dir"/rootfs/usr/share/man/*
  tar -C "$dir/rootfs" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  rm -rf "$dir/rootfs"
fi
[ "${1:-}" = --tarball ] && exit 0

if ! podman image exists "$image"; then
  echo "base-image: importing $tarball as $image" >&2
  podman import --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
fi
