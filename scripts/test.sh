#!/usr/bin/env bash
# The test suite: the static musl binary against the test control plane, plus lints.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --all-targets --target x86_64-unknown-linux-musl -- -D warnings
# The resilience tests print their figures (soak memory and descriptors, storm histogram,
# partition recovery): everything else first, then those three with --nocapture.
resilience=(soak_memory_and_descriptors_stay_flat_over_3000_heartbeats
  storm_registrations_spread_over_the_backoff_window_and_all_get_in
  partition_longer_than_the_request_timeout_heartbeats_resume)
cargo test --workspace --target x86_64-unknown-linux-musl -- --exact "${resilience[@]/#/--skip=}"
cargo test --target x86_64-unknown-linux-musl --test soak --test storm --test partition -- --nocapture
