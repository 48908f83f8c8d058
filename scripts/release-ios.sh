#!/usr/bin/env bash
# Prepares an iOS release of the Swift package at the repository root (Package.swift): the
# XCFramework zip apps download, and the manifest pointing at it by URL and checksum.
#
# Usage:
#   scripts/release-ios.sh --url URL
#       On a Mac: builds the XCFramework (ios/build-xcframework.sh), checks that every
#       required-reason API its libraries import is declared in the privacy manifest, zips it
#       to target/release-ios/VerbatimFFIFFI.xcframework.zip and rewrites Package.swift for URL.
#   scripts/release-ios.sh --zip ZIP --url URL [--manifest FILE]
#       Any machine: only rewrites the manifest (default: Package.swift at the repository root)
#       for an existing zip: verbatimFFIURL = URL, verbatimFFIChecksum = the SHA-256 of ZIP
#       (what `swift package compute-checksum` prints; compared with it when `swift` is on
#       PATH). Idempotent: the same zip and URL give the same file.
#
# URL is where the zip will be downloaded from: https only, ending in .zip, e.g. the release's
# asset URL. Refused, with the manifest untouched: a missing or non-zip ZIP, a URL that is not
# https or has quotes, spaces or backslashes, a manifest without exactly one
# `let verbatimFFIURL = "..."` and one `let verbatimFFIChecksum = "..."` line between the
# `// release-ios: begin` and `// release-ios: end` markers.
#
# Then: commit Package.swift (and any bindings the build regenerated), tag the commit
# (X.Y.Z: SwiftPM resolves versions from tags), upload the zip to exactly URL. ios/Package.swift
# (the XCFramework by `path:`) stays the manifest for local development.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'release-ios: %s\n' "$*" >&2; exit 1; }

ZIP=""
URL=""
MANIFEST="$ROOT/Package.swift"
while (($#)); do
  case "$1" in
    --zip) ZIP="${2:-}"; shift 2 || die "--zip needs a path" ;;
    --url) URL="${2:-}"; shift 2 || die "--url needs a value" ;;
    --manifest) MANIFEST="${2:-}"; shift 2 || die "--manifest needs a path" ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

# ------------------------------------------------------------------------------ checks
check_url() {
  [[ -n "$URL" ]] || die "--url is required"
  [[ "$URL" == https://* ]] || die "the URL must be https (SwiftPM downloads binary targets over https): $URL"
  [[ "$URL" == *.zip ]] || die "the URL must name the .zip file: $URL"
  case "$URL" in
    *[[:space:]]* | *\"* | *\'* | *\\* | *[[:cntrl:]]*)
      die "the URL has characters that do not belong in it (quotes, spaces, backslashes, control characters)" ;;
  esac
  [[ "$URL" =~ ^https://[^/]+/ ]] || die "the URL has no host and path: $URL"
}

check_zip() {
  [[ -n "$ZIP" ]] || die "--zip is required"
  [[ -f "$ZIP" ]] || die "no such zip: $ZIP"
  local magic
  magic=$(head -c 4 "$ZIP" | od -An -tx1 | tr -d ' \n')
  [[ "$magic" == 504b0304 ]] || die "not a zip archive: $ZIP"
}

sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

# ------------------------------------------------------------------------------ rewrite
# Prints the manifest with the two constants replaced; fails unless each occurs exactly once
# between the markers.
rewritten() { # MANIFEST URL CHECKSUM
  awk -v url="$2" -v sum="$3" '
    /^\/\/ release-ios: begin/ { inside = 1; print; next }
    /^\/\/ release-ios: end/ { inside = 0; print; next }
    inside && /^let verbatimFFIURL = "[^"]*"$/ { print "let verbatimFFIURL = \"" url "\""; urls++; next }
    inside && /^let verbatimFFIChecksum = "[0-9a-f]*"$/ { print "let verbatimFFIChecksum = \"" sum "\""; sums++; next }
    { print }
    END { if (urls != 1 || sums != 1) exit 3 }
  ' "$1"
}

rewrite_manifest() {
  [[ -f "$MANIFEST" ]] || die "no such manifest: $MANIFEST"
  local sum tmp
  sum=$(sha256_of "$ZIP")
  [[ "$sum" =~ ^[0-9a-f]{64}$ ]] || die "could not compute the SHA-256 of $ZIP"
  # Cross-check with SwiftPM's own computation where it is installed (it needs a loadable
  # package around it; if it cannot run, the SHA-256 above is what it would print).
  local swift_sum
  if command -v swift >/dev/null \
    && swift_sum=$(cd "$(dirname "$MANIFEST")" && swift package compute-checksum "$(cd "$(dirname "$ZIP")" && pwd)/$(basename "$ZIP")" 2>/dev/null); then
    [[ "$swift_sum" == "$sum" ]] || die "swift package compute-checksum says $swift_sum, sha256 says $sum"
  fi
  tmp=$(mktemp "${MANIFEST}.XXXXXX")
  if ! rewritten "$MANIFEST" "$URL" "$sum" >"$tmp"; then
    rm -f "$tmp"
    die "$MANIFEST: expected one 'let verbatimFFIURL = \"...\"' and one 'let verbatimFFIChecksum = \"...\"' line between '// release-ios: begin' and '// release-ios: end'"
  fi
  chmod --reference="$MANIFEST" "$tmp" 2>/dev/null || chmod 644 "$tmp"
  mv "$tmp" "$MANIFEST"
  printf 'release-ios: %s -> %s (sha256 %s)\n' "${MANIFEST#"$ROOT"/}" "$URL" "$sum"
}

# ------------------------------------------------------------------------------ main
check_url
if [[ -n "$ZIP" ]]; then
  check_zip
  rewrite_manifest
  exit 0
fi

# The full release, on a Mac.
[[ "$(uname -s)" == Darwin ]] || die "building the XCFramework needs macOS with Xcode; elsewhere pass --zip ZIP to rewrite the manifest only"
for tool in ditto nm python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
bash "$ROOT/ios/build-xcframework.sh"
XCFRAMEWORK="$ROOT/ios/VerbatimFFIFFI.xcframework"
[[ -d "$XCFRAMEWORK" ]] || die "the build left no $XCFRAMEWORK"

# What App Store Connect's upload scan will see: the required-reason APIs the libraries import.
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/release-ios"
mkdir -p "$OUT"
find "$XCFRAMEWORK" -name '*.a' -print0 | xargs -0 nm -u >"$OUT/imported-symbols.txt"
python3 "$ROOT/scripts/check_privacy_manifest.py" \
  --plist "$ROOT/ios/Sources/Verbatim/PrivacyInfo.xcprivacy" \
  --package "$ROOT/Package.swift" --package "$ROOT/ios/Package.swift" \
  --symbols "$OUT/imported-symbols.txt" \
  || die "the privacy manifest does not cover what the library imports (list: $OUT/imported-symbols.txt)"

ZIP="$OUT/VerbatimFFIFFI.xcframework.zip"
rm -f "$ZIP"
(cd "$(dirname "$XCFRAMEWORK")" && ditto -c -k --sequesterRsrc --keepParent "$(basename "$XCFRAMEWORK")" "$ZIP")
rewrite_manifest
echo "release-ios: next: commit Package.swift, tag the commit, upload $ZIP to $URL"
