#!/usr/bin/env bash
# Installs what building and testing the agent needs: the Rust targets of the release builds,
# and the Debian packages the tests use. Safe to run again.
set -euo pipefail

# x86_64 and aarch64 are musl; 32-bit ARM is static glibc (rustup offers no armv7 musl here).
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  rustup target add "$target" >/dev/null
done

need=()
# Namespaces and chroot for the empty-root runs; `file` to check that builds are static.
command -v unshare >/dev/null || need+=(util-linux)
command -v chroot >/dev/null || need+=(coreutils)
command -v file >/dev/null || need+=(file)
# Cross linkers (named in .cargo/config.toml), and musl-gcc for C in the x86_64 musl build.
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
command -v musl-gcc >/dev/null || need+=(musl-tools)
# The aarch64 and armv7 binaries run under qemu-user in tests/cross.rs.
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# The scratch image is built and run without a Docker engine (tests/container.rs).
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)

install() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup: please install: $*" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}

if [ ${#need[@]} -gt 0 ] || ! command -v systemd-analyze >/dev/null; then
  [ "$(id -u)" = 0 ] && apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  install "${need[@]}"
fi
# systemd-analyze verifies the unit of scripts/install.sh; where systemd cannot be installed
# (some containers), tests/packaging.rs says it skipped that check.
if ! command -v systemd-analyze >/dev/null; then
  install systemd || echo "setup: systemd could not be installed: the systemd unit will not be verified" >&2
fi
