#!/usr/bin/env bash
# The test suite: lints, the release builds of every target, then every test against the static
# musl binary, the cross-built ones under qemu-user, and the image under podman.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --all-targets --workspace --target x86_64-unknown-linux-musl -- -D warnings

# The end-to-end tests run what ships: the binaries scripts/build.sh makes. MIAAS_AGENT_BIN is
# the agent every end-to-end test starts (tests/support/mod.rs; under CI=true the tests refuse
# to fall back to the debug build); tests/cross.rs and tests/container.rs take the others.
bash scripts/build.sh
export MIAAS_X86_64_BIN=$PWD/dist/x86_64-unknown-linux-musl/miaas-agent
export MIAAS_AGENT_BIN=$MIAAS_X86_64_BIN
export MIAAS_AARCH64_BIN=$PWD/dist/aarch64-unknown-linux-musl/miaas-agent
export MIAAS_ARMV7_BIN=$PWD/dist/armv7-unknown-linux-gnueabihf/miaas-agent

# The resilience tests print their figures (soak memory and descriptors, storm histogram,
# partition recovery): everything else first, then those three with --nocapture.
resilience=(soak_memory_and_descriptors_stay_flat_over_3000_heartbeats
  storm_registrations_spread_over_the_backoff_window_and_all_get_in
  partition_longer_than_the_request_timeout_heartbeats_resume)
cargo test --workspace --target x86_64-unknown-linux-musl -- --exact "${resilience[@]/#/--skip=}"
cargo test --target x86_64-unknown-linux-musl --test soak --test storm --test partition -- --nocapture
