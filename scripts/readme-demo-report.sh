#!/usr/bin/env bash
# Regenerate the sample demo report in README.md from a real run: builds the release CLI, runs
# `verbatim demo` with its defaults, and puts its report between the README's
# `<!-- demo-report:begin -->` and `<!-- demo-report:end -->` markers. cli/tests/demo.rs checks
# that the README's sample has the lines the demo prints today.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

report=$(mktemp)
trap 'rm -f "$report" "$report.readme"' EXIT
cargo run --release --locked -q -p verbatim-cli -- demo > "$report"
grep -q '^  result  *OK' "$report" || { echo "readme-demo-report: the demo did not pass" >&2; cat "$report" >&2; exit 1; }

awk -v report="$report" '
  /<!-- demo-report:begin -->/ { print; print "```text"; while ((getline line < report) > 0) if (line != "") print line; print "```"; skip = 1; next }
  /<!-- demo-report:end -->/ { skip = 0 }
  !skip { print }
' README.md > "$report.readme"
grep -q 'demo-report:end' "$report.readme" || { echo "readme-demo-report: README.md has no demo-report markers" >&2; exit 1; }
mv "$report.readme" README.md
echo "README.md: demo report regenerated"
