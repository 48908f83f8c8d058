//! Reading pending records for upload, on a connection of its own: readers never block the
//! writer (WAL), and every record read is checked against its predecessor's link.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::open_connection;
use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::wire::{Batch, EpochInfo, WIRE_RECORD_OVERHEAD, WireRecord};

/// Reads pending records for upload, on its own connection.
pub struct QueueReader {
    conn: Mutex<Connection>,
}

impl QueueReader {
    pub(crate) fn open(path: &Path) -> Result<QueueReader> {
        // Opening runs no statement: a reader that never reads does not join the WAL, so the
        // writer, closing last, checkpoints and removes it.
        Ok(QueueReader { conn: Mutex::new(open_connection(path, true)?) })
    }

    /// Everything a capture source saved (see [`crate::sources`]).
    pub fn source_state(&self, source: &str) -> Result<crate::sources::SourceState> {
        let conn = self.conn.lock().map_err(|_| Error::new(ErrorKind::Internal, "queue reader lock poisoned"))?;
        let mut stmt = conn.prepare_cached("SELECT key, value FROM source_state WHERE source = ?1")?;
        let rows = stmt.query_map(params![source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One saved value of a capture source.
    pub fn source_value(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn.lock().map_err(|_| Error::new(ErrorKind::Internal, "queue reader lock poisoned"))?;
        let mut stmt = conn.prepare_cached("SELECT value FROM source_state WHERE source = ?1 AND key = ?2")?;
        Ok(stmt.query_row(params![source, key], |r| r.get(0)).optional()?)
    }

    /// The keys of a capture source's entries with `after < key < before`, in key order, at
    /// most `limit` (a walk that needs no values reads none).
    pub fn source_keys(&self, source: &str, after: &str, before: &str, limit: usize) -> Result<Vec<String>> {
        let conn = self.conn.lock().map_err(|_| Error::new(ErrorKind::Internal, "queue reader lock poisoned"))?;
        let mut stmt = conn
            .prepare_cached("SELECT key FROM source_state WHERE source = ?1 AND key > ?2 AND key < ?3 ORDER BY key LIMIT ?4")?;
        let rows = stmt.query_map(params![source, after, before, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The stored link of a pending record, if the queue still holds it.
    pub fn link_of(&self, seq: u64) -> Result<Option<Link>> {
        let conn = self.conn.lock().map_err(|_| Error::new(ErrorKind::Internal, "queue reader lock poisoned"))?;
        let link: Option<Vec<u8>> =
            conn.query_row("SELECT link FROM records WHERE seq = ?1", params![seq as i64], |r| r.get(0)).optional()?;
        link.map(|l| {
            l.as_slice()
                .try_into()
                .map_err(|_| Error::new(ErrorKind::Corrupt, format!("queue record {seq}: link is not 32 bytes")))
        })
        .transpose()
    }

    /// The next batch after (`after`, `after_link`): records in sequence order until adding one
    /// more would pass `max_bytes` (at least one record). Every record's chain link is checked
    /// against its predecessor, so a damaged row is reported, never sent.
    /// Memory is bounded by `max_bytes` plus one record, whatever the queue holds.
    pub fn read_batch(&self, stream: &StreamId, after: u64, after_link: Link, max_bytes: usize) -> Result<Option<Batch>> {
        let conn = self.conn.lock().map_err(|_| Error::new(ErrorKind::Internal, "queue reader lock poisoned"))?;
        // Upload reads each record once, in order: a page cache only holds what was sent.
        // 256 KiB instead of SQLite's 2 MiB keeps memory flat however long the queue. (Set
        // here, not at open, for the reason given there; it costs no I/O.)
        conn.pragma_update(None, "cache_size", -256)?;
        let mut stmt =
            conn.prepare_cached("SELECT seq, epoch, link, ciphertext FROM records WHERE seq > ?1 ORDER BY seq LIMIT 4096")?;
        let mut rows = stmt.query(params![after as i64])?;
        let mut records: Vec<WireRecord> = Vec::new();
        let mut size = 0usize;
        let (mut prev_seq, mut prev_link) = (after, after_link);
        while let Some(row) = rows.next()? {
            let row = match decode_row(row) {
                Ok(row) => row,
                Err(_) if !records.is_empty() => break,
                Err(e) => return Err(e),
            };
            if !records.is_empty() && size + WIRE_RECORD_OVERHEAD + row.ciphertext.len() > max_bytes {
                break;
            }
            if let Err(b) = chain::verify_run(prev_seq, prev_link, [&row]) {
                // Send what is intact before the damage; the damaged record itself is reported
                // (when it comes first) and never sent.
                if !records.is_empty() {
                    break;
                }
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("queue record {}: {b}; it will not be sent", prev_seq.saturating_add(1)),
                ));
            }
            prev_seq = row.seq;
            prev_link = row.link;
            size += WIRE_RECORD_OVERHEAD + row.ciphertext.len();
            records.push(row);
        }
        if records.is_empty() {
            return Ok(None);
        }
        let mut epochs: Vec<EpochInfo> = Vec::new();
        let mut estmt = conn.prepare_cached("SELECT archive_key_id, encapsulation FROM epochs WHERE epoch = ?1")?;
        for r in &records {
            if epochs.iter().any(|e| e.epoch == r.epoch) {
                continue;
            }
            let (archive_key_id, encapsulation): (String, Vec<u8>) =
                estmt.query_row(params![r.epoch as i64], |row| Ok((row.get(0)?, row.get(1)?))).optional()?.ok_or_else(|| {
                    Error::new(ErrorKind::Corrupt, format!("queue record {}: its epoch {} is missing", r.seq, r.epoch))
                })?;
            epochs.push(EpochInfo { epoch: r.epoch, archive_key_id, encapsulation });
        }
        Ok(Some(Batch { stream: stream.clone(), epochs, records }))
    }
}

/// A stored record as it goes on the wire.
fn decode_row(row: &rusqlite::Row<'_>) -> Result<WireRecord> {
    let seq: i64 = row.get(0)?;
    let epoch: i64 = row.get(1)?;
    let link: Vec<u8> = row.get(2)?;
    let ciphertext: Vec<u8> = row.get(3)?;
    let link: Link = link
        .as_slice()
        .try_into()
        .map_err(|_| Error::new(ErrorKind::Corrupt, format!("queue record {seq}: link is {} bytes, not 32", link.len())))?;
    if seq <= 0 || epoch <= 0 {
        return Err(Error::new(ErrorKind::Corrupt, format!("queue record {seq}: invalid sequence or epoch")));
    }
    Ok(WireRecord { seq: seq as u64, epoch: epoch as u64, link, ciphertext })
}
