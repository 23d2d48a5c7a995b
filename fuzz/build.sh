# Sourced by smoke.sh and campaign.sh: builds every target with the
# instrumentation cargo-fuzz uses, and sets BIN (their directory) and
# TARGETS (their names, from Cargo.toml).
TRIPLE="$(rustc +nightly -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo +nightly build --release --bins --target "$TRIPLE" --target-dir target/cov
BIN="target/cov/$TRIPLE/release"
TARGETS="$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^vireo-fuzz$')"
