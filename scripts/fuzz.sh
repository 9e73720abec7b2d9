#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz for N seconds (default 10),
# starting from the checked-in corpus. New inputs libFuzzer finds go to a
# scratch copy, so the checked-in corpus only changes by hand. A crash
# leaves its input in tests/fuzz/artifacts/<target>/ and fails the script.
#   scripts/fuzz.sh [seconds] [target...]
# Needs a nightly toolchain and cargo-fuzz (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
shift || true
fuzz_dir=tests/fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir")
fi

cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    echo "== fuzz $target (${seconds}s)"
    if ! cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" -O "$target" \
        "$scratch/$target" "$fuzz_dir/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target failed; its input is in $fuzz_dir/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no failures"
