#!/usr/bin/env bash
# Secrets scan of the repository: every file git would commit (tracked, plus untracked files
# that are not ignored). Fails when it finds
#   - a private key block: `-----BEGIN ... PRIVATE KEY-----` followed by key material
#     (a header alone, as in code that recognises PEM labels, is not a finding);
#   - a device token of our format: `vbt1.<32 hex>.<43 base64url>` (except samples whose
#     secret part decodes to printable text, like `c2FtcGxl...` = "sample...");
#   - a high-entropy base64 blob of key size (40+ characters, mixed case and digits, Shannon
#     entropy >= 4.5 bits per character) outside test fixtures (tests/, fuzz/corpus/) and
#     outside the short allow-list of public values below (each with its reason).
# Hex strings (SHA-256 digests, lockfile checksums) are not flagged: they are digests, and a
# raw key would be caught by the rules above in the encodings Verbatim writes keys in.
#
# Usage:
#   scripts/secrets-scan.sh              scan the repository (exit 1 on any finding)
#   scripts/secrets-scan.sh --self-test  copy the repository to a temp dir, plant a private
#                                        key, a token and a raw key there, and check each one
#                                        is caught (and that the clean copy passes)
#   scripts/secrets-scan.sh --dir DIR    scan DIR (a git checkout) instead
# Findings print as `path:line: rule: <redacted excerpt>`; the secret itself is never printed.
# Ends with `secrets-scan: N passed, M failed`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# scan DIR: exit 0 when clean, 1 with findings on stdout.
scan() {
  python3 - "$1" <<'PY'
import math, os, re, subprocess, sys

root = sys.argv[1]
files = subprocess.run(
    ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    check=True, capture_output=True,
).stdout.split(b"\0")

# Public values that look like keys, each with why it is not a secret.
ALLOWED_VALUES = {
    # The policy schema's example archive public key (core/src/policy/schema.rs): a public
    # key, and `policy check` warns when a real policy still holds it.
    "fwFYPPMFK03On3M8gpe3y+a91eU9NU4fVdlp+cLj2R0=",
    # The schema's example tls_pins: SHA-256 digests of public keys (SPKI), public by nature.
    "twQIshIbsc7cMk3QKcvSK2SPvt+NJlmMIBIaCID5Sv0=",
    "+CkgGhFFMLBpH6qejQYfMLzQvLrubRDxXtNkz8YMyME=",
}
# npm's sha512 integrity of the pinned kotlin-compiler tarball, and the Go module hash (h1:,
# a SHA-256 dirhash) of the pinned SeaweedFS module (scripts/install-tools.sh).
ALLOWED_LINE = re.compile(r"npm integrity: sha512-|^SEAWEEDFS_H1=h1:")
FIXTURE = re.compile(r"(^|/)(tests?|fuzz/corpus|testdata|fixtures?)/")
MAX_BYTES = 4 * 1024 * 1024

PRIVATE_HEADER = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----")
KEY_BODY = re.compile(r"[A-Za-z0-9+/=]{40,}")
TOKEN = re.compile(r"vbt1\.[0-9a-fA-F]{32}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
BLOB = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_=-])")


def entropy(s):
    counts = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def key_like(s):
    core = s.rstrip("=")
    if re.search(r"[+/]", core) and re.search(r"[-_]", core):
        return False  # both base64 alphabets at once: a path or an identifier, not base64
    if re.fullmatch(r"[0-9a-fA-F]+", core):
        return False  # hex: a digest
    if not (re.search(r"[a-z]", core) and re.search(r"[A-Z]", core) and re.search(r"[0-9]", core)):
        return False  # identifiers, words, paths
    if len(set(core)) < 20:
        return False
    return entropy(core) >= 4.5


def sample_token(tok):
    """A token whose secret decodes to printable text is a documentation sample
    (`c2FtcGxl...` = "sample..."): a real secret is 32 random bytes."""
    import base64
    secret = tok.rsplit(".", 1)[1]
    try:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except Exception:
        return False
    return all(32 <= b < 127 for b in raw)


def redact(s):
    return s[:6] + "…(%d chars)" % len(s)


findings = []
for raw in files:
    if not raw:
        continue
    rel = raw.decode("utf-8", "replace")
    path = os.path.join(root, rel)
    if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > MAX_BYTES:
        continue
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data[:8192]:
        continue  # binary
    lines = data.decode("utf-8", "replace").splitlines()
    fixture = bool(FIXTURE.search(rel))
    for n, line in enumerate(lines, 1):
        m = PRIVATE_HEADER.search(line)
        if m:
            # Key material on the same line (an escaped "\n" in a string) or the next lines.
            rest = line[m.end():].replace("\\n", "\n")
            window = [rest] + lines[n:n + 3]
            if any(KEY_BODY.search(w.replace("\\n", "")) for w in window):
                findings.append((rel, n, "private-key-block", m.group(0)))
        for m in TOKEN.finditer(line):
            if sample_token(m.group(0)):
                continue
            findings.append((rel, n, "device-token", redact(m.group(0))))
        if fixture or ALLOWED_LINE.search(line):
            continue
        for m in BLOB.finditer(line):
            s = m.group(0)
            if s in ALLOWED_VALUES or not key_like(s):
                continue
            # Part of a private key block is reported once, above.
            if "PRIVATE KEY" in "".join(lines[max(0, n - 30):n]):
                continue
            findings.append((rel, n, "high-entropy-base64", redact(s)))

for rel, n, rule, excerpt in findings:
    print(f"{rel}:{n}: {rule}: {excerpt}")
print(f"scanned {sum(1 for f in files if f)} files, {len(findings)} findings", file=sys.stderr)
sys.exit(1 if findings else 0)
PY
}

passed=0
failed=0
result() { # NAME RC
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); echo "ok   - $1"; else failed=$((failed + 1)); echo "FAIL - $1"; fi
}

# expect_finding DIR RULE: the scan of DIR fails and reports RULE.
expect_finding() {
  local out rc=0
  out=$(scan "$1" 2>/dev/null) || rc=$?
  [[ $rc -eq 1 ]] && grep -q ": $2: " <<<"$out"
}

self_test() {
  local work copy
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  copy="$work/repo"
  # A copy of what git would commit, as its own repository (so git ls-files works there).
  mkdir -p "$copy"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -f "$1" && mkdir -p "$2/$(dirname "$1")" && cp -p "$1" "$2/$1" || true' _ {} "$copy")
  git -C "$copy" init -q
  local rc=0
  scan "$copy" >/dev/null 2>&1 || rc=$?
  result "self-test: the clean copy passes" $rc

  # A freshly generated private key (never a real one), in a plausible place.
  mkdir -p "$copy/receiver/config"
  python3 - "$copy/receiver/config/server-key.pem" <<'PY'
import base64, os, sys
body = base64.encodebytes(b"\x30\x82\x04\xbd" + os.urandom(1200)).decode()
label = "PRIVATE" + " KEY"  # assembled, so this script holds no key block itself
open(sys.argv[1], "w").write(f"-----BEGIN {label}-----\n" + body + f"-----END {label}-----\n")
PY
  rc=0; expect_finding "$copy" private-key-block || rc=$?
  result "self-test: a planted PEM private key is caught" $rc
  rm -rf "$copy/receiver/config"

  # The same inside a Rust string literal with escaped newlines.
  python3 - "$copy/core/src/planted.rs" <<'PY'
import base64, os, sys
body = base64.b64encode(os.urandom(48)).decode()
label = "EC PRIVATE" + " KEY"
open(sys.argv[1], "w").write(f'const K: &str = "-----BEGIN {label}-----\\n' + body + f'\\n-----END {label}-----";\n')
PY
  rc=0; expect_finding "$copy" private-key-block || rc=$?
  result "self-test: a private key in a string literal is caught" $rc
  rm -f "$copy/core/src/planted.rs"

  # A device token of our format, even in a test file.
  python3 - "$copy/receiver/tests/planted_token.rs" <<'PY'
import base64, os, sys
tok = "vbt1." + os.urandom(16).hex() + "." + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
open(sys.argv[1], "w").write('// leftover from debugging\nconst T: &str = "' + tok + '";\n')
PY
  rc=0; expect_finding "$copy" device-token || rc=$?
  result "self-test: a planted device token is caught" $rc
  rm -f "$copy/receiver/tests/planted_token.rs"

  # A raw 32-byte key in base64, as an archive private key file or a config value would hold it.
  python3 - "$copy/docs/planted.md" <<'PY'
import base64, os, sys
open(sys.argv[1], "w").write("archive_private_key: " + base64.b64encode(os.urandom(32)).decode() + "\n")
PY
  rc=0; expect_finding "$copy" high-entropy-base64 || rc=$?
  result "self-test: a planted base64 key is caught" $rc
  rm -f "$copy/docs/planted.md"

  rc=0; scan "$copy" >/dev/null 2>&1 || rc=$?
  result "self-test: clean again once the plants are removed" $rc
}

case "${1:-}" in
  "")
    rc=0; scan "$ROOT" || rc=$?; result "no private keys, device tokens or key-like blobs in the repository" $rc ;;
  --dir)
    [[ -n "${2:-}" ]] || { echo "--dir needs a directory" >&2; exit 2; }
    rc=0; scan "$(cd "$2" && pwd)" || rc=$?; result "no private keys, device tokens or key-like blobs in $2" $rc ;;
  --self-test)
    self_test ;;
  *)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac

echo "secrets-scan: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
