#!/usr/bin/env bash
# The whole benchmark suite in one command (docs/performance.md): builds what it measures,
# installs valgrind when missing, then runs `verbatim bench` and prints its one table.
#
#   scripts/bench.sh            full run (about 10 minutes on 2 cores)
#   scripts/bench.sh --quick    CI: every benchmark still runs, tiny sizes, well under a minute
#                               after the build; exits non-zero only if a benchmark fails to run
#   scripts/bench.sh --json     ... and every figure as one JSON object on the last line
#
# Any other `verbatim bench` option passes through (--only capture,upload, --batch-kb N, ...).
# A full run also builds an unstripped twin of the release build (cargo profile "symbols",
# target/symbols/), so callgrind can name functions and the library size can be broken down by
# crate; set BENCH_SYMBOLS=0 to skip it, BENCH_SYMBOLS=1 to build it for --quick too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

quick=0
for a in "$@"; do [[ "$a" == "--quick" ]] && quick=1; done
symbols="${BENCH_SYMBOLS:-$((1 - quick))}"

if ! command -v valgrind >/dev/null 2>&1; then
    echo "bench: installing valgrind (instructions per captured event)" >&2
    if [[ "$(id -u)" == 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get install -y valgrind >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y valgrind >/dev/null; }
fi

echo "bench: building the release CLI and the bindings' host library" >&2
cargo build --release --locked -p verbatim-cli
ffi=()
if cargo build --release --locked -p verbatim-ffi; then
    ffi=(--ffi-lib "$ROOT/target/release/libverbatim_ffi.so")
else
    echo "bench: the bindings do not build; the size benchmark will say so" >&2
fi

extra=()
if [[ "$symbols" == 1 ]]; then
    echo "bench: building the unstripped twin (profile 'symbols') for callgrind and the size breakdown" >&2
    export CARGO_PROFILE_SYMBOLS_INHERITS=release CARGO_PROFILE_SYMBOLS_STRIP=false
    cargo build --profile symbols --locked -p verbatim-cli
    extra+=(--symbols-exe "$ROOT/target/symbols/verbatim")
    if [[ ${#ffi[@]} -gt 0 ]] && cargo build --profile symbols --locked -p verbatim-ffi; then
        extra+=(--ffi-lib-unstripped "$ROOT/target/symbols/libverbatim_ffi.so")
    fi
fi

exec "$ROOT/target/release/verbatim" bench "${ffi[@]}" "${extra[@]}" "$@"
