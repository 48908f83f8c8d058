//! Storing a batch in the bucket, exactly once, with any number of receivers and no
//! coordinator.
//!
//! 1. Read the stream's head (creating it with `If-None-Match: *` for a new stream), then
//!    follow the batch objects past it: a receiver killed after writing a batch object but
//!    before moving the head left one there, valid and durable, and it is adopted.
//! 2. Check the batch against what is held exactly as the SQLite store does (duplicates must
//!    be byte-identical, no gap, the chain must continue, epochs never change meaning, new
//!    epochs only for accepted keys); a refusal stores only its alert.
//! 3. Write the new records as the object `b/<held + 1>` with `If-None-Match: *`, Object Lock
//!    COMPLIANCE and the tenant's retain-until date. Only one receiver can create that key:
//!    a receiver that loses the race goes back to 1, where its batch is now a duplicate (or a
//!    conflict) of what the winner stored.
//! 4. Move the head forward with `If-Match` on the ETag read in 1 (a compare-and-swap that
//!    only ever moves it forward), then acknowledge. The object is durable before the answer;
//!    a lost head update only costs the next writer a read.
//!
//! Why this cannot fork: a writer only writes the key right after a head it read, and a head
//! only ever moves over an object starting right after it; so every key it could target is
//! either free and the next in the chain, or already taken by the object that follows.

use std::collections::HashMap;

use verbatim_core::chain::{self, ChainBreak, Link, StreamId};
use verbatim_core::wire::{Batch, BatchAck, EpochInfo, WireRecord};

use super::Inner;
use super::client::{Put, PutOptions};
use super::layout::{AlertObject, BatchObject, Head, Repeats};
use crate::error::{Error, Result};
use crate::store::{
    ALERT_CHAIN_BREAK, ALERT_EPOCH_CONFLICT, ALERT_EQUIVOCATION, ALERT_GAP, ALERT_UNKNOWN_ARCHIVE_KEY, Mode, Outcome,
    epoch_difference, unknown_key_reason,
};
use crate::time::now_ms;

/// Rounds of read-check-write one batch may take when other receivers keep winning the race
/// for its stream; past them the device gets 503 and retries later.
const MAX_ROUNDS: usize = 16;
/// Compare-and-swap attempts on a mutable object (head, alert repeats).
const MAX_CAS: usize = 16;

/// Reads a stream's head and its ETag.
async fn load_head(s: &Inner, id: &StreamId) -> Result<Option<(Head, Option<String>)>> {
    match s.client.get(&s.layout.head(id)).await? {
        Some(o) => Ok(Some((Head::decode(&o.body)?, o.etag))),
        None => Ok(None),
    }
}

/// Moves `head` over the batch objects that follow it (normally none).
pub(super) async fn follow(s: &Inner, id: &StreamId, head: &mut Head) -> Result<()> {
    loop {
        let next = head.seq.saturating_add(1);
        let Some(o) = s.client.get(&s.layout.batch(id, next)).await? else { return Ok(()) };
        let object = BatchObject::decode(&o.body)?;
        if object.first() != next || object.batch.stream != *id {
            return Err(Error::Store(format!("batch object at sequence {next} does not hold that sequence of this stream")));
        }
        head.advance(&object);
    }
}

/// The cursor answer: the head, followed past any object it lags behind.
pub(super) async fn cursor(s: &Inner, id: &StreamId) -> Result<(u64, Link)> {
    let Some((mut head, _)) = load_head(s, id).await? else { return Ok((0, chain::genesis(id))) };
    follow(s, id, &mut head).await?;
    Ok((head.seq, head.link()))
}

/// What the check of a batch against the head decided.
enum Checked {
    Refused(Outcome),
    /// Only records already held.
    NothingNew {
        duplicates: u64,
    },
    New {
        object: BatchObject,
        duplicates: u64,
    },
}

/// Stores `batch`; its records are marked received now, or at `received_ms` (a copy from
/// another archive keeps when they were first received).
pub(super) async fn submit(s: &Inner, batch: Batch, mode: Mode, received_ms: Option<i64>) -> Result<Outcome> {
    let id = batch.stream.clone();
    // A roll-back (fault injection: a crash before the commit) checks as usual and writes
    // nothing, alerts included.
    let write = mode == Mode::Commit;
    for _ in 0..MAX_ROUNDS {
        let now = now_ms();
        let (mut head, etag) = match load_head(s, &id).await? {
            Some(found) => found,
            None => {
                let held = s.client.list_prefixes(&s.layout.streams_of(&id.tenant, &id.device)).await?.len() as u64;
                if held >= s.rules.max_streams_per_device {
                    return Ok(Outcome::StreamLimit { limit: s.rules.max_streams_per_device });
                }
                if !write {
                    (Head::new(&id, now), None)
                } else {
                    let created = Head::new(&id, now);
                    let options = PutOptions { if_none_match: true, ..PutOptions::default() };
                    s.client.put(&s.layout.head(&id), created.encode(), &options).await?;
                    continue; // read it back with its ETag (whoever created it)
                }
            }
        };
        let read_seq = head.seq;
        follow(s, &id, &mut head).await?;
        let checked = check(s, &id, &head, &batch, now, write).await?;
        let (object, duplicates) = match checked {
            Checked::Refused(outcome) => {
                if write && head.seq != read_seq {
                    move_head(s, &id, etag, head).await;
                }
                return Ok(outcome);
            }
            Checked::NothingNew { duplicates } => {
                let ack = BatchAck { acked_through: head.seq, stored: 0, duplicates };
                if write && head.seq != read_seq {
                    move_head(s, &id, etag, head).await;
                }
                return Ok(Outcome::Stored(ack));
            }
            Checked::New { mut object, duplicates } => {
                object.received_ms = received_ms.unwrap_or(now);
                (object, duplicates)
            }
        };
        let ack = BatchAck { acked_through: object.last(), stored: object.batch.records.len() as u64, duplicates };
        if !write {
            return Ok(Outcome::Stored(ack));
        }
        let options = PutOptions {
            if_none_match: true,
            retain_until: Some(s.retention.until(&id.tenant, now)),
            // Under legal hold while the tenant or device is held.
            legal_hold: super::hold::held(s, &id.tenant, &id.device).await?,
            ..PutOptions::default()
        };
        match s.client.put(&s.layout.batch(&id, object.first()), object.encode(), &options).await? {
            Put::Written { .. } => {
                head.advance(&object);
                move_head(s, &id, etag, head).await;
                return Ok(Outcome::Stored(ack));
            }
            // Another receiver stored a batch for this stream first: check again against it.
            Put::PreconditionFailed => continue,
        }
    }
    Err(Error::Store("another receiver kept winning the race for this stream; retry".into()))
}

/// Moves the stream's head forward to `to` by compare-and-swap, never backwards. Best effort:
/// the batch objects are what is held, the head only saves readers and writers reads.
async fn move_head(s: &Inner, id: &StreamId, mut etag: Option<String>, to: Head) {
    let key = s.layout.head(id);
    for _ in 0..MAX_CAS {
        let options = PutOptions { if_match: etag.clone(), if_none_match: etag.is_none(), ..PutOptions::default() };
        match s.client.put(&key, to.encode(), &options).await {
            Ok(Put::Written { .. }) => return,
            Ok(Put::PreconditionFailed) => match load_head(s, id).await {
                Ok(Some((current, e))) if current.seq < to.seq => etag = e,
                Ok(_) => return, // someone moved it as far or further
                Err(e) => {
                    tracing::warn!(error = %e, "stream head not moved (the next writer will catch up)");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "stream head not moved (the next writer will catch up)");
                return;
            }
        }
    }
}

/// Records an alert: the first of its kind on a stream is an object of its own, locked like
/// the records; later ones of that kind are counted in a small mutable object beside it.
pub(super) async fn alert(s: &Inner, id: &StreamId, now: i64, kind: &str, detail: &str) -> Result<()> {
    let first = AlertObject { at_ms: now, kind: kind.to_string(), detail: detail.to_string() };
    let options = PutOptions {
        if_none_match: true,
        retain_until: Some(s.retention.until(&id.tenant, now)),
        // Under legal hold while the tenant or device is held.
        legal_hold: super::hold::held(s, &id.tenant, &id.device).await?,
        ..PutOptions::default()
    };
    let body = serde_json::to_vec(&first).unwrap_or_default();
    if let Put::Written { .. } = s.client.put(&s.layout.alert(id, kind), body, &options).await? {
        tracing::warn!(kind, "stream alert recorded");
        return Ok(());
    }
    let key = s.layout.repeats(id, kind);
    for _ in 0..MAX_CAS {
        let (repeats, etag) = match s.client.get(&key).await? {
            Some(o) => (serde_json::from_slice::<Repeats>(&o.body).map(|r| r.repeats).unwrap_or(0), o.etag),
            None => (0, None),
        };
        let next = Repeats { repeats: repeats + 1, last_ms: now, last_detail: detail.to_string() };
        let options = PutOptions { if_none_match: etag.is_none(), if_match: etag, ..PutOptions::default() };
        if let Put::Written { .. } = s.client.put(&key, serde_json::to_vec(&next).unwrap_or_default(), &options).await? {
            tracing::warn!(kind, "stream alert repeated");
            return Ok(());
        }
    }
    Err(Error::Store("alert count contended; retry".into()))
}

/// The stored records of sequences `from..=to` (all held), by sequence.
async fn stored_records(s: &Inner, id: &StreamId, head: &Head, from: u64, to: u64) -> Result<HashMap<u64, WireRecord>> {
    // Usually a retry of the last batch: one object. Otherwise find the objects by listing.
    let firsts: Vec<u64> = if from >= head.last_object && head.last_object > 0 {
        vec![head.last_object]
    } else {
        let keys = s.client.list_all(&s.layout.batches(id), None).await?;
        let mut firsts: Vec<u64> = keys.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect();
        firsts.sort_unstable();
        // The objects overlapping from..=to: the last starting at or before `from`, and on.
        let start = firsts.partition_point(|f| *f <= from).saturating_sub(1);
        firsts.into_iter().skip(start).take_while(|f| *f <= to).collect()
    };
    let mut out = HashMap::new();
    for first in firsts {
        let Some(o) = s.client.get(&s.layout.batch(id, first)).await? else { continue };
        for r in BatchObject::decode(&o.body)?.batch.records {
            if (from..=to).contains(&r.seq) {
                out.insert(r.seq, r);
            }
        }
    }
    Ok(out)
}

/// The SQLite writer's `apply`, against a head: duplicates, continuity, chain, epochs.
async fn check(s: &Inner, id: &StreamId, head: &Head, batch: &Batch, now: i64, write: bool) -> Result<Checked> {
    let held = head.seq;
    let expected = held.saturating_add(1);
    let raise =
        |kind: &'static str, detail: String| async move { if write { alert(s, id, now, kind, &detail).await } else { Ok(()) } };

    let mut new_epochs: Vec<&EpochInfo> = Vec::new();
    for e in &batch.epochs {
        match head.epoch(e.epoch) {
            Some(h) => {
                let enc = hex::decode(&h.encapsulation).unwrap_or_default();
                if let Some(reason) = epoch_difference(e.epoch, &h.key_id, &enc, e) {
                    raise(ALERT_EPOCH_CONFLICT, reason.clone()).await?;
                    return Ok(Checked::Refused(Outcome::Conflict { expected, reason }));
                }
            }
            None => new_epochs.push(e),
        }
    }
    if let Some(e) = new_epochs.iter().find(|e| !s.rules.accepted_keys.contains(&e.archive_key_id)) {
        raise(ALERT_UNKNOWN_ARCHIVE_KEY, unknown_key_reason(e.epoch, &e.archive_key_id)).await?;
        return Ok(Checked::Refused(Outcome::UnknownArchiveKey { epoch: e.epoch, key_id: e.archive_key_id.clone() }));
    }

    let first = batch.records.first().map(|r| r.seq).unwrap_or(expected);
    if first > expected {
        raise(ALERT_GAP, format!("batch started at sequence {first}; archive holds through {held}")).await?;
        return Ok(Checked::Refused(Outcome::Gap { expected }));
    }

    // Records already held must be byte-identical: same epoch, link and ciphertext.
    let dups: Vec<&WireRecord> = batch.records.iter().take_while(|r| r.seq <= held).collect();
    if let (Some(a), Some(b)) = (dups.first(), dups.last()) {
        let stored = stored_records(s, id, head, a.seq, b.seq).await?;
        for r in &dups {
            if stored.get(&r.seq) != Some(*r) {
                let reason = format!("sequence {} differs from the record held", r.seq);
                raise(ALERT_EQUIVOCATION, reason.clone()).await?;
                return Ok(Checked::Refused(Outcome::Conflict { expected, reason }));
            }
        }
    }
    let duplicates = dups.len() as u64;

    let new: Vec<&WireRecord> = batch.records.iter().filter(|r| r.seq > held).collect();
    if new.is_empty() {
        return Ok(Checked::NothingNew { duplicates });
    }
    match chain::verify_run(held, head.link(), new.iter().copied()) {
        Ok(_) => {}
        Err(ChainBreak::Gap { expected, .. }) => return Ok(Checked::Refused(Outcome::Gap { expected })),
        Err(ChainBreak::BadLink { seq }) => {
            let reason = format!("sequence {seq} does not chain from the records held");
            raise(ALERT_CHAIN_BREAK, reason.clone()).await?;
            return Ok(Checked::Refused(Outcome::Conflict { expected, reason }));
        }
    }
    let epochs = batch.epochs.iter().filter(|e| new.iter().any(|r| r.epoch == e.epoch)).cloned().collect();
    let records = new.into_iter().cloned().collect();
    let object = BatchObject { received_ms: now, batch: Batch { stream: id.clone(), epochs, records } };
    Ok(Checked::New { object, duplicates })
}
