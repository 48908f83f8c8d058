//! The archive side of sealing: with the archive's private key, verify a stream's chain and
//! open its records. Used by the reference receiver's export and by tests.

use std::collections::HashMap;

use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::record::Record;
use crate::seal::conversation::{ConversationOpener, EpochSecrets, KeyRef, KeyScope, NotOpened, Opened};
use crate::seal::{ArchiveSecretKey, EpochKey, Sealing};
use crate::wire::{Batch, EpochInfo, WireRecord};

/// Opens one epoch's records, whatever its sealing version.
pub enum EpochOpener {
    Single(Box<EpochKey>),
    Conversations(Box<ConversationOpener>),
}

/// What a record opened to.
pub enum OpenedRecord {
    /// A captured record or agent event; `key_ref` names its content key (version 2).
    Record { record: Box<Record>, key_ref: Option<KeyRef> },
    /// A key record of a conversation-key epoch: filed in the opener, never shown.
    KeyRecord { key_ref: KeyRef, scope: KeyScope },
}

impl EpochOpener {
    /// With the archive private key the epoch was sealed to.
    pub fn with_archive_key(secret: &ArchiveSecretKey, info: &EpochInfo, stream: &StreamId) -> Result<EpochOpener> {
        Ok(match Sealing::of(&info.encapsulation)?.0 {
            Sealing::EpochKey => EpochOpener::Single(Box::new(EpochKey::open(secret, &info.encapsulation, stream, info.epoch)?)),
            Sealing::ConversationKeys => {
                let secrets = EpochSecrets::open(secret, &info.encapsulation, stream, info.epoch)?;
                EpochOpener::Conversations(Box::new(ConversationOpener::with_secrets(info.epoch, &secrets)))
            }
        })
    }

    /// Opens record `seq` of this epoch, whose predecessor's link is `prev`.
    pub fn open(
        &mut self,
        stream: &StreamId,
        seq: u64,
        prev: &Link,
        ciphertext: &[u8],
    ) -> std::result::Result<OpenedRecord, NotOpened> {
        match self {
            EpochOpener::Single(key) => {
                let plaintext =
                    zeroize::Zeroizing::new(key.open_record(stream, seq, prev, ciphertext).map_err(NotOpened::Damaged)?);
                let record = Record::decode(&plaintext).map_err(NotOpened::Damaged)?;
                Ok(OpenedRecord::Record { record: Box::new(record), key_ref: None })
            }
            EpochOpener::Conversations(c) => match c.open(stream, seq, prev, ciphertext)? {
                Opened::KeyRecord { key_ref, scope } => Ok(OpenedRecord::KeyRecord { key_ref, scope }),
                Opened::Content { key_ref, plaintext, .. } => {
                    let record = Record::decode(&plaintext).map_err(NotOpened::Damaged)?;
                    Ok(OpenedRecord::Record { record: Box::new(record), key_ref: Some(key_ref) })
                }
            },
        }
    }
}

/// Opens records of any number of streams, caching one opener per (stream, epoch).
pub struct Opener {
    secret: ArchiveSecretKey,
    keys: HashMap<(StreamId, u64), EpochOpener>,
}

impl Opener {
    pub fn new(secret: ArchiveSecretKey) -> Self {
        Opener { secret, keys: HashMap::new() }
    }

    /// Opens one record whose predecessor's link is `prev`. Records of one epoch must come
    /// in order (a conversation-key epoch learns its keys from its key records).
    pub fn open_any(&mut self, stream: &StreamId, epoch: &EpochInfo, record: &WireRecord, prev: &Link) -> Result<OpenedRecord> {
        if epoch.epoch != record.epoch {
            return Err(Error::new(ErrorKind::Internal, format!("sequence {}: wrong epoch given", record.seq)));
        }
        let key_slot = (stream.clone(), epoch.epoch);
        if !self.keys.contains_key(&key_slot) {
            let key = EpochOpener::with_archive_key(&self.secret, epoch, stream)?;
            self.keys.insert(key_slot.clone(), key);
        }
        let key = self.keys.get_mut(&key_slot).expect("inserted above");
        key.open(stream, record.seq, prev, &record.ciphertext).map_err(|e| match e {
            NotOpened::Damaged(e) => e,
            NotOpened::NoKey(_) => {
                Error::new(ErrorKind::Crypto, format!("sequence {}: no key announced for this record", record.seq))
            }
            NotOpened::KeyRecordSealed => Error::new(ErrorKind::Crypto, format!("sequence {}: epoch key not held", record.seq)),
        })
    }

    /// Opens one captured record or agent event; a key record is an error here (see
    /// [`Opener::open_any`]).
    pub fn open(&mut self, stream: &StreamId, epoch: &EpochInfo, record: &WireRecord, prev: &Link) -> Result<Record> {
        match self.open_any(stream, epoch, record, prev)? {
            OpenedRecord::Record { record, .. } => Ok(*record),
            OpenedRecord::KeyRecord { .. } => {
                Err(Error::new(ErrorKind::Internal, format!("sequence {}: a key record, not a captured record", record.seq)))
            }
        }
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
            // Key records hold keys, not content: callers see what was captured.
            if let OpenedRecord::Record { record, .. } = self.open_any(&batch.stream, epoch, r, &prev)? {
                out.push((r.seq, *record));
            }
            prev = r.link;
        }
        Ok(out)
    }
}
