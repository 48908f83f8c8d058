//! The single writer: one thread owns the write connection and applies batches in arrival
//! order. Whatever batches arrived together are applied in one transaction, each inside its
//! own savepoint, and committed with one fsync (group commit): 200 devices uploading at once
//! do not each pay a sync. Answers go out only after the COMMIT returned.
//!
//! Besides continuity the writer enforces [`StoreRules`]: epochs only for archive keys the
//! archive holds, and a bounded number of streams per device. Alerts are one row per stream and
//! kind, its repeats counted beside it, so a device cannot grow the tables without bound.

use std::sync::mpsc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use verbatim_core::chain::{self, ChainBreak, Link, StreamId};
use verbatim_core::wire::{Batch, BatchAck, WireRecord};

use crate::error::{Error, Result};
use crate::store::{
    ALERT_CHAIN_BREAK, ALERT_EPOCH_CONFLICT, ALERT_EQUIVOCATION, ALERT_GAP, ALERT_UNKNOWN_ARCHIVE_KEY, Mode, Outcome, StoreRules,
    epoch_difference, unknown_key_reason,
};
use crate::time::now_ms;

/// Most batches committed in one transaction.
const MAX_GROUP: usize = 64;

pub struct Job {
    pub batch: Batch,
    pub mode: Mode,
    pub reply: oneshot::Sender<Result<Outcome>>,
}

pub fn run(mut conn: Connection, rx: mpsc::Receiver<Job>, _lock: std::fs::File, rules: StoreRules) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Keep arrival order; a roll-back job is applied alone so it cannot take others with it.
        let mut batch: Vec<Job> = Vec::new();
        for job in group {
            if job.mode == Mode::RollBack {
                commit_group(&mut conn, std::mem::take(&mut batch), &rules);
                roll_back_one(&mut conn, job, &rules);
            } else {
                batch.push(job);
            }
        }
        commit_group(&mut conn, batch, &rules);
    }
    // Every sender is gone: the receiver is shutting down. The connection closes here (a
    // clean WAL checkpoint) and the data directory lock is released.
}

fn commit_group(conn: &mut Connection, jobs: Vec<Job>, rules: &StoreRules) {
    if jobs.is_empty() {
        return;
    }
    let now = now_ms();
    let mut results: Vec<(oneshot::Sender<Result<Outcome>>, Result<Outcome>)> = Vec::with_capacity(jobs.len());
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for j in jobs {
                let _ = j.reply.send(Err(Error::Store(msg.clone())));
            }
            return;
        }
    };
    let mut tx = tx;
    for job in jobs {
        let result = match tx.savepoint() {
            Ok(sp) => match apply(&sp, &job.batch, now, rules) {
                Ok(outcome) => sp.commit().map(|_| outcome).map_err(Error::from),
                Err(e) => Err(e), // the savepoint rolls back on drop
            },
            Err(e) => Err(e.into()),
        };
        results.push((job.reply, result));
    }
    match tx.commit() {
        Ok(()) => {
            for (reply, r) in results {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            // Nothing of this group is durable: no batch of it may be acknowledged.
            let msg = e.to_string();
            for (reply, _) in results {
                let _ = reply.send(Err(Error::Store(msg.clone())));
            }
        }
    }
}

fn roll_back_one(conn: &mut Connection, job: Job, rules: &StoreRules) {
    let result = conn.transaction().map_err(Error::from).and_then(|tx| {
        let r = apply(&tx, &job.batch, now_ms(), rules);
        tx.rollback()?;
        r
    });
    let _ = job.reply.send(result);
}

// SQLite integers are i64; sequence and epoch numbers are u64 on the wire. They are stored
// bit for bit, so every value round-trips (sequences never get near 2^63 in practice).
fn i(v: u64) -> i64 {
    v as i64
}

pub(crate) fn link_from(blob: Vec<u8>, seq: u64) -> Result<Link> {
    blob.try_into().map_err(|_| Error::Store(format!("sequence {seq}: stored link is not 32 bytes")))
}

/// A BLOB column's bytes, tolerating a value rewritten with another type: tampering must
/// surface as a mismatch (conflict, failed verification), not as a storage error.
pub(crate) fn bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// The stream's row, created if the device may open another stream; `None` if it may not.
fn stream_row(conn: &Connection, id: &StreamId, now: i64, max_streams_per_device: u64) -> Result<Option<i64>> {
    if let Some(sid) = super::read::stream_row(conn, id)? {
        return Ok(Some(sid));
    }
    let held: i64 =
        conn.query_row("SELECT count(*) FROM streams WHERE tenant = ?1 AND device = ?2", params![id.tenant, id.device], |r| {
            r.get(0)
        })?;
    if held as u64 >= max_streams_per_device {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO streams (tenant, device, stream, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![id.tenant, id.device, id.stream, now],
    )?;
    Ok(Some(conn.last_insert_rowid()))
}

/// Last held sequence and its link (0 and the genesis link when nothing is held).
pub(crate) fn head(conn: &Connection, stream_row: Option<i64>, id: &StreamId) -> Result<(u64, Link)> {
    let Some(sid) = stream_row else { return Ok((0, chain::genesis(id))) };
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row("SELECT seq, link FROM records WHERE stream_id = ?1 ORDER BY seq DESC LIMIT 1", [sid], |r| {
            Ok((r.get(0)?, bytes(r.get_ref(1)?)))
        })
        .optional()?;
    match row {
        None => Ok((0, chain::genesis(id))),
        // A mangled head link makes the next batch fail to chain: a conflict with an alert.
        Some((seq, link)) => Ok((seq as u64, link_from(link, seq as u64).unwrap_or([0; 32]))),
    }
}

/// Records an alert: the first of its kind on a stream is a row of its own, kept as it was
/// written; every later one of that kind is counted beside it (how many, when the last was,
/// its detail), so a device repeating a refused batch cannot grow the table and no alert
/// disappears into another's text.
fn alert(conn: &Connection, sid: i64, now: i64, kind: &str, detail: &str) -> Result<()> {
    let first: Option<i64> = conn
        .query_row("SELECT id FROM alerts WHERE stream_id = ?1 AND kind = ?2 ORDER BY id LIMIT 1", params![sid, kind], |r| {
            r.get(0)
        })
        .optional()?;
    match first {
        None => {
            conn.execute(
                "INSERT INTO alerts (stream_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![sid, now, kind, detail],
            )?;
            tracing::warn!(kind, "stream alert recorded");
        }
        Some(id) => {
            conn.execute(
                "INSERT INTO alert_repeats (alert_id, repeats, last_ms, last_detail) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (alert_id) DO UPDATE SET repeats = repeats + 1, last_ms = excluded.last_ms,
                                                      last_detail = excluded.last_detail",
                params![id, now, detail],
            )?;
            tracing::warn!(kind, "stream alert repeated");
        }
    }
    Ok(())
}

/// Applies one batch: duplicates, continuity, chain, epochs, then the new records.
fn apply(conn: &Connection, batch: &Batch, now: i64, rules: &StoreRules) -> Result<Outcome> {
    let Some(sid) = stream_row(conn, &batch.stream, now, rules.max_streams_per_device)? else {
        return Ok(Outcome::StreamLimit { limit: rules.max_streams_per_device });
    };
    let (held, held_link) = head(conn, Some(sid), &batch.stream)?;
    // Saturating: a tampered row could hold any number; nothing here may overflow on it.
    let expected = held.saturating_add(1);

    // An epoch id must always mean the same key id and encapsulation: another is equivocation.
    // Epochs not held yet must be sealed to a key the archive holds, or nobody could ever open
    // their records (epochs already held are not re-checked: a retired key stays readable).
    let mut new_epochs = Vec::new();
    for e in &batch.epochs {
        let stored: Option<(String, Vec<u8>)> = conn
            .query_row(
                "SELECT key_id, encapsulation FROM epochs WHERE stream_id = ?1 AND epoch = ?2",
                params![sid, i(e.epoch)],
                |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), bytes(r.get_ref(1)?))),
            )
            .optional()?;
        match stored {
            Some((key_id, enc)) => {
                if let Some(reason) = epoch_difference(e.epoch, &key_id, &enc, e) {
                    alert(conn, sid, now, ALERT_EPOCH_CONFLICT, &reason)?;
                    return Ok(Outcome::Conflict { expected, reason });
                }
            }
            None => new_epochs.push(e),
        }
    }
    if let Some(e) = new_epochs.iter().find(|e| !rules.accepted_keys.contains(&e.archive_key_id)) {
        alert(conn, sid, now, ALERT_UNKNOWN_ARCHIVE_KEY, &unknown_key_reason(e.epoch, &e.archive_key_id))?;
        return Ok(Outcome::UnknownArchiveKey { epoch: e.epoch, key_id: e.archive_key_id.clone() });
    }

    let first = batch.records.first().map(|r| r.seq).unwrap_or(expected);
    if first > expected {
        alert(conn, sid, now, ALERT_GAP, &format!("batch started at sequence {first}; archive holds through {held}"))?;
        return Ok(Outcome::Gap { expected });
    }

    // Records already held must be byte-identical: same epoch, link and ciphertext. (The
    // link covers the ciphertext, but comparing both does not trust the sender's link.)
    let mut duplicates = 0u64;
    for r in batch.records.iter().take_while(|r| r.seq <= held) {
        let stored: Option<(i64, Vec<u8>, Vec<u8>)> = conn
            .query_row(
                "SELECT epoch, link, ciphertext FROM records WHERE stream_id = ?1 AND seq = ?2",
                params![sid, i(r.seq)],
                |row| Ok((row.get(0)?, bytes(row.get_ref(1)?), bytes(row.get_ref(2)?))),
            )
            .optional()?;
        let same = stored.is_some_and(|(epoch, link, ct)| epoch as u64 == r.epoch && link == r.link && ct == r.ciphertext);
        if !same {
            let reason = format!("sequence {} differs from the record held", r.seq);
            alert(conn, sid, now, ALERT_EQUIVOCATION, &reason)?;
            return Ok(Outcome::Conflict { expected, reason });
        }
        duplicates += 1;
    }

    let new: Vec<&WireRecord> = batch.records.iter().filter(|r| r.seq > held).collect();
    if new.is_empty() {
        return Ok(Outcome::Stored(BatchAck { acked_through: held, stored: 0, duplicates }));
    }
    let (last, _) = match chain::verify_run(held, held_link, new.iter().copied()) {
        Ok(h) => h,
        Err(ChainBreak::Gap { expected, .. }) => return Ok(Outcome::Gap { expected }),
        Err(ChainBreak::BadLink { seq }) => {
            let reason = format!("sequence {seq} does not chain from the records held");
            alert(conn, sid, now, ALERT_CHAIN_BREAK, &reason)?;
            return Ok(Outcome::Conflict { expected, reason });
        }
    };

    for e in batch.epochs.iter().filter(|e| new.iter().any(|r| r.epoch == e.epoch)) {
        conn.execute(
            "INSERT OR IGNORE INTO epochs (stream_id, epoch, key_id, encapsulation, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sid, i(e.epoch), e.archive_key_id, e.encapsulation, now],
        )?;
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO records (stream_id, seq, epoch, link, ciphertext, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in &new {
        insert.execute(params![sid, i(r.seq), i(r.epoch), &r.link[..], r.ciphertext, now])?;
    }
    Ok(Outcome::Stored(BatchAck { acked_through: last, stored: new.len() as u64, duplicates }))
}
