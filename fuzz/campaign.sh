#!/usr/bin/env bash
# A long fuzzing campaign: every target for SECONDS (default 3600) with
# JOBS parallel workers each (default: all cores), one target after the
# other. Prints one line per target with its total executions, crashes and
# the date, in the form docs/RELIABILITY.md records. Run it on an idle
# machine; FUZZ_BIN=dir uses targets built elsewhere (by build.sh).
#
#   bash fuzz/campaign.sh 3600          # an hour per target
#   TARGETS_ONLY="ide vga" bash fuzz/campaign.sh 600
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-3600}"
JOBS="${JOBS:-$(nproc)}"
if [ -n "${FUZZ_BIN:-}" ]; then
    BIN="$FUZZ_BIN"
    TARGETS="$(ls "$BIN")"
else
    source ./build.sh
fi
TARGETS="${TARGETS_ONLY:-$TARGETS}"
mkdir -p artifacts logs
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    rm -f logs/"$t".*.log
    status=ok
    "$BIN/$t" "corpus/$t" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="artifacts/$t-" \
        -print_final_stats=1 -fork="$JOBS" -ignore_crashes=0 \
        >logs/"$t".main.log 2>&1 || status="FAILED (see fuzz/logs/$t.main.log, fuzz/artifacts/)"
    # -fork prints the running total as "#N ... exec/s"; the last one counts.
    execs="$(grep -o '^#[0-9]*' logs/"$t".main.log | tail -1 | tr -d '#')"
    echo "| $t | ${execs:-0} | ${SECONDS_PER_TARGET}s x $JOBS jobs | $status | $(date -u +%F) |"
done
