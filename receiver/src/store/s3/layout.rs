//! Where things live in the bucket, and how each object is encoded.
//!
//! Under the configured prefix, everything of one stream sits under one folder named by
//! hashes of its ids (ids come from devices: any bytes up to 256 each, too long and too free
//! for object keys), tenant first, then device, so a legal hold on a tenant or a device is
//! one prefix:
//!
//! ```text
//! v1/t/<H(tenant)>/d/<H(device)>/s/<H(stream)>/head          the stream's head (mutable, CAS)
//! v1/t/<H(tenant)>/d/<H(device)>/s/<H(stream)>/b/<first seq> one batch of records (locked)
//! v1/t/<H(tenant)>/d/<H(device)>/s/<H(stream)>/a/<kind>      first alert of a kind (locked)
//! v1/t/<H(tenant)>/d/<H(device)>/s/<H(stream)>/r/<kind>      how often it repeated (mutable, CAS)
//! v1/audit/<ms>-<random>                                      audit events, e.g. legal holds (locked)
//! v1/holds/<H(tenant)>[/<H(device)>]                          legal hold markers (mutable)
//! ```
//!
//! A batch object's key is its first sequence number, zero-padded so keys sort in sequence
//! order. Receivers only ever write the key right after the head they read, with
//! `If-None-Match: *`: so the batch objects of a stream form one contiguous chain with no
//! two objects starting at the same sequence (see [`super::writer`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use verbatim_core::chain::{Link, StreamId};
use verbatim_core::wire::{Batch, EpochInfo};

use crate::error::{Error, Result};

/// Hex digits of SHA-256 kept per id: 128 bits, collision-free in practice.
const HASH_HEX: usize = 32;
const BATCH_MAGIC: &[u8; 8] = b"VBTOBJ1\n";

fn h(id: &str) -> String {
    let mut s = hex::encode(Sha256::digest(id.as_bytes()));
    s.truncate(HASH_HEX);
    s
}

/// Key builder for one bucket prefix (`""` or ending in `/`).
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        let p = prefix.trim_matches('/');
        Layout { prefix: if p.is_empty() { String::new() } else { format!("{p}/") } }
    }

    pub fn tenants(&self) -> String {
        format!("{}v1/t/", self.prefix)
    }

    pub fn tenant(&self, tenant: &str) -> String {
        format!("{}{}/", self.tenants(), h(tenant))
    }

    pub fn device(&self, tenant: &str, device: &str) -> String {
        format!("{}d/{}/", self.tenant(tenant), h(device))
    }

    /// The folder of a device's streams (its sub-folders are the streams).
    pub fn streams_of(&self, tenant: &str, device: &str) -> String {
        format!("{}s/", self.device(tenant, device))
    }

    pub fn stream(&self, id: &StreamId) -> String {
        format!("{}{}/", self.streams_of(&id.tenant, &id.device), h(&id.stream))
    }

    pub fn head(&self, id: &StreamId) -> String {
        format!("{}head", self.stream(id))
    }

    pub fn batches(&self, id: &StreamId) -> String {
        format!("{}b/", self.stream(id))
    }

    pub fn batch(&self, id: &StreamId, first_seq: u64) -> String {
        format!("{}{first_seq:020}", self.batches(id))
    }

    pub fn alert(&self, id: &StreamId, kind: &str) -> String {
        format!("{}a/{kind}", self.stream(id))
    }

    pub fn alerts(&self, id: &StreamId) -> String {
        format!("{}a/", self.stream(id))
    }

    pub fn repeats(&self, id: &StreamId, kind: &str) -> String {
        format!("{}r/{kind}", self.stream(id))
    }

    pub fn audit(&self, at_ms: i64, nonce: &str) -> String {
        format!("{}{at_ms:016}-{nonce}", self.audits())
    }

    pub fn audits(&self) -> String {
        format!("{}v1/audit/", self.prefix)
    }

    /// The legal hold marker of a tenant, or of one device of it.
    pub fn hold(&self, tenant: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("{}v1/holds/{}/{}", self.prefix, h(tenant), h(d)),
            None => format!("{}v1/holds/{}", self.prefix, h(tenant)),
        }
    }

    /// Whether a key is one of the objects written under Object Lock (records, first alerts).
    pub fn is_locked(key: &str) -> bool {
        key.contains("/b/") || key.contains("/a/")
    }

    /// A stream folder's head key, from the folder listed.
    pub fn head_in(folder: &str) -> String {
        format!("{folder}head")
    }
}

/// An epoch as kept in a head (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEpoch {
    pub epoch: u64,
    pub key_id: String,
    pub encapsulation: String, // hex
}

impl HeadEpoch {
    pub fn of(e: &EpochInfo) -> HeadEpoch {
        HeadEpoch { epoch: e.epoch, key_id: e.archive_key_id.clone(), encapsulation: hex::encode(&e.encapsulation) }
    }

    pub fn info(&self) -> EpochInfo {
        EpochInfo {
            epoch: self.epoch,
            archive_key_id: self.key_id.clone(),
            encapsulation: hex::decode(&self.encapsulation).unwrap_or_default(),
        }
    }
}

/// A stream's head: where its chain of batch objects ends, as far as this object knows. It
/// may lag behind the objects (a receiver killed between writing a batch and moving the
/// head); readers and writers follow the objects past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub tenant: String,
    pub device: String,
    pub stream: String,
    /// Last sequence held (0: none).
    pub seq: u64,
    /// Its link (hex), the genesis link when `seq` is 0.
    pub link: String,
    /// First sequence of the batch object holding `seq` (0: none).
    pub last_object: u64,
    pub epochs: Vec<HeadEpoch>,
    pub created_ms: i64,
    /// When the newest record was received (0: never).
    pub received_ms: i64,
}

impl Head {
    pub fn new(id: &StreamId, now: i64) -> Head {
        Head {
            tenant: id.tenant.clone(),
            device: id.device.clone(),
            stream: id.stream.clone(),
            seq: 0,
            link: hex::encode(verbatim_core::chain::genesis(id)),
            last_object: 0,
            epochs: Vec::new(),
            created_ms: now,
            received_ms: 0,
        }
    }

    pub fn id(&self) -> StreamId {
        StreamId { tenant: self.tenant.clone(), device: self.device.clone(), stream: self.stream.clone() }
    }

    pub fn link(&self) -> Link {
        // A mangled head makes the next batch fail to chain (a conflict), never a panic.
        hex::decode(&self.link).ok().and_then(|b| b.try_into().ok()).unwrap_or([0; 32])
    }

    pub fn epoch(&self, epoch: u64) -> Option<&HeadEpoch> {
        self.epochs.iter().find(|e| e.epoch == epoch)
    }

    /// The head after `object`, which starts right after it.
    pub fn advance(&mut self, object: &BatchObject) {
        if let Some(last) = object.batch.records.last() {
            self.seq = last.seq;
            self.link = hex::encode(last.link);
            self.last_object = object.batch.records[0].seq;
        }
        for e in &object.batch.epochs {
            if self.epoch(e.epoch).is_none() {
                self.epochs.push(HeadEpoch::of(e));
            }
        }
        self.epochs.sort_by_key(|e| e.epoch);
        self.received_ms = self.received_ms.max(object.received_ms);
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Head> {
        serde_json::from_slice(bytes).map_err(|e| Error::Store(format!("a stream head object is not valid: {e}")))
    }
}

/// One batch object: the records a receiver stored in one go (a contiguous run, never empty)
/// and the epochs they use, in the upload wire format, with when they were received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchObject {
    pub received_ms: i64,
    pub batch: Batch,
}

impl BatchObject {
    pub fn first(&self) -> u64 {
        self.batch.records.first().map(|r| r.seq).unwrap_or(0)
    }

    pub fn last(&self) -> u64 {
        self.batch.records.last().map(|r| r.seq).unwrap_or(0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let wire = self.batch.encode();
        let mut out = Vec::with_capacity(16 + wire.len());
        out.extend_from_slice(BATCH_MAGIC);
        out.extend_from_slice(&self.received_ms.to_be_bytes());
        out.extend_from_slice(&wire);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchObject> {
        let bad = |why: &str| Error::Store(format!("a batch object is not valid: {why}"));
        if bytes.len() < 16 || &bytes[..8] != BATCH_MAGIC {
            return Err(bad("bad header"));
        }
        let received_ms = i64::from_be_bytes(bytes[8..16].try_into().map_err(|_| bad("bad header"))?);
        let batch = Batch::decode(&bytes[16..]).map_err(|e| bad(&e.reason))?;
        if batch.records.is_empty() {
            return Err(bad("no records"));
        }
        Ok(BatchObject { received_ms, batch })
    }
}

/// The first alert of a kind on a stream (JSON, locked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertObject {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

/// How often an alert kind came again after the first (JSON, mutable, CAS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    pub repeats: u64,
    pub last_ms: i64,
    pub last_detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_sequence_order_and_ids_never_appear_in_keys() {
        let l = Layout::new("/archive/");
        let id = StreamId { tenant: "acme/../x".into(), device: "dev 1".into(), stream: "s".into() };
        let (a, b) = (l.batch(&id, 9), l.batch(&id, 10));
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with("archive/v1/t/"));
        assert!(!a.contains("acme") && !a.contains("dev 1"));
        assert!(l.head(&id).starts_with(&l.device("acme/../x", "dev 1")));
        assert_eq!(Layout::new("").tenants(), "v1/t/");
    }
}
