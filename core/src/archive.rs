//! The archive side of sealing: with the archive's private key, verify a stream's chain and
//! open its records. Used by the reference receiver's export and by tests.

use std::collections::HashMap;

use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::record::Record;
use crate::seal::{ArchiveSecretKey, EpochKey};
use crate::wire::{Batch, EpochInfo, WireRecord};

/// Opens records of any number of streams, caching one key per (stream, epoch).
pub struct Opener {
    secret: ArchiveSecretKey,
    keys: HashMap<(StreamId, u64), EpochKey>,
}

impl Opener {
    pub fn new(secret: ArchiveSecretKey) -> Self {
        Opener { secret, keys: HashMap::new() }
    }

    /// Opens one record whose predecessor's link is `prev`.
    pub fn open(&mut self, stream: &StreamId, epoch: &EpochInfo, record: &WireRecord, prev: &Link) -> Result<Record> {
        if epoch.epoch != record.epoch {
            return Err(Error::new(ErrorKind::Internal, format!("sequence {}: wrong epoch given", record.seq)));
        }
        let key_slot = (stream.clone(), epoch.epoch);
        if !self.keys.contains_key(&key_slot) {
            let key = EpochKey::open(&self.secret, &epoch.encapsulation, stream, epoch.epoch)?;
            self.keys.insert(key_slot.clone(), key);
        }
        let key = &self.keys[&key_slot];
        let plaintext = key.open_record(stream, record.seq, prev, &record.ciphertext)?;
        Record::decode(&plaintext)
    }

    /// Verifies and opens every record of a batch that continues the chain at (`prev_seq`, `prev_link`).
    pub fn open_batch(&mut self, batch: &Batch, prev_seq: u64, prev_link: Link) -> Result<Vec<(u64, Record)>> {
        chain::verify_run(prev_seq, prev_link, &batch.records).map_err(|b| Error::new(ErrorKind::Corrupt, b.to_string()))?;
        let mut prev = prev_link;
        let mut out = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            let epoch = batch
                .epochs
                .iter()
                .find(|e| e.epoch == r.epoch)
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("sequence {}: epoch {} missing", r.seq, r.epoch)))?;
            out.push((r.seq, self.open(&batch.stream, epoch, r, &prev)?));
            prev = r.link;
        }
        Ok(out)
    }
}
