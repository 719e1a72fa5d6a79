#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS each (default 60), starting from the committed
# corpus (fuzz/corpus/<target>/) copied to a temporary directory, so the repository is never
# written to. Fails (non-zero) on any crash, timeout or out-of-memory, and prints the reproducer.
#
#   scripts/fuzz_ci.sh                      # every target, 60 s each
#   FUZZ_SECONDS=10 scripts/fuzz_ci.sh frame timer
#   FUZZ_SANITIZER=address scripts/fuzz_ci.sh   # default: none (the fuzzed code has no unsafe)
#
# Runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz_ci: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

work="$(mktemp -d -t ringws-fuzz.XXXXXX)"
keep=0
cleanup() {
    if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

start=$(date +%s)
echo "fuzz_ci: building ${targets[*]} (sanitizer: $sanitizer)"
if [ "$#" -gt 0 ]; then
    for t in "${targets[@]}"; do
        cargo fuzz build --debug-assertions --sanitizer "$sanitizer" "$t"
    done
else
    cargo fuzz build --debug-assertions --sanitizer "$sanitizer"
fi
built=$(date +%s)
echo "fuzz_ci: built in $((built - start)) s"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -r "fuzz/corpus/$t/." "$work/corpus/$t/"
    fi
    echo "fuzz_ci: $t for $seconds s from $(ls "$work/corpus/$t" | wc -l) corpus files"
    if cargo fuzz run --debug-assertions --sanitizer "$sanitizer" "$t" "$work/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1; then
        grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$t.log" |
            sed "s/^/fuzz_ci: $t: /" || true
    else
        failed+=("$t")
        keep=1
        tail -n 40 "$work/$t.log"
        echo "fuzz_ci: $t FAILED; reproducer(s):"
        ls -l "$work/artifacts/$t/"
        echo "fuzz_ci: replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run $t <file>"
    fi
done

echo "fuzz_ci: total $(($(date +%s) - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz_ci: crashes in: ${failed[*]} (kept in $work)"
    exit 1
fi
echo "fuzz_ci: ${#targets[@]} targets, no crash"
