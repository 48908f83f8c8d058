#!/usr/bin/env bash
# Smoke test of the pinned test tools: installs them (scripts/install-tools.sh all, a
# no-op when cached) and checks that each one answers. Ends with a line
# "tools-smoke: N passed, M failed" and exits 1 if any check failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "== tools-smoke: installing tools" >&2
bash scripts/install-tools.sh all </dev/null
eval "$(bash scripts/install-tools.sh env)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
check() { # NAME COMMAND...: run COMMAND, log its output on failure
  local name=$1 start out rc=0
  shift
  start=$SECONDS
  out=$("$@" 2>&1 </dev/null) || rc=$?
  if [[ $rc -eq 0 ]]; then
    passed=$((passed + 1))
    echo "ok   - $name ($((SECONDS - start))s)"
  else
    failed=$((failed + 1))
    echo "FAIL - $name (exit $rc)"
    printf '%s\n' "$out" | tail -n 40 | sed 's/^/       /'
  fi
}

# --- Kotlin: a hello compiled against JNA (run on the JVM) and Android glue compiled
# against the android jar + androidx.annotation, in one kotlinc run (kotlinc is slow).
mkdir -p "$work/kt"
cat > "$work/kt/Hello.kt" <<'EOF'
import com.sun.jna.Library
import com.sun.jna.Native

interface CLib : Library {
    fun getpid(): Int
}

fun main() {
    val libc = Native.load("c", CLib::class.java)
    println("hello from Kotlin via JNA, pid=${libc.getpid()}")
}
EOF
cat > "$work/kt/AndroidGlue.kt" <<'EOF'
package smoke

import android.content.Context
import android.os.Build
import androidx.annotation.RequiresApi

@RequiresApi(Build.VERSION_CODES.UPSIDE_DOWN_CAKE)
fun filesDirOf(context: Context): String = context.filesDir.absolutePath
EOF

kotlinc_version() { "$KOTLINC" -version 2>&1 | tee /dev/stderr | grep -q 'kotlinc-jvm 2.4.20'; }
kotlin_compile() {
  "$KOTLINC" "$work/kt/Hello.kt" "$work/kt/AndroidGlue.kt" \
    -cp "$JNA_JAR:$ANDROID_JAR:$ANDROIDX_ANNOTATION_JAR" -d "$work/kt/smoke.jar"
}
kotlin_run_jna() {
  java -cp "$work/kt/smoke.jar:$KOTLIN_LIB/kotlin-stdlib.jar:$JNA_JAR" HelloKt | tee /dev/stderr \
    | grep -q 'hello from Kotlin via JNA'
}

# --- Java: a class using android.content.Context against the android jar.
mkdir -p "$work/java/smoke" "$work/java/out"
cat > "$work/java/smoke/Glue.java" <<'EOF'
package smoke;
import android.content.Context;
public final class Glue {
    public static String packageOf(Context context) { return context.getPackageName(); }
}
EOF
javac_android() {
  javac -d "$work/java/out" -cp "$ANDROID_JAR" "$work/java/smoke/Glue.java" \
    && [[ -f "$work/java/out/smoke/Glue.class" ]]
}

# --- cargo-deny against the offline advisory database: a throwaway crate on `backoff`
# (unmaintained, RUSTSEC-2025-0012) must be flagged.
deny_finds_advisory() {
  local crate="$work/denytest" out rc=0
  mkdir -p "$crate/src"
  : > "$crate/src/lib.rs"
  cat > "$crate/Cargo.toml" <<'EOF'
[package]
name = "denytest"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
backoff = "=0.4.0"

[workspace]
EOF
  printf '[advisories]\ndb-path = "%s"\n' "$ADVISORY_DB_PATH" > "$crate/deny.toml"
  (cd "$crate" && cargo fetch --quiet) || return 1
  out=$(cd "$crate" && "$CARGO_DENY" --offline check advisories 2>&1) || rc=$?
  printf '%s\n' "$out" | grep -E '^(error|warning)\[' >&2 || true
  [[ $rc -ne 0 ]] && grep -q 'RUSTSEC-2025-0012' <<<"$out"
}

st_version() { "$SCHEMATHESIS" --version | tee /dev/stderr | grep -q '4\.32\.5'; }
deny_version() { [[ "$("$CARGO_DENY" --version)" == "cargo-deny 0.20.2" ]]; }

check "kotlinc -version is 2.4.20" kotlinc_version
check "kotlinc compiles against JNA + android jar + androidx.annotation" kotlin_compile
check "Kotlin hello calls libc through JNA" kotlin_run_jna
check "javac compiles android.content.Context glue against the android jar" javac_android
check "Swift syntax checker self-test" bash scripts/test_check_swift_syntax.sh
check "st --version is 4.32.5" st_version
check "cargo-deny --version is 0.20.2" deny_version
check "cargo-deny flags RUSTSEC-2025-0012 from the offline advisory-db" deny_finds_advisory

echo "tools-smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
