#!/usr/bin/env bash
# The benchmark (not a test): sizes, memory, CPU, wake-ups and start-up of the x86_64 build,
# printed as one Markdown table with each budget beside its figure. A few minutes.
#
#   bash scripts/bench.sh
#
# The run-time budgets are for the plain-HTTP build (--no-default-features), which is what runs
# here. Both sizes have a budget that fails the run (exit 1 at the end, one line per size over,
# said after the size rows and again at the end): the plain build ≤ 1 MiB, the default build (what scripts/build.sh puts in dist/)
# ≤ 2.5 MiB. Needs valgrind (installed when missing) and, for the image size, podman. The
# deployment figures (examples/bench-deploy.rs) run the default build over https:// with its
# channel open, and on Debian's dockerd and on podman's service, each beside Debian's
# docker-compose 1.29 (installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! command -v valgrind >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq valgrind; } >/dev/null 2>&1 ||
    { echo "bench: please install valgrind" >&2; exit 1; }
fi
if ! command -v docker-compose >/dev/null || ! command -v dockerd >/dev/null || ! command -v podman >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq docker.io docker-compose podman runc busybox-static; } >/dev/null 2>&1 ||
    echo "bench: docker.io, podman and docker-compose could not be installed: deployment figures only where an engine is" >&2
fi

# The plain-HTTP build first, kept aside; then the default build, into dist/.
echo "bench: building" >&2
cargo build --quiet --release --locked --target "$target" --no-default-features
cp "$target_dir/$target/release/miaas-agent" "$work/miaas-agent-plain"
bash scripts/build.sh "$target" 2>/dev/null
cargo build --quiet --release --locked --target "$target" --example bench --example bare-client --example bench-deploy
# ureq alone, with the plain agent's crate features (no TLS), for the agent's overhead over it.
cargo build --quiet --release --locked --target "$target" --no-default-features --example bare-ureq

size() { stat -c %s "$1"; }
kib() { awk -v b="$1" 'BEGIN { printf "%.0f KiB (%d bytes)", b / 1024, b }'; }

plain_budget=$((1024 * 1024))
default_budget=$((2560 * 1024))
plain_size=$(size "$work/miaas-agent-plain")
default_size=$(size "dist/$target/miaas-agent")
over=()
if [ "$plain_size" -gt "$plain_budget" ]; then
  over+=("bench: FAILED: the plain build (--no-default-features) is $plain_size bytes, over its budget of $plain_budget (1 MiB)")
fi
if [ "$default_size" -gt "$default_budget" ]; then
  over+=("bench: FAILED: the default build (dist/$target/miaas-agent) is $default_size bytes, over its budget of $default_budget (2.5 MiB)")
fi

echo
echo "| Figure | Measured | Budget |"
echo "|---|---|---|"
echo "| binary, plain HTTP (--no-default-features) | $(kib "$plain_size") | ≤ 1024 KiB |"
echo "| binary, default features | $(kib "$default_size") | ≤ 2560 KiB |"
# Said now as well, in case a later measurement stops the run first.
if [ ${#over[@]} -gt 0 ]; then printf '%s\n' "${over[@]}" >&2; fi

# The image: the Containerfile over the default build, in podman storage of its own.
if command -v podman >/dev/null; then
  podman=(podman --root "$work/podman/root" --runroot "$work/podman/run" --storage-driver vfs --runtime runc)
  if "${podman[@]}" build --quiet --isolation chroot -f Containerfile -t localhost/miaas-agent:bench . >/dev/null 2>"$work/podman.log"; then
    image=$("${podman[@]}" image inspect localhost/miaas-agent:bench --format '{{.Size}}')
    echo "| image (FROM scratch, default build) | $(kib "$image") = binary + $((image - $(size "dist/$target/miaas-agent"))) bytes | binary + a few KiB |"
  else
    echo "| image | podman build failed: $(tail -1 "$work/podman.log") | |"
  fi
  "${podman[@]}" rmi --all --force >/dev/null 2>&1 || true
else
  echo "| image | podman is not installed | |"
fi

examples=$target_dir/$target/release/examples
"$examples/bench" "$work/miaas-agent-plain" "$examples/bare-client" "$examples/bare-ureq"
"$examples/bench-deploy" "dist/$target/miaas-agent" 2> >(grep -v '^control-plane |' >&2)

# Log streaming: the default build against tests/logs.rs's fake engine and the test control
# plane, both built optimised (a debug-built control plane cannot take 80,000 lines a second);
# LTO off for that test build alone, which measures the agent binary, not itself.
echo "bench: log streaming" >&2
MIAAS_AGENT_BIN="$PWD/dist/$target/miaas-agent" CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  RUSTFLAGS="--cfg miaas_bench" CARGO_TARGET_DIR="$target_dir/bench" \
  cargo test --quiet --release --locked --test logs -- --nocapture --exact bench::bench_log_streaming 2>/dev/null |
  grep '^| log streaming' || echo "| log streaming | the benchmark failed: RUSTFLAGS='--cfg miaas_bench' cargo test --release --test logs -- --exact bench::bench_log_streaming | |"

if [ ${#over[@]} -gt 0 ]; then
  printf '%s\n' "${over[@]}" >&2
  exit 1
fi
