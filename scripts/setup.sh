#!/usr/bin/env bash
# Installs what building and testing the agent needs: the musl targets, and the Debian packages
# used by the tests. Safe to run again.
set -euo pipefail

rustup target add x86_64-unknown-linux-musl >/dev/null

need=()
command -v unshare >/dev/null || need+=(util-linux)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]}" >&2
    exit 1
  fi
fi
