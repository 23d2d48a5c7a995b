#!/usr/bin/env bash
# Bounded smoke run of every fuzz target, for CI. Builds the targets the
# way cargo-fuzz does (nightly, libFuzzer, SanitizerCoverage), without
# needing cargo-fuzz itself, then runs each for SECONDS (default 30).
# Exit status is non-zero if a target crashes or hangs (one input running
# longer than TIMEOUT seconds, default 10); the input is left in
# fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-30}"
TIMEOUT="${TIMEOUT:-10}"
source ./build.sh
mkdir -p artifacts
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
    "$BIN/$t" "corpus/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
        -timeout="$TIMEOUT" -rss_limit_mb=2048 -artifact_prefix="artifacts/$t-" \
        -print_final_stats=1
done
