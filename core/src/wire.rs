//! The device-to-archive wire format (see docs/upload-api.md): a binary batch body and the
//! JSON answers. Shared by the uploader and the receiver so both read one definition.
//!
//! Batch body, `application/vnd.verbatim.batch.v1`, integers big-endian:
//! ```text
//! magic "VBT1"
//! tenant: u16 len + UTF-8   device: u16 len + UTF-8   stream: u16 len + UTF-8
//! epoch count: u16, then per epoch: epoch u64, key id (u16 len + UTF-8), encapsulation (u16 len + bytes)
//! record count: u32, then per record: seq u64, epoch u64, link [32], ciphertext (u32 len + bytes)
//! ```
//! Sealed records do not compress, so the body is not compressed.

use serde::{Deserialize, Serialize};

use crate::chain::{ChainedRecord, Link, StreamId};

pub const CONTENT_TYPE: &str = "application/vnd.verbatim.batch.v1";
const MAGIC: &[u8; 4] = b"VBT1";
/// Longest identifier (tenant, device, stream, key id) accepted on the wire.
pub const MAX_ID_LEN: usize = 256;
/// Largest single sealed record accepted (an attachment chunk plus its header fits well within).
pub const MAX_RECORD_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochInfo {
    pub epoch: u64,
    pub archive_key_id: String,
    pub encapsulation: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    pub seq: u64,
    pub epoch: u64,
    pub link: Link,
    pub ciphertext: Vec<u8>,
}

impl ChainedRecord for WireRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
    fn link(&self) -> &Link {
        &self.link
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub stream: StreamId,
    /// The encapsulations of every epoch the records use.
    pub epochs: Vec<EpochInfo>,
    /// A contiguous run of records in sequence order.
    pub records: Vec<WireRecord>,
}

/// Why a batch body was refused; `reason` goes into the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed batch: {}", self.reason)
    }
}

impl std::error::Error for DecodeError {}

impl Batch {
    pub fn encoded_len(&self) -> usize {
        let ids = 4 + 6 + self.stream.tenant.len() + self.stream.device.len() + self.stream.stream.len();
        let epochs: usize = self.epochs.iter().map(|e| 12 + e.archive_key_id.len() + e.encapsulation.len()).sum();
        let records: usize = self.records.iter().map(|r| WIRE_RECORD_OVERHEAD + r.ciphertext.len()).sum();
        ids + 2 + epochs + 4 + records
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        for s in [&self.stream.tenant, &self.stream.device, &self.stream.stream] {
            put_short(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&(self.epochs.len() as u16).to_be_bytes());
        for e in &self.epochs {
            out.extend_from_slice(&e.epoch.to_be_bytes());
            put_short(&mut out, e.archive_key_id.as_bytes());
            put_short(&mut out, &e.encapsulation);
        }
        out.extend_from_slice(&(self.records.len() as u32).to_be_bytes());
        for r in &self.records {
            out.extend_from_slice(&r.seq.to_be_bytes());
            out.extend_from_slice(&r.epoch.to_be_bytes());
            out.extend_from_slice(&r.link);
            out.extend_from_slice(&(r.ciphertext.len() as u32).to_be_bytes());
            out.extend_from_slice(&r.ciphertext);
        }
        out
    }

    /// Decodes and checks the structure: identifiers present and bounded, records contiguous and
    /// in order, every record's epoch announced. Says precisely what is wrong otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(err("not a Verbatim batch (bad magic; expected VBT1)"));
        }
        let stream = StreamId { tenant: r.id("tenant")?, device: r.id("device")?, stream: r.id("stream")? };
        let epoch_count = r.u16("epoch count")? as usize;
        let mut epochs = Vec::with_capacity(epoch_count.min(64));
        for i in 0..epoch_count {
            let epoch = r.u64("epoch")?;
            let archive_key_id = r.id("archive key id")?;
            let encapsulation = r.short_bytes("encapsulation")?.to_vec();
            if crate::seal::Sealing::of(&encapsulation).is_err() {
                return Err(err(&format!(
                    "epoch entry {i}: encapsulation must be 32 bytes (epoch key) or 0x02 then 32 bytes (conversation keys), got {} bytes",
                    encapsulation.len()
                )));
            }
            if epochs.iter().any(|e: &EpochInfo| e.epoch == epoch) {
                return Err(err(&format!("epoch {epoch} announced twice")));
            }
            epochs.push(EpochInfo { epoch, archive_key_id, encapsulation });
        }
        let record_count = r.u32("record count")? as usize;
        if record_count == 0 {
            return Err(err("batch holds no records"));
        }
        let mut records = Vec::with_capacity(record_count.min(r.remaining() / WIRE_RECORD_OVERHEAD + 1));
        for _ in 0..record_count {
            let seq = r.u64("seq")?;
            let epoch = r.u64("record epoch")?;
            let link: Link = r.take(32, "link")?.try_into().expect("32 bytes");
            let len = r.u32("ciphertext length")? as usize;
            if len > MAX_RECORD_LEN {
                return Err(err(&format!("sequence {seq}: record of {len} bytes exceeds {MAX_RECORD_LEN}")));
            }
            let ciphertext = r.take(len, "ciphertext")?.to_vec();
            if seq == 0 {
                return Err(err("sequence numbers start at 1"));
            }
            if let Some(prev) = records.last().map(|p: &WireRecord| p.seq)
                && prev.checked_add(1) != Some(seq)
            {
                return Err(err(&format!("records not contiguous: {seq} follows {prev}")));
            }
            if !epochs.iter().any(|e| e.epoch == epoch) {
                return Err(err(&format!("sequence {seq}: epoch {epoch} not announced in the batch")));
            }
            records.push(WireRecord { seq, epoch, link, ciphertext });
        }
        if r.remaining() != 0 {
            return Err(err(&format!("{} unexpected bytes after the last record", r.remaining())));
        }
        Ok(Batch { stream, epochs, records })
    }
}

/// Bytes a record takes on the wire besides its ciphertext.
pub const WIRE_RECORD_OVERHEAD: usize = 8 + 8 + 32 + 4;

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn err(reason: &str) -> DecodeError {
    DecodeError { reason: reason.to_string() }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(err(&format!("truncated at {what} (offset {})", self.pos)));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn short_bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    fn id(&mut self, what: &str) -> Result<String, DecodeError> {
        let bytes = self.short_bytes(what)?;
        if bytes.is_empty() || bytes.len() > MAX_ID_LEN {
            return Err(err(&format!("{what} must be 1 to {MAX_ID_LEN} bytes, got {}", bytes.len())));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| err(&format!("{what} is not UTF-8")))?;
        if s.chars().any(|c| c.is_control()) {
            return Err(err(&format!("{what} contains control characters")));
        }
        Ok(s.to_string())
    }
}

/// 200 answer to a batch upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// Highest sequence number the archive holds durably, with every one before it.
    pub acked_through: u64,
    /// Records of this batch newly stored.
    pub stored: u64,
    /// Records of this batch the archive already held, identical.
    pub duplicates: u64,
}

/// Answer to the cursor query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub tenant: String,
    pub device: String,
    pub stream: String,
    pub acked_through: u64,
    /// Hex link of `acked_through` (the genesis link when nothing is held).
    pub last_link: String,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code: `malformed`, `unauthorized`, `forbidden`, `gap`, `conflict`,
    /// `unknown_archive_key`, `stream_limit`, `too_large`, `rate_limited`, `unavailable`, `not_found`.
    pub error: String,
    /// What was wrong, for a person.
    pub reason: String,
    /// With `gap` (and `conflict`): the sequence number the archive expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
    /// With `unknown_archive_key`: the archive key id of the epoch it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_key_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        Batch {
            stream: StreamId { tenant: "acme".into(), device: "d1".into(), stream: "s1".into() },
            epochs: vec![EpochInfo { epoch: 3, archive_key_id: "k1".into(), encapsulation: vec![7; 32] }],
            records: (5..8)
                .map(|seq| WireRecord { seq, epoch: 3, link: [seq as u8; 32], ciphertext: vec![1; seq as usize] })
                .collect(),
        }
    }

    #[test]
    fn batches_round_trip_and_know_their_size() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(bytes.len(), b.encoded_len());
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
    }

    #[test]
    fn every_truncation_is_refused_with_a_reason() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            let e = Batch::decode(&bytes[..n]).unwrap_err();
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn structural_errors_are_named() {
        let mut b = sample();
        b.records[1].seq = 9;
        assert!(Batch::decode(&b.encode()).unwrap_err().reason.contains("not contiguous"));
        let mut b = sample();
        b.records[0].epoch = 4;
        assert!(Batch::decode(&b.encode()).unwrap_err().reason.contains("not announced"));
        let mut b = sample();
        b.records.clear();
        assert!(Batch::decode(&b.encode()).unwrap_err().reason.contains("no records"));
        let mut b = sample();
        b.records = vec![
            WireRecord { seq: u64::MAX, epoch: 3, link: [0; 32], ciphertext: vec![] },
            WireRecord { seq: 0, epoch: 3, link: [0; 32], ciphertext: vec![] },
        ];
        assert!(Batch::decode(&b.encode()).is_err());
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(Batch::decode(&bytes).unwrap_err().reason.contains("unexpected bytes"));
    }
}
