#!/usr/bin/env bash
# Bounded smoke run of every fuzz target, for CI. Builds the targets the
# way cargo-fuzz does (nightly, libFuzzer, SanitizerCoverage), without
# needing cargo-fuzz itself, then runs each for SECONDS (default 30).
# Exit status is non-zero if a target crashes; the crashing input is left
# in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-30}"
TRIPLE="$(rustc +nightly -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo +nightly build --release --bins --target "$TRIPLE" --target-dir target/cov
BIN="target/cov/$TRIPLE/release"
mkdir -p artifacts
for t in virtio_blk_request virtio_net_tx; do
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
    "$BIN/$t" "corpus/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
        -rss_limit_mb=2048 -artifact_prefix="artifacts/$t-" -print_final_stats=1
done
