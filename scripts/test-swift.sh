#!/usr/bin/env bash
# The Swift layer, as far as a machine without a Swift toolchain can check it:
#   1. builds the host library as shipped (verbatim-ffi WITHOUT `test-hooks`, plus its
#      `uniffi-bindgen` binary: `--features cli`), regenerates the Swift bindings from it in
#      library mode into a temporary directory, and fails if they differ from the committed
#      copies in ios/ (the Swift file, the C header, the module map);
#   2. checks that the hand-written facade (ios/Sources/Verbatim/VerbatimAgent.swift) calls
#      every method of the generated `AgentProtocol`, so a new Rust export is not forgotten;
#   3. checks that the C module map lists every generated header;
#   4. parses every .swift file under ios/ (generated and hand-written) and both Package.swift
#      files with scripts/check_swift_syntax.py (tree-sitter-swift): zero syntax errors.
#      Syntax only: no type checking, no linking; the XCTest suite needs a Mac (ios/README.md);
#   5. checks the privacy manifest (scripts/check_privacy_manifest.py), and that the check
#      refuses each mistake it exists for;
#   6. checks the release rewrite of the root Package.swift (scripts/release-ios.sh --zip):
#      checksum, URL, idempotence, Swift syntax, refusals;
#   7. greps the docs for statements about iOS known to be stale.
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
  -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  # Exports the Swift facade deliberately leaves out, and why (FacadeCoverageTest.kt lists the
  # same): beginTelephonyScan reads Android's Telephony provider, which iOS does not have.
  android_only=" beginTelephonyScan "
  missing=()
  left_out=()
  for m in "${methods[@]}"; do
    if [[ "$android_only" == *" $m "* ]]; then left_out+=("$m"); continue; fi
    grep -q "ffi\.$m(" "$FACADE" || missing+=("$m")
  done
  if ((${#methods[@]} == 0)); then
    fail "facade coverage: no AgentProtocol methods found in the generated Swift"
  elif ((${#missing[@]} == 0)); then
    pass "VerbatimAgent calls all $((${#methods[@]} - ${#left_out[@]})) AgentProtocol methods it should (Android only, left out: ${left_out[*]:-none})"
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
mapfile -t SWIFT_FILES < <({ find "$IOS" -name '*.swift' -not -path '*/.build/*' -not -path '*.xcframework/*'; echo "$ROOT/Package.swift"; } | sort)
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
stage "syntax checked"

# ------------------------------------------------------------------------------ 5. privacy manifest
# The committed manifest passes scripts/check_privacy_manifest.py (keys, types, reason codes
# from each category's approved set, exactly the declarations the package needs, listed as a
# resource of the Verbatim target in both Package.swift files), and the check refuses each
# mistake below (a mutated copy each), so it cannot pass by accident.
PRIVACY="$IOS/Sources/Verbatim/PrivacyInfo.xcprivacy"
privacy_check() { "$PY" scripts/check_privacy_manifest.py "$@" >"$WORK/privacy.out" 2>&1; }
if privacy_check --plist "$PRIVACY" --package "$IOS/Package.swift" --package "$ROOT/Package.swift"; then
  pass "privacy manifest: valid, and a resource of the Verbatim target in ios/Package.swift and Package.swift"
else
  fail "privacy manifest: ios/Sources/Verbatim/PrivacyInfo.xcprivacy"
  sed 's/^/       /' "$WORK/privacy.out"
fi
# mutant DESCRIPTION PYTHON: PYTHON edits `m` (the manifest) with `api` (category -> entry) and
# `data` (the collected data types); the check must refuse the result.
mutant() {
  "$PY" - "$PRIVACY" "$WORK/mutant.xcprivacy" "$2" <<'PYEOF'
import plistlib, sys
with open(sys.argv[1], "rb") as f:
    m = plistlib.load(f)
api = {e["NSPrivacyAccessedAPIType"]: e for e in m["NSPrivacyAccessedAPITypes"]}
data = m["NSPrivacyCollectedDataTypes"]
exec(sys.argv[3])
with open(sys.argv[2], "wb") as f:
    plistlib.dump(m, f)
PYEOF
  if privacy_check --plist "$WORK/mutant.xcprivacy"; then
    fail "privacy check accepts $1"
  else
    pass "privacy check refuses $1"
  fi
}
UD=NSPrivacyAccessedAPICategoryUserDefaults
FT=NSPrivacyAccessedAPICategoryFileTimestamp
REASONS=NSPrivacyAccessedAPITypeReasons
mutant "a reason code of another category (35F9.1 under FileTimestamp)" "api['$FT']['$REASONS'] = ['35F9.1']"
mutant "UserDefaults for the app's own data (CA92.1) instead of the managed configuration (AC6B.1)" "api['$UD']['$REASONS'] = ['CA92.1']"
mutant "an empty reason list" "api['$UD']['$REASONS'] = []"
mutant "a needed category dropped (DiskSpace)" "m['NSPrivacyAccessedAPITypes'] = [e for e in m['NSPrivacyAccessedAPITypes'] if e['NSPrivacyAccessedAPIType'] != 'NSPrivacyAccessedAPICategoryDiskSpace']"
mutant "a category declared twice" "m['NSPrivacyAccessedAPITypes'].append(dict(api['$UD']))"
mutant "tracking" "m['NSPrivacyTracking'] = True"
mutant "NSPrivacyTracking as a string" "m['NSPrivacyTracking'] = 'false'"
mutant "a tracking domain" "m['NSPrivacyTrackingDomains'] = ['tracker.example']"
mutant "a missing top-level key" "del m['NSPrivacyCollectedDataTypes']"
mutant "a collected data type used for tracking" "data[0]['NSPrivacyCollectedDataTypeTracking'] = True"
mutant "a misspelt data type (PhotosOrVideos: Apple's is PhotosorVideos)" "data[1]['NSPrivacyCollectedDataType'] = 'NSPrivacyCollectedDataTypePhotosOrVideos'"
mutant "a purpose that is not Apple's" "data[0]['NSPrivacyCollectedDataTypePurposes'] = ['NSPrivacyCollectedDataTypePurposeCompliance']"
mutant "Linked as a string" "data[0]['NSPrivacyCollectedDataTypeLinked'] = 'true'"
# Not a resource: a copy of the local package whose Verbatim target lost its resources line.
mkdir -p "$WORK/unlisted/Sources/Verbatim"
cp "$PRIVACY" "$WORK/unlisted/Sources/Verbatim/"
grep -v 'resources: \[' "$IOS/Package.swift" | sed 's|path: "Sources/Verbatim",|path: "Sources/Verbatim"|' >"$WORK/unlisted/Package.swift"
if privacy_check --plist "$WORK/unlisted/Sources/Verbatim/PrivacyInfo.xcprivacy" --package "$WORK/unlisted/Package.swift"; then
  fail "privacy check accepts a package that does not list the manifest as a resource"
else
  pass "privacy check refuses a package that does not list the manifest as a resource"
fi
# What scripts/release-ios.sh checks on a Mac against the libraries' imports (`nm -u`): the
# declared categories cover fstat/statfs/NSUserDefaults; an undeclared one (mach_absolute_time:
# system boot time) is refused.
printf '%s\n' "libverbatim_ffi.a(sqlite3.o):" "_fstat" "_statfs" "_malloc" '_OBJC_CLASS_$_NSUserDefaults' >"$WORK/nm-declared.txt"
printf '%s\n' "libverbatim_ffi.a(std.o):" "_fstat" "_mach_absolute_time" >"$WORK/nm-undeclared.txt"
if privacy_check --plist "$PRIVACY" --symbols "$WORK/nm-declared.txt"; then
  pass "privacy check accepts imports of declared categories"
else
  fail "privacy check refuses imports of declared categories"; sed 's/^/       /' "$WORK/privacy.out"
fi
if ! privacy_check --plist "$PRIVACY" --symbols "$WORK/nm-undeclared.txt" && grep -q 'mach_absolute_time (NSPrivacyAccessedAPICategorySystemBootTime)' "$WORK/privacy.out"; then
  pass "privacy check refuses an import of an undeclared category (mach_absolute_time)"
else
  fail "privacy check does not name the undeclared import mach_absolute_time"; sed 's/^/       /' "$WORK/privacy.out"
fi
# The simulator's x86_64 slice imports the 64-bit-inode variants (_fstat$INODE64): they count.
"$PY" - "$PRIVACY" "$WORK/no-timestamps.xcprivacy" <<'PYEOF'
import plistlib, sys
with open(sys.argv[1], "rb") as f:
    m = plistlib.load(f)
m["NSPrivacyAccessedAPITypes"] = [e for e in m["NSPrivacyAccessedAPITypes"] if e["NSPrivacyAccessedAPIType"] != "NSPrivacyAccessedAPICategoryFileTimestamp"]
with open(sys.argv[2], "wb") as f:
    plistlib.dump(m, f)
PYEOF
printf '%s\n' "libverbatim_ffi.a(sqlite3.o):" '_fstat$INODE64' >"$WORK/nm-inode64.txt"
if ! privacy_check --plist "$WORK/no-timestamps.xcprivacy" --symbols "$WORK/nm-inode64.txt" && grep -q 'imports fstat (NSPrivacyAccessedAPICategoryFileTimestamp)' "$WORK/privacy.out"; then
  pass "privacy check sees _fstat\$INODE64 as a file timestamp API"
else
  fail "privacy check misses _fstat\$INODE64 (x86_64 simulator slice)"; sed 's/^/       /' "$WORK/privacy.out"
fi
stage "privacy manifest checked"

# ------------------------------------------------------------------------------ 6. release manifest
# scripts/release-ios.sh --zip ZIP --url URL rewrites the root Package.swift for a remote
# XCFramework: on a copy of the committed manifest, the checksum must be the zip's SHA-256
# (computed here independently), the URL the one given, nothing else changed, the result still
# Swift, a second run byte-identical; bad input is refused with the manifest untouched.
REL="$WORK/release"
mkdir -p "$REL"
cp "$ROOT/Package.swift" "$REL/Package.swift"
"$PY" - "$REL/VerbatimFFIFFI.xcframework.zip" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("VerbatimFFIFFI.xcframework/Info.plist", "<plist version=\"1.0\"><dict/></plist>\n")
PYEOF
RELEASE_URL="https://downloads.example.com/verbatim/1.2.3/VerbatimFFIFFI.xcframework.zip"
release() { bash scripts/release-ios.sh --manifest "$REL/Package.swift" "$@" >"$WORK/release.out" 2>&1; }
if release --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url "$RELEASE_URL"; then
  pass "release-ios.sh rewrites the manifest for a zip and an https URL"
else
  fail "release-ios.sh refused a valid zip and URL"; sed 's/^/       /' "$WORK/release.out"
fi
want_sum=$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$REL/VerbatimFFIFFI.xcframework.zip")
if grep -qx "let verbatimFFIChecksum = \"$want_sum\"" "$REL/Package.swift" \
  && grep -qx "let verbatimFFIURL = \"$RELEASE_URL\"" "$REL/Package.swift"; then
  pass "release manifest: checksum is the zip's SHA-256, URL as given"
else
  fail "release manifest: checksum or URL wrong"; grep -n '^let verbatimFFI' "$REL/Package.swift" | sed 's/^/       /'
fi
if diff <(grep -v '^let verbatimFFI' "$ROOT/Package.swift") <(grep -v '^let verbatimFFI' "$REL/Package.swift") >/dev/null; then
  pass "release manifest: nothing but the URL and checksum changed"
else
  fail "release manifest: other lines changed"
fi
if out=$("$PY" scripts/check_swift_syntax.py "$REL/Package.swift" 2>&1); then
  pass "release manifest: parses as Swift"
else
  fail "release manifest: does not parse"; printf '%s\n' "$out" | head -n 10 | sed 's/^/       /'
fi
cp "$REL/Package.swift" "$REL/Package.swift.first"
if release --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url "$RELEASE_URL" && cmp -s "$REL/Package.swift" "$REL/Package.swift.first"; then
  pass "release-ios.sh is idempotent (second run: same bytes)"
else
  fail "release-ios.sh: a second run changed the manifest"
fi
printf 'not a zip\n' >"$REL/plain.zip"
printf '// swift-tools-version:5.9\nlet verbatimFFIURL = "x"\n' >"$REL/NoMarkers.swift"
# refused DESCRIPTION ARGS...: must exit non-zero and leave the manifest as it was.
refused() {
  local what="$1"
  shift
  if release "$@"; then
    fail "release-ios.sh accepts $what"
  elif ! cmp -s "$REL/Package.swift" "$REL/Package.swift.first"; then
    fail "release-ios.sh refused $what but changed the manifest"
  else
    pass "release-ios.sh refuses $what ($(tail -n 1 "$WORK/release.out" | cut -c 1-70)...)"
  fi
}
refused "a missing zip" --zip "$REL/missing.zip" --url "$RELEASE_URL"
refused "a file that is not a zip" --zip "$REL/plain.zip" --url "$RELEASE_URL"
refused "an http URL" --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url "http://downloads.example.com/v/VerbatimFFIFFI.xcframework.zip"
refused "a URL that is not a .zip" --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url "https://downloads.example.com/v/VerbatimFFIFFI.xcframework"
refused "a URL with a quote" --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url 'https://downloads.example.com/v/a"b.zip'
refused "no URL" --zip "$REL/VerbatimFFIFFI.xcframework.zip"
if bash scripts/release-ios.sh --manifest "$REL/NoMarkers.swift" --zip "$REL/VerbatimFFIFFI.xcframework.zip" --url "$RELEASE_URL" >/dev/null 2>&1 \
  || ! grep -qx 'let verbatimFFIURL = "x"' "$REL/NoMarkers.swift"; then
  fail "release-ios.sh accepts (or changes) a manifest without the release markers"
else
  pass "release-ios.sh refuses a manifest without the release markers"
fi
# The remote and the local manifest declare the same targets and products.
names() { grep -o 'name: "[A-Za-z]*"' "$1" | sort | tr '\n' ' '; }
if [[ "$(names "$ROOT/Package.swift")" == "$(names "$IOS/Package.swift")" ]]; then
  pass "Package.swift and ios/Package.swift declare the same targets: $(names "$IOS/Package.swift" | sed 's/name: //g')"
else
  fail "Package.swift and ios/Package.swift differ in targets: $(names "$ROOT/Package.swift") vs $(names "$IOS/Package.swift")"
fi
stage "release manifest checked"

# ------------------------------------------------------------------------------ 7. stale docs
# Statements about iOS that the code once made true and no longer does: each must not come
# back in README.md, ios/README.md, android/README.md or docs/*.md. (A grep, once per known
# statement; a careful read keeps the rest true.)
DOCS=("$ROOT/README.md" "$IOS/README.md" "$ROOT/android/README.md" "$ROOT"/docs/*.md)
STALE=(
  # VerbatimAgent.upload forwards Task cancellation to Rust through cancelUpload.
  'cancellation does \*\*not\*\*|does not reach an upload already running|upload therefore runs on until'
  # The XCFramework is released by scripts/release-ios.sh, which rewrites the root manifest.
  'replace the `binaryTarget\(path:\)`'
  # ManagedAgent has a private initializer: `ManagedAgent()` does not compile.
  'ManagedAgent\(\)'
  # A removed managed configuration withdraws the policy (ManagedAgent -> withdrawPolicy).
  'stored policy (stays|keeps capturing|keeps being used)'
  # Uploads also run in the foreground after capture (ForegroundUpload).
  'uploads? (happen|run)s? only in (the )?background'
)
for pattern in "${STALE[@]}"; do
  if hits=$(grep -n -E -i "$pattern" "${DOCS[@]}" 2>/dev/null); then
    fail "stale statement in the docs (/$pattern/):"
    printf '%s\n' "$hits" | sed "s|$ROOT/||; s/^/       /"
  else
    pass "docs free of: /$pattern/"
  fi
done
stage "done"

echo "$passed passed, $failed failed"
((failed == 0))
