#!/usr/bin/env bash
# Supply-chain check of the whole workspace with cargo-deny, offline, against the pinned
# RustSec snapshot: advisories (vulnerable, unsound, unmaintained, yanked), licenses (the
# allow-list in deny.toml), bans (backoff, aws-lc-*, openssl*; duplicate versions listed)
# and sources (crates.io only).
#
# Usage:
#   scripts/deny.sh              check the workspace (exit 1 on any error)
#   scripts/deny.sh --self-test  prove the check fails: a throwaway crate depending on
#                                `backoff` must be refused, naming RUSTSEC-2025-0012 and the ban
#
# Tools come from scripts/install-tools.sh (cargo-deny 0.20.2 and the advisory snapshot laid
# out as the git repository cargo-deny wants). deny.toml's `db-path` is relative; cargo-deny
# does not resolve it against deny.toml's directory, so this script writes a copy of the
# config with the absolute path and passes that. Ends with `deny: N passed, M failed`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

install_log=$(bash scripts/install-tools.sh cargo-deny advisory-db 2>&1 </dev/null) \
  || { printf '%s\n' "$install_log" >&2; exit 2; }
eval "$(bash scripts/install-tools.sh env)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# config_with_db OUT: deny.toml with db-path made absolute.
config_with_db() {
  local out=$1
  grep -q '^db-path = ' deny.toml || { echo "deny.toml has no db-path line" >&2; return 1; }
  sed "s|^db-path = .*|db-path = \"$ADVISORY_DB_PATH\"|" deny.toml > "$out"
}

# The advisory database must really be there: cargo-deny with --offline and a missing
# database would otherwise have nothing to compare against.
[[ -d "$ADVISORY_DB_PATH/advisory-db-3157b0e258782691/crates" ]] \
  || { echo "deny: no advisory database at $ADVISORY_DB_PATH" >&2; exit 2; }

passed=0
failed=0
result() { # NAME RC
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); echo "ok   - $1"; else failed=$((failed + 1)); echo "FAIL - $1"; fi
}

check_workspace() {
  local out rc=0
  config_with_db "$work/deny.toml"
  # cargo-deny reads the metadata of every target's dependencies (windows-sys too), which a
  # fresh machine has not downloaded: fetch them once from crates.io, offline when cached.
  { cargo fetch --locked --offline --quiet 2>/dev/null || cargo fetch --locked --quiet; } \
    || { echo "deny: cargo fetch failed" >&2; return 1; }
  out=$("$CARGO_DENY" --color never --offline --locked --config "$work/deny.toml" \
        check --hide-inclusion-graph 2>&1) || rc=$?
  # Errors in full; warnings as one line each (duplicates are expected, see deny.toml).
  printf '%s\n' "$out" | awk '/^error\[/{p=1} /^(warning|note|help|bug)\[/{p=0} p' >&2
  printf '%s\n' "$out" | grep -E '^(warning|bug)\[' | sort | uniq -c | sed 's/^/  /' >&2 || true
  printf '%s\n' "$out" | grep -E '^ *(advisories|bans|licenses|sources) ' >&2 || true
  # A failure before any check ran (cargo metadata, the database) prints no error[...] line.
  if [[ $rc -ne 0 ]] && ! grep -q '^error\[' <<<"$out"; then printf '%s\n' "$out" | tail -n 20 >&2; fi
  return $rc
}

# A crate depending on `backoff` (unmaintained, RUSTSEC-2025-0012; pulls `instant`,
# RUSTSEC-2024-0384) must fail with our deny.toml: the advisory and the ban both name it.
self_test() {
  local crate="$work/denytest" out rc=0
  mkdir -p "$crate/src"
  : > "$crate/src/lib.rs"
  cat > "$crate/Cargo.toml" <<'EOF'
[package]
name = "denytest"
version = "0.0.0"
edition = "2021"
license = "MIT"
publish = false

[dependencies]
backoff = "=0.4.0"

[workspace]
EOF
  config_with_db "$crate/deny.toml"
  (cd "$crate" && { cargo generate-lockfile --offline --quiet 2>/dev/null || cargo generate-lockfile --quiet; } \
    && { cargo fetch --offline --quiet 2>/dev/null || cargo fetch --quiet; }) || { echo "self-test: cannot fetch backoff" >&2; return 1; }
  out=$(cd "$crate" && "$CARGO_DENY" --color never --offline --config "$crate/deny.toml" check \
        --hide-inclusion-graph advisories bans 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -E '^(error|warning)\[' | sed 's/^/  /' >&2 || true
  if [[ $rc -eq 0 ]]; then echo "self-test: cargo-deny passed a crate depending on backoff" >&2; return 1; fi
  grep -q 'RUSTSEC-2025-0012' <<<"$out" || { echo "self-test: RUSTSEC-2025-0012 not named" >&2; return 1; }
  grep -q 'RUSTSEC-2024-0384' <<<"$out" || { echo "self-test: RUSTSEC-2024-0384 (instant) not named" >&2; return 1; }
  grep -Eq "error\[banned\].*backoff|crate 'backoff.*' is explicitly banned" <<<"$out" \
    || { echo "self-test: the ban on backoff did not fire" >&2; return 1; }
}

case "${1:-}" in
  "")
    rc=0; check_workspace || rc=$?; result "cargo deny check (advisories, bans, licenses, sources)" $rc ;;
  --self-test)
    rc=0; self_test || rc=$?; result "cargo deny refuses a crate on backoff (RUSTSEC-2025-0012, banned)" $rc ;;
  *)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac

echo "deny: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
