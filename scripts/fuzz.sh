#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20), starting from the seeds in
# fuzz/corpus/<target>/. Installs cargo-fuzz if it is missing; needs the nightly toolchain.
#
#   bash scripts/fuzz.sh          # 20 s per target, as CI does
#   bash scripts/fuzz.sh 600      # longer, by hand
#   bash scripts/fuzz.sh 60 proc_stat   # one target
#
# New inputs the fuzzer finds go to a scratch directory, not into the repository's seeds; a
# failing input is saved in fuzz/artifacts/<target>/ and the script stops with its name and the
# command that reproduces it. Add an interesting one to fuzz/corpus/<target>/ by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal >/dev/null
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --quiet
fi

# Its own target directory unless told otherwise: fuzz builds are instrumented, nightly builds.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR-fuzz}}
[ -n "$CARGO_TARGET_DIR" ] || unset CARGO_TARGET_DIR

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build >/dev/null 2>&1 || cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "$scratch/$target"
  echo "fuzz: $target for ${seconds}s"
  # libFuzzer writes new inputs to the first corpus directory only: the scratch one.
  if ! cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1; then
    cat "$scratch/$target.log" >&2
    echo "fuzz: $target FAILED; reproduce with: cargo +nightly fuzz run $target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$scratch/$target.log" | tr '\n' ' '
  echo
done
