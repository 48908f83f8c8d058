//! Ingest: files in the vault the keys of every record the archive holds, with the archive
//! private keys, stream by stream from where the last run stopped.
//!
//! For a conversation-key epoch (version 2) the vault keeps the reference key and every
//! content key its key records announce, indexed by conversation and by the handles that took
//! part (read from the records themselves); never the epoch key, which stays derivable only
//! from the archive private key and dies with it. For a version 1 epoch it keeps the epoch key
//! (the only way to read those records once the archive key retires) and an index of its
//! conversations, for reports: such records cannot be erased per conversation.
//!
//! Crash safety: records are filed in transactions that also move the stream's cursor, so a
//! run killed at any instant leaves the vault at a committed position and the next run goes
//! on from there; filing is idempotent, and a key whose conversation was erased is never
//! filed again (its tombstone is checked in the same transaction).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use verbatim_core::archive::{EpochOpener, OpenedRecord};
use verbatim_core::chain::{self, Link, StreamId};
use verbatim_core::record::RecordBody;
use verbatim_core::seal::conversation::{ConversationOpener, EpochSecrets, KeyRef, KeyScope, NotOpened};
use verbatim_core::seal::{EpochKey, Sealing, derive_epoch_key};
use verbatim_core::wire::{EpochInfo, WireRecord};

use super::{Vault, audit, epoch_identity, key_identity};
use crate::error::{Error, Result};
use crate::export::KeyRing;
use crate::participants;
use crate::store::ArchiveReader;

/// Records filed per transaction.
const BATCH: u64 = 500;

#[derive(Debug, Default, Clone, Serialize)]
pub struct IngestReport {
    pub streams: u64,
    /// Records newly filed in this run.
    pub records: u64,
    pub epochs_filed: u64,
    pub content_keys_filed: u64,
    /// Streams that could not be filed to their end, and why (a private key missing, a
    /// record that does not chain or open).
    pub stopped: Vec<String>,
}

/// Files everything `reader` holds that the vault has not filed yet.
pub fn ingest(vault: &mut Vault, reader: &mut dyn ArchiveReader, keys: &KeyRing, actor: &str) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    for id in reader.streams()? {
        report.streams += 1;
        let epochs: HashMap<u64, EpochInfo> = reader.epochs(&id)?.into_iter().map(|e| (e.epoch, e)).collect();
        let mut run = StreamRun::start(vault, &id, epochs, keys)?;
        let mut failure: Option<String> = None;
        let read = reader.for_each_record(&id, &mut |r| match run.file(r) {
            Ok(()) => Ok(true),
            Err(Stop(why)) => {
                failure = Some(why);
                Ok(false)
            }
        });
        let filed = run.finish()?;
        report.records += filed.records;
        report.epochs_filed += filed.epochs;
        report.content_keys_filed += filed.content_keys;
        if let Err(e) = read {
            failure.get_or_insert(e.to_string());
        }
        if let Some(why) = failure {
            report.stopped.push(format!("{}/{}/{}: {why}", id.tenant, id.device, id.stream));
        }
    }
    let detail = serde_json::json!({
        "streams": report.streams, "records": report.records, "epochs": report.epochs_filed,
        "content_keys": report.content_keys_filed, "stopped": report.stopped.len(),
    });
    let conn = vault.conn();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let appended = audit::append(conn, crate::time::now_ms(), actor, "ingest", &detail);
    finish_tx(conn, appended.map(|_| ()))?;
    Ok(report)
}

/// Why a stream's filing stopped (reported; the other streams go on).
struct Stop(String);

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop(e.to_string())
    }
}

impl From<rusqlite::Error> for Stop {
    fn from(e: rusqlite::Error) -> Stop {
        Stop(Error::from(e).to_string())
    }
}

#[derive(Default)]
struct Filed {
    records: u64,
    epochs: u64,
    content_keys: u64,
}

/// One stream's filing: the open transaction, the cursor and the epochs' openers.
struct StreamRun<'v> {
    vault: &'v Vault,
    id: StreamId,
    epochs: HashMap<u64, EpochInfo>,
    keys: &'v KeyRing,
    openers: HashMap<u64, EpochOpener>,
    /// Content keys met in this run, and whether they are usable (false: erased, withheld):
    /// each is checked against the tombstones and filed once, not at every record.
    met: HashMap<(u64, KeyRef), bool>,
    through: u64,
    link: Link,
    in_tx: u64,
    filed: Filed,
}

impl<'v> StreamRun<'v> {
    fn start(vault: &'v Vault, id: &StreamId, epochs: HashMap<u64, EpochInfo>, keys: &'v KeyRing) -> Result<StreamRun<'v>> {
        let cursor: Option<(i64, Vec<u8>)> = vault
            .conn()
            .query_row(
                "SELECT through_seq, link FROM cursors WHERE tenant = ?1 AND device = ?2 AND stream = ?3",
                params![id.tenant, id.device, id.stream],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (through, link) = match cursor {
            Some((seq, link)) => {
                (seq as u64, link.try_into().map_err(|_| Error::Vault("a stored cursor link is not 32 bytes".into()))?)
            }
            None => (0, chain::genesis(id)),
        };
        Ok(StreamRun {
            vault,
            id: id.clone(),
            epochs,
            keys,
            openers: HashMap::new(),
            met: HashMap::new(),
            through,
            link,
            in_tx: 0,
            filed: Filed::default(),
        })
    }

    fn conn(&self) -> &Connection {
        self.vault.conn()
    }

    fn file(&mut self, r: WireRecord) -> std::result::Result<(), Stop> {
        if r.seq <= self.through {
            return Ok(());
        }
        if r.seq != self.through + 1 {
            return Err(Stop(format!("sequences {}..{} are missing", self.through + 1, r.seq - 1)));
        }
        if chain::link(&self.link, r.seq, r.epoch, &r.ciphertext) != r.link {
            return Err(Stop(format!("sequence {}: the chain is broken (run `verbatim verify`)", r.seq)));
        }
        if self.in_tx == 0 {
            self.conn().execute_batch("BEGIN IMMEDIATE")?;
        }
        self.conn().execute_batch("SAVEPOINT record")?;
        let filed = self.file_in_tx(&r);
        if let Err(e) = filed {
            // Keep what was filed before this record; this one stays for the next run.
            self.conn().execute_batch("ROLLBACK TO record; RELEASE record")?;
            self.commit_position()?;
            return Err(e);
        }
        self.conn().execute_batch("RELEASE record")?;
        self.in_tx += 1;
        if self.in_tx >= BATCH {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.in_tx > 0 {
            self.commit_position()?;
        }
        Ok(())
    }

    /// Commits the open transaction with the cursor where filing got to.
    fn commit_position(&mut self) -> Result<()> {
        {
            self.conn().execute(
                "INSERT INTO cursors (tenant, device, stream, through_seq, link) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, device, stream) DO UPDATE SET through_seq = excluded.through_seq, link = excluded.link",
                params![self.id.tenant, self.id.device, self.id.stream, self.through as i64, &self.link[..]],
            )?;
            super::crash_point("ingest:before-commit");
            self.conn().execute_batch("COMMIT")?;
            self.in_tx = 0;
            super::crash_point("ingest:after-commit");
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Filed> {
        self.commit()?;
        Ok(self.filed)
    }

    /// The opener of an epoch, filing the epoch on first sight. Resuming inside an epoch, the
    /// content keys filed before are put back, so the records after them open.
    fn opener(&mut self, r: &WireRecord) -> std::result::Result<&mut EpochOpener, Stop> {
        if !self.openers.contains_key(&r.epoch) {
            let info =
                self.epochs.get(&r.epoch).ok_or_else(|| Stop(format!("sequence {}: epoch {} is not held", r.seq, r.epoch)))?;
            let secret = self.keys.get(&info.archive_key_id).ok_or_else(|| {
                Stop(format!(
                    "epoch {} is sealed to archive key {}, whose private key was not given",
                    r.epoch, info.archive_key_id
                ))
            })?;
            let (sealing, _) = Sealing::of(&info.encapsulation).map_err(|e| Stop(e.detail))?;
            let (opener, filed_secret, sealing_no) = match sealing {
                Sealing::EpochKey => {
                    let key = derive_epoch_key(secret, &info.encapsulation, &self.id, r.epoch).map_err(|e| Stop(e.detail))?;
                    (EpochOpener::Single(Box::new(EpochKey::from_exported(r.epoch, &key))), key, 1)
                }
                Sealing::ConversationKeys => {
                    let secrets =
                        EpochSecrets::open(secret, &info.encapsulation, &self.id, r.epoch).map_err(|e| Stop(e.detail))?;
                    let mut opener = ConversationOpener::with_secrets(r.epoch, &secrets);
                    for filed in self.vault.content_keys(&self.id, r.epoch)? {
                        opener.add_key(filed.key_ref, filed.scope, &filed.key);
                    }
                    (EpochOpener::Conversations(Box::new(opener)), secrets.ref_key.clone(), 2)
                }
            };
            let wrapped = self.vault.wrap(&epoch_identity(&self.id, r.epoch), &filed_secret)?;
            let inserted = self.conn().execute(
                "INSERT OR IGNORE INTO epochs (tenant, device, stream, epoch, archive_key_id, sealing, wrapped, first_seq, last_seq, last_captured_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 0)",
                params![self.id.tenant, self.id.device, self.id.stream, r.epoch as i64, info.archive_key_id, sealing_no, wrapped, r.seq as i64],
            )?;
            self.filed.epochs += inserted as u64;
            self.openers.insert(r.epoch, opener);
        }
        Ok(self.openers.get_mut(&r.epoch).expect("inserted above"))
    }

    fn file_in_tx(&mut self, r: &WireRecord) -> std::result::Result<(), Stop> {
        let (id, prev) = (self.id.clone(), self.link);
        let opened = self.opener(r)?.open(&id, r.seq, &prev, &r.ciphertext);
        let mut captured_ms = None;
        match opened {
            Ok(OpenedRecord::KeyRecord { key_ref, scope }) => {
                self.meet_key(r.epoch, &key_ref, || Some(scope))?;
            }
            Ok(OpenedRecord::Record { record, key_ref }) => {
                captured_ms = Some(record.captured_ms);
                let key_ref = match key_ref {
                    // Met at its key record; at the record itself if that was lost.
                    Some(k) => self.meet_key(r.epoch, &k, || KeyScope::of(&record.body))?.then_some(k),
                    // Version 1: index the conversation under a reference of our own, for reports.
                    None => KeyScope::of(&record.body)
                        .and_then(|s| s.conversation().cloned())
                        .map(|c| {
                            let d = Sha256::digest(format!("{}\u{0}{}", c.channel.as_str(), c.conversation_id));
                            let mut k = [0u8; 16];
                            k.copy_from_slice(&d[..16]);
                            self.index_legacy(r.epoch, &k, &c).map(|_| k)
                        })
                        .transpose()?,
                };
                if let Some(key_ref) = key_ref {
                    self.note_record(r.epoch, &key_ref, record.captured_ms, &record.body)?;
                }
            }
            Err(NotOpened::NoKey(key_ref)) => {
                let withheld = self.met.get(&(r.epoch, key_ref)) == Some(&false);
                if !withheld && self.vault.erased_by(&id, r.epoch, &key_ref)?.is_none() {
                    return Err(Stop(format!("sequence {}: sealed under a key no key record announced", r.seq)));
                }
            }
            Err(NotOpened::KeyRecordSealed) => return Err(Stop(format!("sequence {}: epoch key not held", r.seq))),
            Err(NotOpened::Damaged(e)) => return Err(Stop(e.detail)),
        }
        self.conn().execute(
            "UPDATE epochs SET last_seq = max(last_seq, ?5), last_captured_ms = max(last_captured_ms, ?6)
             WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4",
            params![id.tenant, id.device, id.stream, r.epoch as i64, r.seq as i64, captured_ms.unwrap_or(0)],
        )?;
        self.through = r.seq;
        self.link = r.link;
        self.filed.records += 1;
        Ok(())
    }

    /// The first time this run meets a content key: withheld if it was erased, else filed
    /// (labelled with `scope`, computed only then). True when its records are to be noted.
    fn meet_key(
        &mut self,
        epoch: u64,
        key_ref: &KeyRef,
        scope: impl FnOnce() -> Option<KeyScope>,
    ) -> std::result::Result<bool, Stop> {
        if let Some(usable) = self.met.get(&(epoch, *key_ref)) {
            return Ok(*usable);
        }
        let usable = !self.withhold_if_erased(epoch, key_ref)?;
        if usable {
            self.file_key(epoch, key_ref, scope().as_ref())?;
        }
        self.met.insert((epoch, *key_ref), usable);
        Ok(usable)
    }

    /// A reference whose key was erased: never used nor filed again. True when it was.
    fn withhold_if_erased(&mut self, epoch: u64, key_ref: &KeyRef) -> Result<bool> {
        if self.vault.erased_by(&self.id, epoch, key_ref)?.is_none() {
            return Ok(false);
        }
        if let Some(EpochOpener::Conversations(c)) = self.openers.get_mut(&epoch) {
            c.withhold_key(key_ref);
        }
        Ok(true)
    }

    /// Files a content key (once), labelled with its conversation when known.
    fn file_key(&mut self, epoch: u64, key_ref: &KeyRef, scope: Option<&KeyScope>) -> std::result::Result<(), Stop> {
        let key = match self.openers.get_mut(&epoch) {
            Some(EpochOpener::Conversations(c)) => c.export_key(key_ref),
            _ => None,
        }
        .ok_or_else(|| Stop(format!("epoch {epoch}: a content key could not be derived")))?;
        let wrapped = self.vault.wrap(&key_identity(&self.id, epoch, key_ref), &key)?;
        self.filed.content_keys += self.insert_key(epoch, key_ref, scope.and_then(KeyScope::conversation), Some(wrapped))?;
        Ok(())
    }

    /// A row of `content_keys` (once): `wrapped` is `None` for a version 1 index row.
    fn insert_key(
        &self,
        epoch: u64,
        key_ref: &KeyRef,
        conversation: Option<&verbatim_core::seal::conversation::ConversationRef>,
        wrapped: Option<Vec<u8>>,
    ) -> Result<u64> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO content_keys (tenant, device, stream, epoch, key_ref, channel, conversation_id, wrapped)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                self.id.tenant,
                self.id.device,
                self.id.stream,
                epoch as i64,
                &key_ref[..],
                conversation.map(|c| c.channel.as_str()),
                conversation.map(|c| c.conversation_id.as_str()),
                wrapped
            ],
        )?;
        Ok(n as u64)
    }

    fn index_legacy(&self, epoch: u64, key_ref: &KeyRef, c: &verbatim_core::seal::conversation::ConversationRef) -> Result<()> {
        self.insert_key(epoch, key_ref, Some(c), None).map(|_| ())
    }

    /// Counts a record under its key and indexes who took part.
    fn note_record(&self, epoch: u64, key_ref: &KeyRef, captured_ms: i64, body: &RecordBody) -> Result<()> {
        let id = &self.id;
        let row: Option<i64> = self
            .conn()
            .prepare_cached(
                "UPDATE content_keys SET records = records + 1,
                    first_captured_ms = min(coalesce(first_captured_ms, ?6), ?6),
                    last_captured_ms = max(coalesce(last_captured_ms, ?6), ?6)
                 WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4 AND key_ref = ?5 RETURNING id",
            )?
            .query_row(params![id.tenant, id.device, id.stream, epoch as i64, &key_ref[..], captured_ms], |r| r.get(0))
            .optional()?;
        if let Some(row) = row {
            let mut put = self.conn().prepare_cached("INSERT OR IGNORE INTO participants (key_row, handle) VALUES (?1, ?2)")?;
            for handle in participants::of_record(body) {
                put.execute(params![row, handle])?;
            }
        }
        Ok(())
    }
}

fn finish_tx(conn: &Connection, r: Result<()>) -> Result<()> {
    match r {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
