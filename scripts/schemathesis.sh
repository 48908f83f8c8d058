#!/usr/bin/env bash
# Contract test of the upload API: schemathesis (pinned 4.32.5) generates requests from
# docs/upload-api.yaml and sends them to a real `verbatim receive --self-signed` on 127.0.0.1,
# authenticated with a device token issued by `verbatim receive add-device`, trusting only the
# receiver's own CA. It checks that no answer is a 5xx, that every status code, content type,
# header and body is the one the document promises, that requests without a valid token are
# refused, that schema-invalid requests are refused and schema-valid ones accepted, and that
# undocumented methods answer 405.
#
# The batch body is a binary media type schemathesis cannot generate by itself: a hook turns
# each generated positive string into a well-formed, correctly chained batch for the token's
# own device (a new random stream, so the answer is 200), and every other generated value
# into the bytes of that value (which the decoder must refuse with 400).
#
# Afterwards: the receiver must still be running, its log must hold no panic and no ERROR
# line, and `verbatim verify` must find every stored stream complete.
#
# Usage: scripts/schemathesis.sh
#   env: ST_MAX_EXAMPLES (default 40 per operation and phase), ST_SEED (default 1),
#        VERBATIM_BIN (default: target/debug/verbatim, built first), ST_KEEP=1 keeps the work
#        directory (receiver log, JUnit and HAR reports) and prints its path.
# Ends with `schemathesis: N passed, M failed` (N, M: schemathesis test cases plus the checks
# above); exit 1 if anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MAX_EXAMPLES="${ST_MAX_EXAMPLES:-40}"
SEED="${ST_SEED:-1}"
BIN="${VERBATIM_BIN:-$ROOT/target/debug/verbatim}"
TENANT=acme-st
DEVICE=st-device-1

install_log=$(bash scripts/install-tools.sh schemathesis 2>&1 </dev/null) || { printf '%s\n' "$install_log" >&2; exit 2; }
eval "$(bash scripts/install-tools.sh env)"
if [[ -z "${VERBATIM_BIN:-}" ]]; then
  cargo build --quiet --locked -p verbatim-cli --bin verbatim
fi
[[ -x "$BIN" ]] || { echo "no verbatim binary at $BIN" >&2; exit 2; }

work=$(mktemp -d)
rx_pid=
cleanup() {
  if [[ -n "$rx_pid" ]] && kill -0 "$rx_pid" 2>/dev/null; then
    kill -TERM "$rx_pid" 2>/dev/null || true
    wait "$rx_pid" 2>/dev/null || true
  fi
  if [[ -n "${ST_KEEP:-}" ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- the receiver
token=$("$BIN" receive add-device --tokens "$work/tokens.jsonl" --tenant "$TENANT" --device "$DEVICE" 2>/dev/null)
# The archive key: generated batches announce its id, so that well-formed ones are stored.
key_id=$("$BIN" keygen --out "$work/keys" 2>/dev/null | sed -n 's/^archive_key_id: //p')
[[ -n "$key_id" ]] || { echo "keygen did not print the key id" >&2; exit 2; }
# Every generated batch opens a new stream of the one device: no stream cap in the way.
"$BIN" receive --listen 127.0.0.1:0 --data "$work/data" --tokens "$work/tokens.jsonl" --self-signed \
  --archive-key "$work/keys/archive-public.key" --max-streams-per-device 1000000000 \
  --read-timeout-secs 10 >"$work/receiver.out" 2>"$work/receiver.log" &
rx_pid=$!
url=
for _ in $(seq 1 300); do
  url=$(sed -n 's/^listening on \(https:\/\/[0-9.:]*\)$/\1/p' "$work/receiver.out")
  [[ -n "$url" ]] && break
  kill -0 "$rx_pid" 2>/dev/null || { cat "$work/receiver.log" >&2; echo "receiver did not start" >&2; exit 2; }
  sleep 0.1
done
[[ -n "$url" ]] || { echo "receiver did not print its address" >&2; exit 2; }
case "$url" in https://127.0.0.1:*) ;; *) echo "refusing to test a non-loopback address: $url" >&2; exit 2 ;; esac
echo "receiver: $url (CA $work/data/ca.pem)" >&2

# --- the serializer for application/vnd.verbatim.batch.v1
mkdir -p "$work/hooks"
cat > "$work/hooks/verbatim_st_hooks.py" <<'PY'
"""Schemathesis hooks: serialise generated bodies as Verbatim batches (core/src/wire.rs)."""
import hashlib
import json
import os
import struct

import schemathesis
from schemathesis.generation.modes import GenerationMode

TENANT = os.environ["VERBATIM_ST_TENANT"].encode()
DEVICE = os.environ["VERBATIM_ST_DEVICE"].encode()
KEY_ID = os.environ["VERBATIM_ST_KEY_ID"].encode()
_counter = [0]


def _short(b):
    return struct.pack(">H", len(b)) + b


def _put_str(h, b):
    h.update(struct.pack(">Q", len(b)))
    h.update(b)


def genesis(tenant, device, stream):
    h = hashlib.sha256(b"verbatim/chain/v1/genesis")
    for part in (tenant, device, stream):
        _put_str(h, part)
    return h.digest()


def link(prev, seq, epoch, ciphertext):
    h = hashlib.sha256(b"verbatim/chain/v1/link")
    h.update(prev)
    h.update(struct.pack(">QQQ", seq, epoch, len(ciphertext)))
    h.update(ciphertext)
    return h.digest()


def valid_batch(seed: bytes) -> bytes:
    """A well-formed batch for the token's device: a new stream, records 1..n, chained."""
    _counter[0] += 1
    digest = hashlib.sha256(seed + str(_counter[0]).encode() + os.urandom(8)).digest()
    stream = ("st-" + digest[:12].hex()).encode()
    n = 1 + digest[12] % 4
    epoch = 1
    out = b"VBT1" + _short(TENANT) + _short(DEVICE) + _short(stream)
    out += struct.pack(">H", 1) + struct.pack(">Q", epoch) + _short(KEY_ID) + _short(hashlib.sha256(digest).digest())
    out += struct.pack(">I", n)
    prev = genesis(TENANT, DEVICE, stream)
    for seq in range(1, n + 1):
        # Sealed records are opaque to the receiver; the generated text stands in for one.
        ciphertext = seed[: 1 + digest[13 + seq] * 4] + hashlib.sha256(seed + bytes([seq])).digest()
        prev = link(prev, seq, epoch, ciphertext)
        out += struct.pack(">QQ", seq, epoch) + prev + struct.pack(">I", len(ciphertext)) + ciphertext
    return out


@schemathesis.serializer("application/vnd.verbatim.batch.v1")
def batch(ctx, value):
    meta = ctx.case.meta
    positive = meta is None or meta.generation.mode == GenerationMode.POSITIVE
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return valid_batch(value.encode("utf-8", "surrogatepass")) if positive else value.encode("utf-8", "surrogatepass")
    # A schema-invalid body (a number, an object, null...): its JSON text, which is no batch.
    return json.dumps(value).encode()
PY

# --- the run
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance,missing_required_header,unsupported_method,allow_header_conformance,ignored_auth
st_rc=0
(
  cd "$work"
  PYTHONPATH="$work/hooks" SCHEMATHESIS_HOOKS=verbatim_st_hooks \
    VERBATIM_ST_TENANT="$TENANT" VERBATIM_ST_DEVICE="$DEVICE" VERBATIM_ST_KEY_ID="$key_id" \
    "$SCHEMATHESIS" run "$ROOT/docs/upload-api.yaml" \
      --url "$url" \
      --tls-verify "$work/data/ca.pem" \
      -H "Authorization: Bearer $token" \
      --checks "$checks" \
      --phases examples,coverage,fuzzing \
      --max-examples "$MAX_EXAMPLES" \
      --seed "$SEED" \
      --workers 2 \
      --request-timeout 20 \
      --generation-database none \
      --no-color \
      --report junit,har --report-dir "$work/report"
) >"$work/st.out" 2>&1 || st_rc=$?
# The token must not show up in what we print (schemathesis sanitises, but check).
sed "s/${token//./\\.}/[token]/g" "$work/st.out"

# --- afterwards
passed=0
failed=0
result() { # NAME RC
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); echo "ok   - $1"; else failed=$((failed + 1)); echo "FAIL - $1"; fi
}
cases=$(grep -E '^ *[0-9]+ generated, ' "$work/st.out" | tail -n 1 | sed 's/^ *//' || true)
gen_passed=$(grep -Eo '[0-9]+ passed' <<<"$cases" | grep -Eo '[0-9]+' || true)
gen_failed=$(grep -Eo '[0-9]+ unique failures?|[0-9]+ failed' <<<"$cases" | grep -Eo '^[0-9]+' || true)
passed=$((passed + ${gen_passed:-0}))
failed=$((failed + ${gen_failed:-0}))
result "schemathesis run (exit $st_rc; test cases: ${cases:-none counted})" "$st_rc"

alive=0; kill -0 "$rx_pid" 2>/dev/null || alive=1
result "the receiver is still running" $alive
kill -TERM "$rx_pid" 2>/dev/null || true
wait "$rx_pid" 2>/dev/null || true
rx_pid=
clean=0
if grep -nE 'panicked|ERROR' "$work/receiver.log" >&2; then clean=1; fi
result "the receiver logged no panic and no ERROR" $clean
leak=0
if grep -qF "${token##*.}" "$work/receiver.log" "$work/receiver.out"; then leak=1; fi
result "the receiver's output never holds the token's secret" $leak
vrc=0
"$BIN" verify --data "$work/data" >"$work/verify.out" 2>&1 || vrc=$?
[[ $vrc -eq 0 ]] || cat "$work/verify.out" >&2
result "verbatim verify: $(tail -n 1 "$work/verify.out")" $vrc

echo "schemathesis: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
