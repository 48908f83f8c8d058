#!/usr/bin/env bash
# Builds ios/VerbatimFFIFFI.xcframework (the Rust agent as a static library for iOS devices and
# the iOS simulator, with the C header and module map of the C module `VerbatimFFIFFI`) and
# regenerates the Swift bindings that go with it. On a Mac only:
#
#   ios/build-xcframework.sh            # from anywhere; ~5-15 min on a cold cache
#
# Needs: macOS with Xcode 15.3 or newer (xcodebuild, lipo, the iOS SDKs), rustup with the
# workspace's toolchain (Rust 1.89+). The three iOS targets are added with rustup if missing.
#
# What it does:
#   1. `cargo rustc --crate-type staticlib` of verbatim-ffi (no features: no test hooks, no
#      bindgen) with the workspace's release profile (opt-level "z", LTO, one codegen unit,
#      panic = "unwind", which the FFI's panic-to-error guards need) for
#        aarch64-apple-ios       devices
#        aarch64-apple-ios-sim   simulator on Apple silicon
#        x86_64-apple-ios        simulator on Intel Macs
#      at IPHONEOS_DEPLOYMENT_TARGET=15.0 (Package.swift's platform);
#   2. the Swift bindings: the release profile strips symbols and uniffi-bindgen reads the
#      UniFFI metadata from the symbol table, so they are generated from the UNSTRIPPED host
#      debug build (`cargo build -p verbatim-ffi --features cli`: the library plus the
#      workspace's own uniffi-bindgen; the metadata is the same on every target), in library
#      mode, into ios/Sources/VerbatimFFI/ (Swift) and ios/Headers/VerbatimFFIFFI/ (header +
#      module map), exactly as `scripts/test-swift.sh --update` does: the XCFramework's header
#      and the Swift it is compiled with always come from the same source. If they changed,
#      commit them (scripts/test-swift.sh fails until you do);
#   3. `lipo` of the two simulator slices into one fat library (an XCFramework holds one
#      library per platform variant);
#   4. `xcodebuild -create-xcframework` with each library and ios/Headers as its headers. The
#      module map sits in Headers/VerbatimFFIFFI/ (named after the module, which is where
#      Clang looks for it): at the top of Headers/ it would clash with any other XCFramework's
#      module.modulemap in the app's build products ("Multiple commands produce .../include/
#      module.modulemap").
#
# The size-tuned release library keeps its symbols until the app is linked; Xcode strips the
# app (Strip Linked Product) as usual.
set -euo pipefail

IOS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$IOS/.." && pwd)"
cd "$ROOT"

[[ "$(uname -s)" == Darwin ]] || { echo "build-xcframework.sh: needs macOS with Xcode (xcodebuild, lipo)" >&2; exit 1; }
for tool in cargo rustup xcodebuild lipo xcrun; do
  command -v "$tool" >/dev/null || { echo "build-xcframework.sh: $tool not found" >&2; exit 1; }
done

DEVICE=aarch64-apple-ios
SIMULATORS=(aarch64-apple-ios-sim x86_64-apple-ios)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/xcframework"
XCFRAMEWORK="$IOS/VerbatimFFIFFI.xcframework"
LIBNAME=libverbatim_ffi.a

export IPHONEOS_DEPLOYMENT_TARGET=15.0

step() { printf '\n==== %s\n' "$*"; }

step "Rust targets"
installed=$(rustup target list --installed)
for target in "$DEVICE" "${SIMULATORS[@]}"; do
  grep -qx "$target" <<<"$installed" || rustup target add "$target"
done

step "static libraries (release profile)"
for target in "$DEVICE" "${SIMULATORS[@]}"; do
  cargo rustc --locked -p verbatim-ffi --lib --profile release --target "$target" --crate-type staticlib
  [[ -f "$TARGET_DIR/$target/release/$LIBNAME" ]] || { echo "missing $TARGET_DIR/$target/release/$LIBNAME" >&2; exit 1; }
done

step "Swift bindings (from the unstripped host debug build)"
cargo build --locked -p verbatim-ffi --features cli
GEN="$OUT/bindings"
rm -rf "$GEN"
"$TARGET_DIR/debug/uniffi-bindgen" generate --library "$TARGET_DIR/debug/libverbatim_ffi.dylib" \
  --language swift --no-format --out-dir "$GEN"
mkdir -p "$IOS/Sources/VerbatimFFI" "$IOS/Headers/VerbatimFFIFFI"
changed=()
install_generated() { # GENERATED COMMITTED
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2"
    changed+=("${2#"$ROOT"/}")
  fi
}
# Two UniFFI components (verbatim-ffi and verbatim-core's records): both Swift files in the
# VerbatimFFI module, both headers in the C module whose module map is committed by hand.
install_generated "$GEN/VerbatimFFI.swift" "$IOS/Sources/VerbatimFFI/VerbatimFFI.swift"
install_generated "$GEN/VerbatimCore.swift" "$IOS/Sources/VerbatimFFI/VerbatimCore.swift"
install_generated "$GEN/VerbatimFFIFFI.h" "$IOS/Headers/VerbatimFFIFFI/VerbatimFFIFFI.h"
install_generated "$GEN/VerbatimCoreFFI.h" "$IOS/Headers/VerbatimFFIFFI/VerbatimCoreFFI.h"

step "simulator: one library for arm64 + x86_64"
mkdir -p "$OUT/ios-simulator"
lipo -create \
  "$TARGET_DIR/${SIMULATORS[0]}/release/$LIBNAME" \
  "$TARGET_DIR/${SIMULATORS[1]}/release/$LIBNAME" \
  -output "$OUT/ios-simulator/$LIBNAME"
lipo -info "$OUT/ios-simulator/$LIBNAME"

step "XCFramework"
rm -rf "$XCFRAMEWORK"
xcodebuild -create-xcframework \
  -library "$TARGET_DIR/$DEVICE/release/$LIBNAME" -headers "$IOS/Headers" \
  -library "$OUT/ios-simulator/$LIBNAME" -headers "$IOS/Headers" \
  -output "$XCFRAMEWORK"

step "done"
echo "built ${XCFRAMEWORK#"$ROOT"/}"
du -sh "$XCFRAMEWORK"
if ((${#changed[@]})); then
  echo "the bindings changed; commit them: ${changed[*]}"
fi
echo "next: open ios/Package.swift in Xcode, or add the ios/ folder as a local package to your app"
