#!/usr/bin/env bash
# The test suite: the static musl binary against the test control plane, plus lints.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --all-targets --target x86_64-unknown-linux-musl -- -D warnings
cargo test --workspace --target x86_64-unknown-linux-musl
