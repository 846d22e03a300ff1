#!/usr/bin/env bash
# Installs what building and testing the agent needs: the Rust targets of the release builds,
# C compilers for ring (the TLS build's crypto has C and assembly), and the Debian packages the
# tests use. Safe to run again; quiet when everything is there.
set -euo pipefail

# x86_64 and aarch64 are musl; 32-bit ARM is static glibc (rustup offers no armv7 musl here).
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  rustup target add "$target" >/dev/null 2>&1
done

need=()
# musl-gcc for C in the x86_64 musl build; cross compilers and linkers (named in
# .cargo/config.toml) for aarch64 and armv7.
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
# Namespaces and chroot for PID 1 and empty-root runs; `file` to check that builds are static.
command -v unshare >/dev/null || need+=(util-linux)
command -v chroot >/dev/null || need+=(coreutils)
command -v file >/dev/null || need+=(file)
# The aarch64 and armv7 binaries run under qemu-user in tests/cross.rs.
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# podman and runc, without a Docker engine: the scratch image (tests/container.rs) and the real
# engine the agent lists containers from (tests/containers.rs, with a static busybox inside).
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# podman's init for `init: true` (tests/deploy_apply.rs); Docker brings its own (docker-init).
dpkg -s catatonit >/dev/null 2>&1 || need+=(catatonit)
# Debian's Docker daemon, started by tests/deploy_apply.rs on a private socket only: podman runs
# no health checks here (it needs systemd), dockerd does.
command -v dockerd >/dev/null || need+=(docker.io)
# An image registry on loopback, the one a test can pull from (tests/deploy_apply.rs, pull_policy).
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils) # its bcrypt login file
# Network namespaces for tests/partition.rs.
command -v ip >/dev/null || need+=(iproute2)

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq "$@" >/dev/null; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: please install these Debian packages: ${need[*]}" >&2
    exit 1
  fi
  apt_get update
  apt_get install -y "${need[@]}"
fi
# systemd-analyze verifies the unit of scripts/install.sh. Where systemd cannot be installed
# (some containers), tests/packaging.rs says it skipped that check.
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ]; then
  apt_get install -y systemd || echo "setup: systemd could not be installed: the systemd unit will not be verified" >&2
fi
