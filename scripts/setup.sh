#!/usr/bin/env bash
# Installs what building and testing the agent needs: the musl targets, and the Debian packages
# used by the tests (iproute2 for the partition test's network namespaces). Safe to run again.
set -euo pipefail

rustup target add x86_64-unknown-linux-musl >/dev/null

need=()
command -v unshare >/dev/null || need+=(util-linux)
command -v file >/dev/null || need+=(file)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]}" >&2
    exit 1
  fi
fi
