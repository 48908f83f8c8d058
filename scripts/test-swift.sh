#!/usr/bin/env bash
# The Swift layer, as far as a machine without a Swift toolchain can check it:
#   1. builds the host library as shipped (verbatim-ffi WITHOUT `test-hooks`, plus its
#      `uniffi-bindgen` binary: `--features cli`), regenerates the Swift bindings from it in
#      library mode into a temporary directory, and fails if they differ from the committed
#      copies in ios/ (the Swift file, the C header, the module map);
#   2. checks that the hand-written facade (ios/Sources/Verbatim/VerbatimAgent.swift) calls
#      every method of the generated `AgentProtocol`, so a new Rust export is not forgotten;
#   3. parses every .swift file under ios/ (generated and hand-written) with
#      scripts/check_swift_syntax.py (tree-sitter-swift): zero syntax errors. Syntax only: no
#      type checking, no linking; the XCTest suite needs a Mac (ios/README.md).
# Last line: `N passed, M failed`; exit 1 on any failure.
#
# Usage: scripts/test-swift.sh            check
#        scripts/test-swift.sh --update   rewrite the committed bindings from the current
#                                         library (then check), after a change to bindings/
#
# The bindings are generated from the UNSTRIPPED host debug build: uniffi-bindgen reads the
# metadata from the symbol table (the release profile strips it); the metadata is the same on
# every target. Note: this build and scripts/test-kotlin.sh (which adds `test-hooks`) produce
# the same target/debug/libverbatim_ffi.so with different features; cargo rebuilds it (~15 s)
# when the other script ran last. Run them one after the other (scripts/test-all.sh does).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UPDATE=0
case "${1:-}" in
  "") ;;
  --update) UPDATE=1 ;;
  -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) printf 'usage: %s [--update]\n' "$0" >&2; exit 2 ;;
esac

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LIB_DIR="$TARGET_DIR/debug"
case "$(uname -s)" in
  Darwin) LIB="$LIB_DIR/libverbatim_ffi.dylib" ;;
  *) LIB="$LIB_DIR/libverbatim_ffi.so" ;;
esac
IOS="$ROOT/ios"
# generated file -> committed copy. Two UniFFI components share one library: verbatim-ffi's
# (the Agent object, the error family) and verbatim-core's records and enums (core/uniffi.toml).
# Both Swift files go into the one VerbatimFFI module and both headers into the one C module
# VerbatimFFIFFI, whose module map is ours (UniFFI writes one per component; Xcode and SwiftPM
# look for `module.modulemap` in a directory named after the module): check 4 below keeps it
# listing exactly the generated headers.
BINDINGS=(
  "VerbatimFFI.swift:Sources/VerbatimFFI/VerbatimFFI.swift"
  "VerbatimCore.swift:Sources/VerbatimFFI/VerbatimCore.swift"
  "VerbatimFFIFFI.h:Headers/VerbatimFFIFFI/VerbatimFFIFFI.h"
  "VerbatimCoreFFI.h:Headers/VerbatimFFIFFI/VerbatimCoreFFI.h"
)
MODULE_MAP="$ROOT/ios/Headers/VerbatimFFIFFI/module.modulemap"
REGENERATE="scripts/test-swift.sh --update"

T0=$(date +%s.%N)
stage() { printf '[test-swift] %-44s (%ss)\n' "$*" "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" >&2; }
die() { printf '[test-swift] ERROR: %s\n' "$*" >&2; exit 1; }

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok   - %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL - %s\n' "$1"; }

# ------------------------------------------------------------------------------ tools
bash scripts/install-tools.sh swift-parser </dev/null >&2
eval "$(bash scripts/install-tools.sh env)"
PY="$SWIFT_PARSER_PY"
[[ -x "$PY" ]] || die "$PY missing (scripts/install-tools.sh swift-parser)"
stage "tools ready"

# ------------------------------------------------------------------------------ build + generate
# The shipped flavour: no test-hooks (their debug_* exports must not reach the iOS bindings:
# the release static library has no such symbols, so an app calling them would not link).
cargo build -p verbatim-ffi --features cli >&2
[[ -f "$LIB" ]] || die "$LIB was not built"
stage "host library built (features: cli)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/verbatim-swift.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
GEN="$WORK/gen"
"$LIB_DIR/uniffi-bindgen" generate --library "$LIB" --language swift --no-format --out-dir "$GEN" >&2
stage "Swift bindings generated"

# The generator's output must be exactly the files we commit.
expected=$(for pair in "${BINDINGS[@]}"; do printf '%s ' "${pair%%:*}"; done | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ')
actual=$(cd "$GEN" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')
if [[ "$expected" == "$actual" ]]; then
  pass "uniffi-bindgen produced exactly: ${expected% }"
else
  fail "uniffi-bindgen produced: ${actual% }; expected: ${expected% } (update BINDINGS in this script and ios/build-xcframework.sh)"
fi

if grep -q 'func debugPanic\|uniffi_verbatim_ffi_fn_func_debug_' "$GEN/VerbatimFFI.swift" 2>/dev/null; then
  fail "generated bindings contain the test-hooks exports: $LIB was built with --features test-hooks (stale build?)"
else
  pass "generated bindings carry no test-hooks exports"
fi

# ------------------------------------------------------------------------------ 1. drift
for pair in "${BINDINGS[@]}"; do
  gen="$GEN/${pair%%:*}"
  committed="$IOS/${pair#*:}"
  rel="ios/${pair#*:}"
  [[ -f "$gen" ]] || { fail "$rel: not generated"; continue; }
  if ((UPDATE)); then
    mkdir -p "$(dirname "$committed")"
    if cmp -s "$gen" "$committed"; then
      printf '[test-swift] %s: unchanged\n' "$rel" >&2
    else
      cp "$gen" "$committed"
      printf '[test-swift] %s: rewritten\n' "$rel" >&2
    fi
  fi
  if [[ ! -f "$committed" ]]; then
    fail "$rel is missing; regenerate with: $REGENERATE"
  elif cmp -s "$gen" "$committed"; then
    pass "$rel matches the current library"
  else
    fail "$rel differs from what the current library generates; regenerate with: $REGENERATE"
    diff -u --label "$rel (committed)" --label "$rel (generated)" "$committed" "$gen" | head -n 40 | sed 's/^/       /' || true
  fi
done

# ------------------------------------------------------------------------------ 2. facade coverage
FACADE="$IOS/Sources/Verbatim/VerbatimAgent.swift"
GEN_SWIFT="$GEN/VerbatimFFI.swift"
if [[ -f "$FACADE" && -f "$GEN_SWIFT" ]]; then
  # Method names of `public protocol AgentProtocol { ... }` in the generated file.
  mapfile -t methods < <(awk '/^public protocol AgentProtocol/ {on = 1; next} on && /^}/ {exit}
    on && match($0, /^ *func [A-Za-z0-9_]+/) { s = substr($0, RSTART, RLENGTH); sub(/^ *func /, "", s); print s }' "$GEN_SWIFT")
  missing=()
  for m in "${methods[@]}"; do
    grep -q "ffi\.$m(" "$FACADE" || missing+=("$m")
  done
  if ((${#methods[@]} == 0)); then
    fail "facade coverage: no AgentProtocol methods found in the generated Swift"
  elif ((${#missing[@]} == 0)); then
    pass "VerbatimAgent calls all ${#methods[@]} AgentProtocol methods"
  else
    fail "VerbatimAgent does not wrap: ${missing[*]} (add them to ios/Sources/Verbatim/VerbatimAgent.swift)"
  fi
else
  fail "facade coverage: $FACADE or the generated Swift is missing"
fi

# ------------------------------------------------------------------------------ 3. module map
# The C module must expose every generated header and nothing else.
want_headers=$(cd "$GEN" && find . -name '*.h' | sed 's|^\./||' | sort | tr '\n' ' ')
have_headers=$(sed -nE 's/^[[:space:]]*header "([^"]+)".*/\1/p' "$MODULE_MAP" | sort | tr '\n' ' ')
if [[ -n "$want_headers" && "$want_headers" == "$have_headers" ]]; then
  pass "ios/Headers/VerbatimFFIFFI/module.modulemap lists every generated header: ${want_headers% }"
else
  fail "module.modulemap lists: ${have_headers% }; the generator wrote: ${want_headers% } (edit ios/Headers/VerbatimFFIFFI/module.modulemap)"
fi

# ------------------------------------------------------------------------------ 4. syntax
mapfile -t SWIFT_FILES < <(find "$IOS" -name '*.swift' -not -path '*/.build/*' -not -path '*.xcframework/*' | sort)
((${#SWIFT_FILES[@]} > 0)) || fail "no .swift files under ios/"
for f in "${SWIFT_FILES[@]}"; do
  rel="${f#"$ROOT"/}"
  if out=$("$PY" scripts/check_swift_syntax.py "$f" 2>&1); then
    pass "syntax: $rel"
  else
    fail "syntax: $rel"
    printf '%s\n' "$out" | head -n 30 | sed 's/^/       /'
  fi
done
stage "done"

echo "$passed passed, $failed failed"
((failed == 0))
