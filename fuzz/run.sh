#!/usr/bin/env bash
# Runs every cargo-fuzz target (libFuzzer + AddressSanitizer, nightly Rust) for a while, each
# from the seed corpus in fuzz/corpus/<target>/ (read only: new inputs go to a scratch
# corpus), and reports crashes. Not part of CI (needs nightly and cargo-fuzz); the stable
# property tests (core/tests/fuzz_props.rs, receiver/tests/fuzz_props.rs) run the same targets
# in CI.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#   needs: `rustup toolchain install nightly`, `cargo install cargo-fuzz --locked`
#   FUZZ_KEEP_CORPUS=DIR keeps the grown corpora under DIR (to merge interesting inputs back).
# A crash leaves its input in fuzz/artifacts/<target>/ (gitignored) and the run fails.
# Ends with `fuzz: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
secs="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' Cargo.toml | grep -v '^verbatim-fuzz$')
fi

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not installed (cargo install cargo-fuzz --locked)" >&2; exit 2; }
cargo +nightly --version >/dev/null 2>&1 || { echo "no nightly toolchain (rustup toolchain install nightly)" >&2; exit 2; }
cargo +nightly fuzz build -O >&2

scratch="${FUZZ_KEEP_CORPUS:-$(mktemp -d)}"
[[ -n "${FUZZ_KEEP_CORPUS:-}" ]] || trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  rc=0
  cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1)
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
    echo "ok   - $t: ${runs:-?} runs in ${secs}s, ${cov:-cov ?}, corpus $(ls "$scratch/$t" | wc -l) inputs"
  else
    failed=$((failed + 1))
    echo "FAIL - $t (exit $rc); input in fuzz/artifacts/$t/"
    grep -E 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 | sed 's/^/       /'
  fi
done
echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
