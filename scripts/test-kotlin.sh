#!/usr/bin/env bash
# The Kotlin layer on the desktop JVM, end to end:
#   1. builds the host library (verbatim-ffi with the `test-hooks` feature, plus its
#      `uniffi-bindgen` binary) and the `verbatim` CLI (the reference receiver);
#   2. generates the Kotlin bindings in library mode, twice: for the JVM (java.lang.ref.Cleaner)
#      and as the Android library ships them (`android = true`, bindings/uniffi.toml);
#   3. compiles the bindings + the platform-neutral wrappers + the JVM tests with kotlinc, and
#      compile-checks the Android-specific classes against the Android platform jar (API 34);
#   4. starts the reference receiver on 127.0.0.1 over TLS (self-signed CA), creates an archive
#      key and a device token, and hands them to the tests in VERBATIM_* variables;
#   5. runs the tests (plain `main` runner; last line `N passed, M failed`; exit 1 on failure).
#
# Usage: scripts/test-kotlin.sh            (tools are installed on first use, then cached)
# Env:   VERBATIM_TEST_FILTER=substring    run only the tests whose name contains it
#        VERBATIM_SKIP_ANDROID_CHECK=1     skip the Android compile check (step 3, second half)
# kotlinc runs only when a Kotlin source, the bindings or the tools changed (hash stamp in
# target/kotlin-tests/); a cached run is the cargo no-op build plus the JVM run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/kotlin-tests"
LIB_DIR="$TARGET_DIR/debug"
LIB="$LIB_DIR/libverbatim_ffi.so"
ANDROID_SRC="$ROOT/android/src/main/kotlin"
# Classes that need Google-Maven-only libraries (androidx.enterprise) live here; the Gradle
# build compiles them, this script cannot (see android/README.md).
ANDROID_GOOGLE_ONLY="$ROOT/android/src/enterprise/kotlin"
JVM_TEST_SRC="$ROOT/android/src/jvmTest/kotlin"

T0=$(date +%s.%N)
stage() { printf '[test-kotlin] %-44s (%ss)\n' "$*" "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" >&2; }
die() { printf '[test-kotlin] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------ tools
bash scripts/install-tools.sh kotlin jna android-jar </dev/null >&2
eval "$(bash scripts/install-tools.sh env)"
for v in KOTLINC KOTLIN_LIB JNA_JAR ANDROID_JAR ANDROIDX_ANNOTATION_JAR; do
  [[ -e "${!v}" ]] || die "$v=${!v} is missing (scripts/install-tools.sh kotlin jna android-jar)"
done
command -v java >/dev/null || die "java not found (JDK 17)"
STDLIB="$KOTLIN_LIB/kotlin-stdlib.jar"
KTEST="$KOTLIN_LIB/kotlin-test.jar"
COROUTINES="$KOTLIN_LIB/kotlinx-coroutines-core-jvm.jar"
stage "tools ready"

# ------------------------------------------------------------------------------ build
# One build gives the library and the generator from the same features, so the bindings are
# generated from exactly the library the tests load.
cargo build -p verbatim-ffi --features test-hooks,cli >&2
cargo build -p verbatim-cli --bin verbatim >&2
[[ -f "$LIB" ]] || die "$LIB was not built"
stage "host library and CLI built"

mkdir -p "$OUT"
JVM_CONFIG="$OUT/uniffi-jvm.toml"
# The JVM flavour differs from the shipped Android flavour only in the object cleaner.
printf '[crates.%s.bindings.kotlin]\nandroid = false\n' verbatim_ffi verbatim_core > "$JVM_CONFIG"
rm -rf "$OUT/gen-jvm" "$OUT/gen-android"
"$LIB_DIR/uniffi-bindgen" generate --library "$LIB" --language kotlin --no-format \
  --out-dir "$OUT/gen-jvm" --config "$JVM_CONFIG" >&2
"$LIB_DIR/uniffi-bindgen" generate --library "$LIB" --language kotlin --no-format \
  --out-dir "$OUT/gen-android" >&2
# Two UniFFI components in one library: verbatim-ffi (com.verbatim.ffi) and verbatim-core's
# records and enums (com.verbatim.ffi.core, core/uniffi.toml).
GEN_JVM=("$OUT/gen-jvm/com/verbatim/ffi/verbatim_ffi.kt" "$OUT/gen-jvm/com/verbatim/ffi/core/verbatim_core.kt")
GEN_ANDROID=("$OUT/gen-android/com/verbatim/ffi/verbatim_ffi.kt" "$OUT/gen-android/com/verbatim/ffi/core/verbatim_core.kt")
for f in "${GEN_JVM[@]}" "${GEN_ANDROID[@]}"; do [[ -f "$f" ]] || die "bindings not generated: $f"; done
stage "Kotlin bindings generated"

# ------------------------------------------------------------------------------ compile
# The platform-neutral wrappers: package com.verbatim.agent, not its .android subpackage.
mapfile -t NEUTRAL < <(find "$ANDROID_SRC/com/verbatim/agent" -maxdepth 1 -name '*.kt' | sort)
mapfile -t ANDROID_ONLY < <(find "$ANDROID_SRC/com/verbatim/agent/android" -name '*.kt' | sort)
mapfile -t TESTS < <(find "$JVM_TEST_SRC" -name '*.kt' | sort)
((${#NEUTRAL[@]} > 0 && ${#TESTS[@]} > 0)) || die "no Kotlin sources found"
# The neutral code must not touch Android: it is what runs on the desktop JVM.
if grep -lE '^import (android|androidx)\.' "${NEUTRAL[@]}"; then
  die "the files above are platform-neutral but import Android classes: move them to com/verbatim/agent/android/"
fi

# compile_cached NAME CLASSPATH SOURCES...: kotlinc into $OUT/NAME.jar unless the inputs match
# the stamp of the last successful compile.
compile_cached() {
  local name=$1 cp=$2 jar="$OUT/$1.jar" stamp="$OUT/$1.stamp" want
  shift 2
  # kotlinc's path names its version (install-tools.sh); the classpath jars are versioned too.
  want=$( { printf '%s\n' "$KOTLINC" "$cp"; sha256sum "$@"; } | sha256sum | cut -d' ' -f1)
  if [[ -f "$jar" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    stage "$name: up to date"
    return 0
  fi
  rm -f "$jar" "$stamp"
  # -nowarn: the generated bindings warn a lot (unused parameters, redundant casts).
  "$KOTLINC" -nowarn -jvm-target 17 -cp "$cp" -d "$jar" "$@" >&2 || die "kotlinc failed for $name"
  printf '%s\n' "$want" > "$stamp"
  stage "$name: compiled"
}

compile_cached jvm-tests "$JNA_JAR:$COROUTINES:$KTEST" "${GEN_JVM[@]}" "${NEUTRAL[@]}" "${TESTS[@]}"

if [[ "${VERBATIM_SKIP_ANDROID_CHECK:-}" != 1 ]]; then
  # Compile only (nothing Android runs here): the Android-flavour bindings, the neutral
  # wrappers and the Android glue against the API 34 platform jar. kotlinx-coroutines-android
  # adds only Dispatchers.Main at run time; compiling against -core is equivalent.
  compile_cached android-check "$ANDROID_JAR:$ANDROIDX_ANNOTATION_JAR:$JNA_JAR:$COROUTINES" \
    "${GEN_ANDROID[@]}" "${NEUTRAL[@]}" "${ANDROID_ONLY[@]}"
  if [[ -d "$ANDROID_GOOGLE_ONLY" ]]; then
    printf '[test-kotlin] not compiled here (needs Google Maven): %s\n' \
      "$(cd "$ROOT" && find "${ANDROID_GOOGLE_ONLY#"$ROOT"/}" -name '*.kt' | tr '\n' ' ')" >&2
  fi
fi

# ------------------------------------------------------------------------------ receiver
WORK=$(mktemp -d "${TMPDIR:-/tmp}/verbatim-kotlin.XXXXXX")
RECEIVER_PID=""
cleanup() {
  if [[ -n "$RECEIVER_PID" ]] && kill -0 "$RECEIVER_PID" 2>/dev/null; then
    kill "$RECEIVER_PID" 2>/dev/null || true
    wait "$RECEIVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

VERBATIM="$LIB_DIR/verbatim"
TENANT=acme-kotlin
DEVICE=jvm-device-1

start_receiver() {
  local keys="$WORK/keys" data="$WORK/receiver" tokens="$WORK/tokens.jsonl" log="$WORK/receiver.log"
  local keygen_out token url ca key_id public_key i
  keygen_out=$("$VERBATIM" keygen --out "$keys" 2>&1) || { printf '%s\n' "$keygen_out" >&2; return 1; }
  public_key=$(tr -d ' \n\r' < "$keys/archive-public.key")
  # The key id: the line of `keygen` output that names it ("key id: ...", "key_id = ...").
  key_id=$(printf '%s\n' "$keygen_out" | sed -nE 's/.*key[ _-]?id[^A-Za-z0-9]*[:=][[:space:]]*"?([A-Za-z0-9._:+\/=-]+)"?.*/\1/Ip' | head -n1)
  [[ -n "$public_key" && -n "$key_id" ]] || { printf 'keygen output not understood:\n%s\n' "$keygen_out" >&2; return 1; }
  # The token is printed once, alone on the last line (it exists nowhere else).
  token=$("$VERBATIM" receive add-device --tokens "$tokens" --tenant "$TENANT" --device "$DEVICE" 2>/dev/null | tail -n1 | tr -d ' \r')
  [[ -n "$token" ]] || return 1
  "$VERBATIM" receive --listen 127.0.0.1:0 --data "$data" --tokens "$tokens" --archive-key "$keys/archive-public.key" \
    --self-signed >"$log" 2>&1 &
  RECEIVER_PID=$!
  # Ready when it prints its address; bounded wait (30 s), no fixed sleep.
  url=""
  for ((i = 0; i < 300; i++)); do
    url=$(grep -oE 'https://127\.0\.0\.1:[0-9]+[^[:space:]"]*' "$log" | head -n1 || true)
    [[ -n "$url" ]] && break
    kill -0 "$RECEIVER_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  [[ -n "$url" ]] || { cat "$log" >&2; die "receiver did not report its address within 30 s"; }
  ca=$(grep -oE '[^[:space:]"]+\.pem' "$log" | head -n1 || true)
  [[ -n "$ca" && -f "$ca" ]] || ca=$(find "$data" -name '*ca*.pem' | head -n1)
  [[ -n "$ca" && -f "$ca" ]] || { cat "$log" >&2; die "receiver CA certificate not found"; }
  export VERBATIM_ARCHIVE_URL="$url" VERBATIM_ARCHIVE_CA_PEM="$ca" VERBATIM_ARCHIVE_PUBLIC_KEY="$public_key" \
    VERBATIM_ARCHIVE_KEY_ID="$key_id" VERBATIM_TENANT_ID="$TENANT" VERBATIM_DEVICE_ID="$DEVICE" \
    VERBATIM_DEVICE_TOKEN="$token"
  stage "receiver listening on $url"
}

if "$VERBATIM" receive --help 2>&1 | grep -q -- '--listen'; then
  start_receiver || die "could not start the reference receiver (output above)"
else
  printf '[test-kotlin] WARNING: `verbatim receive` is not available yet: the upload test will fail\n' >&2
fi

# ------------------------------------------------------------------------------ run
stage "running the JVM tests"
set +e
# RUST_BACKTRACE=0: the panic tests panic on purpose; the default hook's one line is enough.
# The tests' temporary directories go under $WORK, removed on exit.
mkdir -p "$WORK/tmp"
# The value-conversion table every layer runs (the Rust test reads it too).
export VERBATIM_VALUE_TABLE="$ROOT/core/tests/data/policy-value-conversions.json"
RUST_BACKTRACE=0 java -Xss1m -Djava.io.tmpdir="$WORK/tmp" -Djna.library.path="$LIB_DIR" \
  -cp "$OUT/jvm-tests.jar:$STDLIB:$KTEST:$COROUTINES:$JNA_JAR" \
  com.verbatim.agent.JvmTestsKt
status=$?
set -e
stage "done (exit $status)"
exit "$status"
