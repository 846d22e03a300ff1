#!/usr/bin/env bash
# Release builds of the agent, one static file per target:
#
#   bash scripts/build.sh [TARGET...]      # default: the three targets below
#
# Each lands in dist/<target>/miaas-agent, with dist/SHA256SUMS over all of dist/. The release
# profile (Cargo.toml) already strips and optimises for size; the cross linkers are named in
# .cargo/config.toml. Missing rustup targets and Debian cross compilers are installed; what
# cannot be installed stops the build with one line saying what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# 32-bit ARM is glibc linked statically, not musl: rustup offers no armv7 musl standard
# library to this machine (README, "Builds").
default_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${default_targets[@]}"); fi

die() {
  echo "build: $*" >&2
  exit 1
}

# The Debian package that brings a target's linker (the one .cargo/config.toml names).
linker_package() {
  case "$1" in
    x86_64-unknown-linux-musl) ;; # rustc links it with its own self-contained musl
    aarch64-unknown-linux-musl) echo gcc-aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo gcc-arm-linux-gnueabihf ;;
    *) die "no known linker for $1 (known: ${default_targets[*]})" ;;
  esac
}

linker_command() {
  case "$1" in
    gcc-aarch64-linux-gnu) echo aarch64-linux-gnu-gcc ;;
    gcc-arm-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
  esac
}

# The OCI name of a target's architecture, as TARGETARCH spells it.
image_arch() {
  case "$1" in
    x86_64-*) echo amd64 ;;
    aarch64-*) echo arm64 ;;
    armv7-*) echo arm ;;
  esac
}

# Tools first, so a missing one fails before minutes of compiling.
installed_targets=$(rustup target list --installed)
packages=()
for target in "${targets[@]}"; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    rustup target add "$target" >/dev/null 2>&1 ||
      die "rustup cannot install the $target standard library (offline, or not offered for this toolchain)"
  fi
  package=$(linker_package "$target")
  if [ -n "$package" ] && ! command -v "$(linker_command "$package")" >/dev/null; then
    packages+=("$package")
  fi
done
# musl-gcc compiles C for the x86_64 musl build (ring, with the `tls` feature).
command -v musl-gcc >/dev/null || packages+=(musl-tools)
if [ ${#packages[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
    die "please install the Debian packages ${packages[*]} (needs root and apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o DPkg::Lock::Timeout=300 "${packages[@]}"; } >/dev/null 2>&1 ||
    die "apt-get could not install ${packages[*]}"
fi

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p dist
for target in "${targets[@]}"; do
  echo "build: $target" >&2
  cargo build --release --locked --target "$target"
  mkdir -p "dist/$target"
  cp "$target_dir/$target/release/miaas-agent" "dist/$target/miaas-agent"
  # A dynamically linked file would not run in a scratch image or on a board without that libc.
  description=$(file -b "dist/$target/miaas-agent")
  case "$description" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) die "dist/$target/miaas-agent is not static: $description" ;;
  esac
  # The Containerfile picks the binary by the platform's architecture name; a hard link costs
  # no space.
  arch=$(image_arch "$target")
  mkdir -p "dist/image/$arch"
  ln -f "dist/$target/miaas-agent" "dist/image/$arch/miaas-agent"
  echo "build: dist/$target/miaas-agent: $(stat -c %s "dist/$target/miaas-agent") bytes, $description" >&2
done

# Checksums over everything in dist/, so a partial rebuild keeps the other targets' lines.
(cd dist && find . -path ./image -prune -o -name miaas-agent -type f -print | sed 's|^\./||' | sort | xargs sha256sum >SHA256SUMS)
echo "build: dist/SHA256SUMS" >&2
cat dist/SHA256SUMS >&2
