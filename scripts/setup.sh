#!/usr/bin/env bash
# Installs what building and testing the agent needs: the musl target, a C compiler for musl
# (ring, the TLS build's crypto, has C and assembly), and the Debian tools the tests use.
# Safe to run again; quiet when everything is there.
set -euo pipefail

rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1

need=()
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v unshare >/dev/null || need+=(util-linux)
command -v file >/dev/null || need+=(file)
# The real-engine test (tests/containers.rs): podman serves the Docker API and runs, with runc, a
# FROM scratch image holding a static busybox.
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: please install these Debian packages: ${need[*]}" >&2
    exit 1
  fi
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq "$@" >/dev/null; }
  apt_get update
  apt_get install -y "${need[@]}"
fi
