#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60) and prints, per
# target, how many inputs were executed and whether a crash was found.
#
#   fuzz/run.sh            # 60 s per target (core, wire, relay)
#   fuzz/run.sh 300        # 5 min per target
#   fuzz/run.sh 30 core    # only the `core` target
#
# Installs cargo-fuzz from crates.io if it is missing. cargo-fuzz passes
# nightly-only flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 lets
# them through. No sanitizer: the code under test is safe Rust, and
# AddressSanitizer would need a real nightly (`-Zsanitizer`). Debug
# assertions and overflow checks stay on (`-a`).
#
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> <file>
# and turn it into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(core wire relay)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/last-run.log"
    echo "== $target: fuzzing for ${secs}s (log: $log)"
    # The wire target's runs must be able to span several of the 4 KiB
    # stretches LineCodec::run_len searches for `\r` (libFuzzer's default
    # input limit is 4 KiB).
    max_len=()
    [ "$target" = wire ] && max_len=(-max_len=16384)
    if cargo fuzz run --sanitizer none -a "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1 "${max_len[@]}" >"$log" 2>&1; then
        result="no crash"
    else
        result="CRASH or build failure (see $log and fuzz/artifacts/$target/)"
        status=1
    fi
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    echo "== $target: ${runs:-?} executions in ${secs}s: $result"
done
exit "$status"
