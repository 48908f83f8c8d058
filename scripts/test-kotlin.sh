#!/usr/bin/env bash
# The Kotlin layer (android/), end to end, under Robolectric on the desktop JVM:
#   1. builds the host library (verbatim-ffi with the `test-hooks` feature, plus its
#      `uniffi-bindgen` binary) and the `verbatim` CLI (the reference receiver);
#   2. generates the Kotlin bindings in library mode as the Android library ships them
#      (`android = true`; bindings/uniffi.toml and core/uniffi.toml: packages com.verbatim.ffi
#      and com.verbatim.ffi.core);
#   3. starts the reference receiver on 127.0.0.1 over TLS (self-signed CA), creates an archive
#      key and a device token, and hands them to the tests in VERBATIM_* variables;
#   4. runs `mvn test` on android/pom.xml: kotlin-maven-plugin compiles every Kotlin file under
#      android/src/ with the bindings, Surefire runs the JUnit tests under Robolectric 4.17 (API
#      34) with the Rust library loaded through JNA; the last line is `N passed, M failed`
#      (Surefire's totals over its two executions; exit 1 on any failure).
#
# Usage: scripts/test-kotlin.sh            (Maven's downloads are cached, see below)
# Env:   VERBATIM_TEST_FILTER=pattern      run only these tests (Surefire's -Dtest, e.g.
#                                          'AndroidAgentTest' or 'AgentFacadeTest#fullUpload')
# Maven's local repository is the tool cache, ${XDG_CACHE_HOME:-~/.cache}/verbatim/m2 (about
# 580 MB with Robolectric's android-all jars): the first run downloads (checksums enforced),
# later runs download nothing. The build output goes to $CARGO_TARGET_DIR/kotlin-tests/maven:
# compiled from scratch when a Kotlin source, the bindings or pom.xml changed, else not at all.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/kotlin-tests"
LIB_DIR="$TARGET_DIR/debug"
LIB="$LIB_DIR/libverbatim_ffi.so"
ANDROID_SRC="$ROOT/android/src/main/kotlin"

T0=$(date +%s.%N)
stage() { printf '[test-kotlin] %-44s (%ss)\n' "$*" "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" >&2; }
die() { printf '[test-kotlin] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------ tools
command -v java >/dev/null || die "java not found (JDK 17)"
if ! command -v mvn >/dev/null 2>&1; then
  printf '[test-kotlin] installing Maven (Debian package)\n' >&2
  if [[ "$(id -u)" == 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y maven >/dev/null || { $sudo apt-get update >/dev/null && $sudo apt-get install -y maven >/dev/null; }
fi
command -v mvn >/dev/null || die "mvn not found (Maven 3.8+; Debian: apt-get install maven)"
M2="${VERBATIM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbatim}/m2"
mkdir -p "$M2"

# ------------------------------------------------------------------------------ build
# One build gives the library and the generator from the same features, so the bindings are
# generated from exactly the library the tests load.
cargo build -p verbatim-ffi --features test-hooks,cli >&2
cargo build -p verbatim-cli --bin verbatim >&2
[[ -f "$LIB" ]] || die "$LIB was not built"
stage "host library and CLI built"

mkdir -p "$OUT"
GEN="$OUT/gen-android"
# Generated into a temporary directory and moved in place only when different, so Maven's
# incremental compile sees an unchanged file on a warm run.
rm -rf "$OUT/gen-android.new"
"$LIB_DIR/uniffi-bindgen" generate --library "$LIB" --language kotlin --no-format \
  --out-dir "$OUT/gen-android.new" >&2
# Two UniFFI components in one library: verbatim-ffi (com.verbatim.ffi) and verbatim-core's
# records and enums (com.verbatim.ffi.core, core/uniffi.toml).
for f in com/verbatim/ffi/verbatim_ffi.kt com/verbatim/ffi/core/verbatim_core.kt; do
  [[ -f "$OUT/gen-android.new/$f" ]] || die "bindings not generated: $f"
done
if ! diff -r -q "$OUT/gen-android.new" "$GEN" >/dev/null 2>&1; then
  rm -rf "$GEN"
  mv "$OUT/gen-android.new" "$GEN"
else
  rm -rf "$OUT/gen-android.new"
fi
stage "Kotlin bindings generated"

# The platform-neutral wrappers (package com.verbatim.agent, not .android) must not touch Android.
mapfile -t NEUTRAL < <(find "$ANDROID_SRC/com/verbatim/agent" -maxdepth 1 -name '*.kt' | sort)
((${#NEUTRAL[@]} > 0)) || die "no Kotlin sources found"
if grep -lE '^import (android|androidx)\.' "${NEUTRAL[@]}"; then
  die "the files above are platform-neutral but import Android classes: move them to com/verbatim/agent/android/"
fi

# Kotlin's incremental compile under Maven does not recompile the tests when only the library
# classes they call changed (a stale test then fails with NoSuchMethodError): when any input
# changed since the last successful run, compile from scratch; otherwise nothing is compiled.
STAMP="$OUT/maven/inputs.sha256"
inputs=$( { find "$ROOT/android/src" "$GEN" -type f -print0 | sort -z | xargs -0 sha256sum;
  sha256sum "$ROOT/android/pom.xml"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$inputs" ]]; then
  rm -rf "$OUT/maven/classes" "$OUT/maven/test-classes" "$OUT/maven/kotlin-ic" "$STAMP"
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
  # For tests that check what the archive holds: `verbatim export` with the archive's private key.
  export VERBATIM_CLI="$VERBATIM" VERBATIM_RECEIVER_DATA="$data" VERBATIM_ARCHIVE_SECRET_KEY="$keys/archive-private.key"
  stage "receiver listening on $url"
}

if "$VERBATIM" receive --help 2>&1 | grep -q -- '--listen'; then
  start_receiver || die "could not start the reference receiver (output above)"
else
  printf '[test-kotlin] WARNING: `verbatim receive` is not available yet: the upload test will fail\n' >&2
fi

# ------------------------------------------------------------------------------ run
stage "running the tests (mvn test)"
# --strict-checksums: a download whose checksum does not match Maven Central's fails the run.
mvn_args=(-B -q --strict-checksums -f "$ROOT/android/pom.xml" "-Dmaven.repo.local=$M2"
  "-Dverbatim.build.dir=$OUT/maven" "-Dverbatim.bindings.dir=$GEN" "-Dverbatim.lib.dir=$LIB_DIR"
  "-Dverbatim.tmp.dir=$WORK/tmp")
if [[ -n "${VERBATIM_TEST_FILTER:-}" ]]; then
  mvn_args+=("-Dtest=$VERBATIM_TEST_FILTER" -Dsurefire.failIfNoSpecifiedTests=false)
fi
# The value-conversion table every layer runs (the Rust test reads it too).
export VERBATIM_VALUE_TABLE="$ROOT/core/tests/data/policy-value-conversions.json"
mkdir -p "$WORK/tmp" # the tests' temporary files, removed on exit
rm -rf "$OUT"/maven/surefire-reports* # the summary below counts this run only
set +e
# RUST_BACKTRACE=0: the panic tests panic on purpose; the default hook's one line is enough.
# (Maven 3.8 prints bare colour resets even in batch mode: stripped.)
RUST_BACKTRACE=0 mvn "${mvn_args[@]}" test 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g'
status=${PIPESTATUS[0]}
if ((status == 0)); then printf '%s\n' "$inputs" > "$STAMP"; fi
set -e
# Surefire's totals over every execution, as one line.
# Surefire's totals over both executions (its own summary is per execution, and -q prints it
# only on failure); the last line is the project's usual `N passed, M failed`.
read -r run failed skipped < <(cat "$OUT"/maven/surefire-reports*/TEST-*.xml 2>/dev/null | python3 -c '
import re, sys
t = f = s = 0
for m in re.finditer(r"<testsuite [^>]*>", sys.stdin.read()):
    a = dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(0)))
    t += int(a.get("tests", 0)); f += int(a.get("failures", 0)) + int(a.get("errors", 0)); s += int(a.get("skipped", 0))
print(t, f, s)')
printf '[test-kotlin] Surefire ran %s tests: %s failed or in error, %s skipped\n' "$run" "$failed" "$skipped" >&2
stage "done (exit $status)"
if ((status != 0 && failed == 0)); then failed=1; fi # the build itself failed (compile, fork)
printf '%s passed, %s failed\n' "$((run - failed - skipped))" "$failed"
exit "$status"
