#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each with cargo-fuzz (libFuzzer),
# starting from its committed seeds and regressions. Crashes land in fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 60 recovery sdp
#
# Needs `cargo install cargo-fuzz`. Only stable Rust is installed here: RUSTC_BOOTSTRAP=1 lets
# stable build with the nightly-only sanitizer flags cargo-fuzz passes (set it yourself to use
# a real nightly instead of it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v jiangtang-fuzz)
fi
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}
failed=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    seeds=()
    for d in fuzz/corpus-seeds/$t fuzz/regressions/$t; do
        [ -d "$d" ] && seeds+=("$d")
    done
    echo "== $t: ${seconds}s"
    if ! cargo fuzz run -O "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/; minimise with cargo fuzz tmin)"
    exit 1
fi
echo "no crashes in ${targets[*]}"
