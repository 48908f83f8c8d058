#!/usr/bin/env bash
# Every test of the project, in one command (the README's second command; .ci/run runs it).
# Installs what a fresh machine lacks (pinned, checksum-verified, cached outside the clone in
# ${XDG_CACHE_HOME:-~/.cache}/verbatim/, see scripts/install-tools.sh), then runs
# the Rust tests, the Android layer under Robolectric, the Swift checks and the supply-chain checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

stage() { printf '\n==== %s\n' "$*"; }

stage "tools (pinned; cached after the first run)"
bash scripts/install-tools.sh all </dev/null
# SeaweedFS (S3 with Object Lock) for the object store tests: built from the Go module proxy
# once per machine (~13 min on 2 cores), cached after.
bash scripts/install-tools.sh seaweedfs </dev/null
eval "$(bash scripts/install-tools.sh env)"
# The object store tests fail, instead of skipping, if SeaweedFS is missing.
export VERBATIM_REQUIRE_WEED=1

stage "Rust: every crate's unit, integration and end-to-end tests"
cargo test --workspace --locked

stage "Rust style: rustfmt (rustfmt.toml) and clippy with warnings as errors"
# Both ship with the Rust toolchain of this machine kind; their absence is a broken machine.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings

stage "Android layer under Robolectric (Maven + Surefire: bindings, wrappers, Android glue, against the host library)"
bash scripts/test-kotlin.sh

stage "Swift syntax checker self-test"
bash scripts/test_check_swift_syntax.sh

stage "Swift: bindings in sync with the library, facade coverage, syntax of every .swift file and manifest, privacy manifest, release manifest rewrite, stale iOS statements in the docs"
bash scripts/test-swift.sh

stage "Supply chain: cargo deny offline (advisories, licenses, bans, sources), and proof it fails on an unmaintained crate"
bash scripts/deny.sh
bash scripts/deny.sh --self-test

stage "No credential, key or token in the repository (and proof the scan catches planted ones)"
bash scripts/secrets-scan.sh
bash scripts/secrets-scan.sh --self-test

stage "Schemathesis against the receiver's OpenAPI document on 127.0.0.1"
bash scripts/schemathesis.sh

stage "Benchmarks still run (quick mode; the figures come from a full 'verbatim bench')"
cargo run --release --locked -q -p verbatim-cli -- bench --quick

stage "all test stages passed"
