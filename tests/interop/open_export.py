#!/usr/bin/env python3
"""An independent archive-side opener for Verbatim, written from docs/record-format.md alone.

Reads a reference receiver's data directory (archive.db), verifies every stream's hash chain
and sequence continuity (standard library only), and, given the archive private key and when
the `cryptography` package is importable, opens every record, decodes it, and checks every
attachment against its end record.

Usage: open_export.py --data DIR [--key FILE]

Prints one JSON report on stdout. It carries counts, sequence numbers and SHA-256 digests of
message texts, never captured content. Exit status: 0 when every record verified (and, when
decrypting, opened and every attachment matched), 1 when a problem was found, 2 when the
opener could not run.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import stat
import struct
import sys

try:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives import serialization
    from cryptography.exceptions import InvalidTag

    HAVE_CRYPTO = True
except ImportError:  # verification still works; decryption is reported as unavailable
    HAVE_CRYPTO = False


class Unusable(Exception):
    """The opener cannot run at all (missing store, unreadable key)."""


# --- Notation helpers -------------------------------------------------------------------------


def u16be(n):
    return struct.pack(">H", n)


def u32be(n):
    return struct.pack(">I", n)


def u64be(n):
    return struct.pack(">Q", n)


def utf8(s):
    return s.encode("utf-8")


# --- The hash chain ---------------------------------------------------------------------------


def genesis(tenant, device, stream):
    h = hashlib.sha256(b"verbatim/chain/v1/genesis")
    for part in (tenant, device, stream):
        b = utf8(part)
        h.update(u64be(len(b)))
        h.update(b)
    return h.digest()


def link(prev_link, seq, epoch, ciphertext):
    h = hashlib.sha256(b"verbatim/chain/v1/link")
    h.update(prev_link)
    h.update(u64be(seq))
    h.update(u64be(epoch))
    h.update(u64be(len(ciphertext)))
    h.update(ciphertext)
    return h.digest()


# --- Sealing: HPKE (RFC 9180) base mode, X25519 / HKDF-SHA256 / AES-256-GCM, export only -----


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


KEM_SUITE = b"KEM" + u16be(0x0020)
HPKE_SUITE = b"HPKE" + u16be(0x0020) + u16be(0x0001) + u16be(0x0002)


def labeled_extract(suite, salt, label, ikm):
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite, prk, label, info, length):
    return hkdf_expand(prk, u16be(length) + b"HPKE-v1" + suite + label + info, length)


def epoch_info(tenant, device, stream, epoch, label=b"verbatim/epoch/v1"):
    info = label
    for part in (tenant, device, stream):
        b = utf8(part)
        info += u32be(len(b)) + b
    return info + u64be(epoch)


def derive_exports(private_key, public_key, enc, info, labels):
    """HPKE base-mode receiver setup, then one Export per label (32 bytes each)."""
    dh = private_key.exchange(X25519PublicKey.from_public_bytes(enc))
    if dh == bytes(32):
        raise ValueError("all-zero X25519 result")
    kem_context = enc + public_key
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    shared_secret = labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", kem_context, 32)
    psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    exporter_secret = labeled_expand(HPKE_SUITE, secret, b"exp", context, 32)
    return [labeled_expand(HPKE_SUITE, exporter_secret, b"sec", label, 32) for label in labels]


def derive_epoch_key(private_key, public_key, enc, info):
    return derive_exports(private_key, public_key, enc, info, [b"verbatim/epoch-key/v1"])[0]


# Sealing version 2 (conversation keys): the announced encapsulation is 0x02 || 32 bytes.
EPOCH_KEY_REF = bytes(16)


def key_ref_mask(ref_key, seq):
    return hmac.new(ref_key, b"verbatim/key-ref/v2" + u64be(seq), hashlib.sha256).digest()[:16]


def associated_data_v2(tenant, device, stream, seq, epoch, prev_link, key_ref):
    ad = b"verbatim/record/v2"
    for part in (tenant, device, stream):
        b = utf8(part)
        ad += u32be(len(b)) + b
    return ad + u64be(seq) + u64be(epoch) + prev_link + key_ref


def nonce(seq):
    return bytes(4) + u64be(seq)


def associated_data(tenant, device, stream, seq, epoch, prev_link):
    ad = b"verbatim/record/v1"
    for part in (tenant, device, stream):
        b = utf8(part)
        ad += u32be(len(b)) + b
    return ad + u64be(seq) + u64be(epoch) + prev_link


# --- Archive keys -----------------------------------------------------------------------------


def load_private_key(path):
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Unusable(f"{path} is readable by group or others (chmod 600 it)")
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) != 32:
        try:
            raw = base64.b64decode(raw.strip(), validate=True)
        except ValueError:
            raise Unusable(f"{path} is not base64 of a 32-byte key") from None
    if len(raw) != 32:
        raise Unusable(f"{path} does not hold a 32-byte key")
    return raw


def key_id(public_key):
    return hashlib.sha256(public_key).digest()[:8].hex()


# --- The record plaintext ---------------------------------------------------------------------


def decode_plaintext(plaintext):
    if len(plaintext) < 5:
        raise ValueError("plaintext shorter than its framing")
    if plaintext[0] != 1:
        raise ValueError(f"unknown plaintext version {plaintext[0]}")
    (header_len,) = struct.unpack(">I", plaintext[1:5])
    if 5 + header_len > len(plaintext):
        raise ValueError("header length beyond the plaintext")
    header = json.loads(plaintext[5 : 5 + header_len].decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("body"), dict):
        raise ValueError("header is not {captured_ms, body}")
    if not isinstance(header.get("captured_ms"), int) or not isinstance(header["body"].get("type"), str):
        raise ValueError("header lacks captured_ms or body.type")
    return header, plaintext[5 + header_len :]


# --- Attachments ------------------------------------------------------------------------------


CHUNK_SIZE = 65536


SALVAGE_MIME = "application/vnd.verbatim.salvage.v1"


class Attachments:
    """Reassembles attachments by id (hashing as chunks arrive) and checks their end records.
    Keeps the bytes only of salvage containers, which are opened in turn."""

    def __init__(self):
        self.open = {}
        self.verified = 0
        self.problems = []

    def start(self, seq, body):
        attachment_id = body["attachment_id"]
        if attachment_id in self.open:
            self.problems.append(f"seq {seq}: attachment started twice")
        keep = body["mime_type"] == SALVAGE_MIME
        self.open[attachment_id] = {"next": 0, "size": 0, "sha": hashlib.sha256(), "short": False, "bytes": [] if keep else None}

    def chunk(self, seq, attachment_id, index, payload):
        a = self.open.get(attachment_id)
        if a is None:
            self.problems.append(f"seq {seq}: chunk of an attachment not started")
            return
        if index != a["next"]:
            self.problems.append(f"seq {seq}: chunk index {index}, expected {a['next']}")
        if a["short"]:
            self.problems.append(f"seq {seq}: a chunk follows a short chunk")
        if not 1 <= len(payload) <= CHUNK_SIZE:
            self.problems.append(f"seq {seq}: chunk of {len(payload)} bytes")
        a["short"] = len(payload) < CHUNK_SIZE
        a["next"] = index + 1
        a["size"] += len(payload)
        a["sha"].update(payload)
        if a["bytes"] is not None:
            a["bytes"].append(payload)

    def end(self, seq, body):
        """Checks the attachment against its end record; returns a salvage container's bytes."""
        a = self.open.pop(body["attachment_id"], None)
        if a is None:
            self.problems.append(f"seq {seq}: end of an attachment not started")
            return None
        ok = a["next"] == body["chunks"] and a["size"] == body["size"] and a["sha"].hexdigest() == body["sha256"]
        if not ok:
            self.problems.append(f"seq {seq}: attachment does not match its end record")
            return None
        self.verified += 1
        return b"".join(a["bytes"]) if a["bytes"] is not None else None

    def finish(self):
        for _ in self.open:
            self.problems.append("an attachment has no end record")
        self.open = {}


# --- Batches and salvage containers -----------------------------------------------------------


class Cursor:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        part = self.data[self.pos : self.pos + n]
        self.pos += n
        return part

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def text(self):
        return self.take(self.uint(2)).decode("utf-8")

    def done(self):
        return self.pos == len(self.data)


def decode_batch(data):
    c = Cursor(data)
    if c.take(4) != b"VBT1":
        raise ValueError("not a batch")
    tenant, device, stream = c.text(), c.text(), c.text()
    epochs = {}
    for _ in range(c.uint(2)):
        epoch, kid = c.uint(8), c.text()
        epochs[epoch] = (kid, c.take(c.uint(2)))
    records = []
    for _ in range(c.uint(4)):
        seq, epoch, record_link = c.uint(8), c.uint(8), c.take(32)
        records.append((seq, epoch, record_link, c.take(c.uint(4))))
    if not c.done():
        raise ValueError("bytes after the last record")
    return (tenant, device, stream), epochs, records


def decode_salvage(data):
    magic = b"verbatim-salvage/v1\n"
    if not data.startswith(magic):
        raise ValueError("not a salvage container")
    c = Cursor(data[len(magic) :])
    runs = []
    while not c.done():
        header = json.loads(c.take(c.uint(4)).decode("utf-8"))
        prev_link = None if header["prev_link"] is None else bytes.fromhex(header["prev_link"])
        runs.append((header["prev_seq"], prev_link, decode_batch(c.take(c.uint(4)))))
    return runs


# --- Verifying and opening a run of records ---------------------------------------------------


class Opener:
    """Verifies a stream's records in order and, with the key, opens and tallies them."""

    def __init__(self, ids, epochs, key):
        self.ids, self.epochs, self.key, self.keys, self.epoch_keys = ids, epochs, key, {}, {}
        self.report = {"records": 0, "contiguous_through": 0, "chain_verified": True, "problems": []}
        if key is not None:
            self.report.update(opened=0, unreadable=[], kinds={}, agent_events={}, messages=[], salvage=[])
            self.report["key_id_mismatches"] = sum(1 for kid, _ in epochs.values() if kid != key_id(key[1]))
        self.attachments = Attachments()

    def run(self, records, prev_seq, prev_link):
        """Records continuing the chain after (prev_seq, prev_link); prev_link None: the first
        record's predecessor is lost, so it only anchors the rest and cannot be opened."""
        report = self.report
        for seq, epoch, stored_link, ciphertext in records:
            report["records"] += 1
            if seq != prev_seq + 1:
                report["chain_verified"] = False
                report["problems"].append(f"gap: expected {prev_seq + 1}, found {seq}")
            elif prev_link is not None and link(prev_link, seq, epoch, ciphertext) != stored_link:
                report["chain_verified"] = False
                report["problems"].append(f"seq {seq}: link does not verify")
            elif report["chain_verified"]:
                report["contiguous_through"] = seq
            if self.key is not None:
                if prev_link is None:
                    report["unreadable"].append(seq)
                else:
                    self.open(seq, epoch, prev_link, ciphertext)
            # The seal binds the predecessor's link as held.
            prev_seq, prev_link = seq, stored_link

    def open(self, seq, epoch, prev_link, ciphertext):
        report = self.report
        tenant, device, stream = self.ids
        try:
            if epoch not in self.epochs:
                raise ValueError(f"epoch {epoch} not held")
            if epoch not in self.keys:
                private_key, public_key = self.key
                enc = self.epochs[epoch][1]
                if len(enc) == 33 and enc[0] == 2:
                    info = epoch_info(tenant, device, stream, epoch, b"verbatim/epoch/v2")
                    labels = [b"verbatim/epoch-key/v2", b"verbatim/ref-key/v2"]
                    epoch_key, ref_key = derive_exports(private_key, public_key, enc[1:], info, labels)
                    # v2: the reference key, and content keys by reference (the epoch key's is zeros).
                    self.keys[epoch] = (ref_key, {EPOCH_KEY_REF: AESGCM(epoch_key)})
                    self.epoch_keys[epoch] = epoch_key
                else:
                    epoch_key = derive_epoch_key(private_key, public_key, enc, epoch_info(tenant, device, stream, epoch))
                    self.keys[epoch] = AESGCM(epoch_key)
            keys = self.keys[epoch]
            if isinstance(keys, tuple):
                ref_key, content_keys = keys
                mask = key_ref_mask(ref_key, seq)
                key_ref = bytes(a ^ b for a, b in zip(ciphertext[:16], mask))
                if key_ref not in content_keys:
                    # content_key = HMAC-SHA256(epoch_key, "verbatim/content-key/v2" || key_ref)
                    derived = hmac.new(self.epoch_keys[epoch], b"verbatim/content-key/v2" + key_ref, hashlib.sha256).digest()
                    content_keys[key_ref] = AESGCM(derived)
                ad = associated_data_v2(tenant, device, stream, seq, epoch, prev_link, key_ref)
                header, payload = decode_plaintext(content_keys[key_ref].decrypt(nonce(seq), ciphertext[16:], ad))
                body = header["body"]
                if (key_ref == EPOCH_KEY_REF) != (body["type"] == "conversation_key"):
                    raise ValueError(f"seq {seq}: key records, and only they, are sealed under the epoch key")
            else:
                ad = associated_data(tenant, device, stream, seq, epoch, prev_link)
                header, payload = decode_plaintext(keys.decrypt(nonce(seq), ciphertext, ad))
        except (InvalidTag, ValueError) as e:
            report["unreadable"].append(seq)
            report["problems"].append(f"seq {seq}: does not open ({type(e).__name__})")
            return
        report["opened"] += 1
        body = header["body"]
        kind = body["type"]
        report["kinds"][kind] = report["kinds"].get(kind, 0) + 1
        try:
            if kind == "message":
                text_sha = hashlib.sha256(utf8(body["text"])).hexdigest()
                report["messages"].append({"seq": seq, "source_id": body["meta"]["source_id"], "text_sha256": text_sha})
            elif kind == "agent":
                report["agent_events"][body["event"]] = report["agent_events"].get(body["event"], 0) + 1
            elif kind == "attachment_start":
                self.attachments.start(seq, body)
            elif kind == "attachment_chunk":
                self.attachments.chunk(seq, body["attachment_id"], body["index"], payload)
            elif kind == "attachment_end":
                container = self.attachments.end(seq, body)
                if container is not None:
                    report["salvage"].append(open_salvage(body["attachment_id"], container, self.key))
        except (KeyError, TypeError):
            report["problems"].append(f"seq {seq}: a {kind} body lacks a documented field")

    def finish(self):
        if self.key is not None:
            self.attachments.finish()
            self.report["problems"].extend(self.attachments.problems)
            self.report["attachments_verified"] = self.attachments.verified
        return self.report


def open_salvage(attachment_id, container, key):
    """Verifies and opens the records a recovered store carried from its old stream."""
    try:
        runs = decode_salvage(container)
    except (ValueError, KeyError, TypeError) as e:
        return {"attachment_id": attachment_id, "problems": [f"salvage container does not decode ({type(e).__name__})"]}
    opener = None
    for prev_seq, prev_link, (ids, epochs, records) in runs:
        if opener is None:
            opener = Opener(ids, {}, key)
        opener.epochs.update(epochs)
        if opener.ids != ids:
            opener.report["problems"].append("salvage runs of different streams")
        opener.run(records, prev_seq, prev_link)
    if opener is None:
        return {"attachment_id": attachment_id, "problems": ["empty salvage container"]}
    report = opener.finish()
    report.pop("key_id_mismatches", None)
    report.pop("contiguous_through", None)
    tenant, device, stream = opener.ids
    report.update(attachment_id=attachment_id, runs=len(runs), old_stream={"tenant": tenant, "device": device, "stream": stream})
    return report


def open_stream(db, row, key):
    sid, tenant, device, stream = row
    epochs = {}
    for epoch, kid, enc in db.execute("SELECT epoch, key_id, encapsulation FROM epochs WHERE stream_id = ?", (sid,)):
        epochs[epoch] = (kid, bytes(enc))
    opener = Opener((tenant, device, stream), epochs, key)
    records = db.execute("SELECT seq, epoch, link, ciphertext FROM records WHERE stream_id = ? ORDER BY seq", (sid,))
    opener.run(((seq, epoch, bytes(lk), bytes(ct)) for seq, epoch, lk, ct in records), 0, genesis(tenant, device, stream))
    report = {"tenant": tenant, "device": device, "stream": stream}
    report.update(opener.finish())
    return report


def sound(report):
    return report.get("chain_verified", False) and not report["problems"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the receiver's data directory (holds archive.db)")
    parser.add_argument("--key", help="the archive private key file (archive-private.key)")
    args = parser.parse_args()
    try:
        db_path = os.path.join(args.data, "archive.db")
        if not os.path.exists(db_path):
            raise Unusable(f"no archive.db in {args.data}")
        key, decrypt = None, "no key given"
        if args.key:
            raw = load_private_key(args.key)
            if HAVE_CRYPTO:
                private_key = X25519PrivateKey.from_private_bytes(raw)
                public_key = private_key.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                )
                key, decrypt = (private_key, public_key), "yes"
            else:
                decrypt = "unavailable (the cryptography package is not installed)"
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        streams = db.execute("SELECT id, tenant, device, stream FROM streams ORDER BY id").fetchall()
        reports = [open_stream(db, row, key) for row in streams]
        db.close()
    except (Unusable, OSError, sqlite3.Error) as e:
        print(json.dumps({"error": str(e)}))
        return 2
    ok = all(sound(r) and all(sound(c) for c in r.get("salvage", [])) for r in reports)
    print(json.dumps({"decrypt": decrypt, "ok": ok, "streams": reports}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
