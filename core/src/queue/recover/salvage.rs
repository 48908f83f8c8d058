//! Reading everything a damaged store still holds, one row at a time, each record checked
//! against the chain.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::detect::quick_check_conn;
use crate::chain::{self, Link};
use crate::queue::head::Head;
use crate::wire::EpochInfo;

pub(super) struct RowRead {
    pub(super) seq: u64,
    pub(super) epoch: u64,
    pub(super) captured_ms: i64,
    pub(super) link: Link,
    pub(super) ciphertext: Vec<u8>,
}

/// What could be read from the damaged store.
pub(super) struct Salvage {
    pub(super) damage: Vec<String>,
    pub(super) generated_device_id: Option<String>,
    pub(super) evidence: Option<String>,
    /// Capture sources' digest key and memory ([`crate::sources`]): carried over, so sources
    /// do not capture again what the kept records already hold.
    pub(super) source_digest_key: Option<String>,
    pub(super) source_state: Vec<(String, String, Vec<u8>)>,
    pub(super) head: Option<Head>,
    pub(super) policy: Option<(String, String)>,
    pub(super) deferred: Vec<(i64, Vec<u8>)>,
    pub(super) epochs: Vec<(EpochInfo, i64, i64)>,
    /// Kept records, in order, with how each relates to its predecessor.
    pub(super) kept: Vec<(RowRead, Anchor)>,
    pub(super) lost: Vec<u64>,
    pub(super) unopenable: Vec<u64>,
    pub(super) maybe_lost_after: Option<u64>,
    pub(super) first_seq: u64,
}

/// How a kept record joins the chain.
#[derive(Debug, Clone, Copy)]
pub(super) enum Anchor {
    /// Its link verifies from its predecessor's (held or kept) link.
    Verified(Link),
    /// Its predecessor is lost: it starts a run the archive verifies from here.
    Unanchored,
}

/// Reads everything still readable from a copy of the damaged database.
pub(super) fn read_salvage_from(db: &Path) -> Salvage {
    let mut s = Salvage {
        damage: Vec::new(),
        generated_device_id: None,
        evidence: None,
        source_digest_key: None,
        source_state: Vec::new(),
        head: None,
        policy: None,
        deferred: Vec::new(),
        epochs: Vec::new(),
        kept: Vec::new(),
        lost: Vec::new(),
        unopenable: Vec::new(),
        maybe_lost_after: None,
        first_seq: 1,
    };
    let conn = match Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX) {
        Ok(c) => c,
        Err(e) => {
            s.damage.push(format!("database: cannot be opened: {e}"));
            return s;
        }
    };
    match quick_check_conn(&conn) {
        Ok(problems) => s.damage.extend(problems.into_iter().map(|p| format!("integrity check: {p}"))),
        Err(e) => s.damage.push(format!("integrity check could not run: {e}")),
    }
    let meta = |key: &str| conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, String>(0)).optional();
    match meta("generated_device_id") {
        Ok(v) => s.generated_device_id = v,
        Err(e) => s.damage.push(format!("device id unreadable: {e}")),
    }
    match meta(crate::queue::EVIDENCE_META_KEY) {
        Ok(v) => s.evidence = v,
        Err(e) => s.damage.push(format!("evidence state unreadable: {e}")),
    }
    match meta(crate::queue::SOURCE_DIGEST_KEY) {
        Ok(v) => s.source_digest_key = v,
        Err(e) => s.damage.push(format!("source digest key unreadable: {e}")),
    }
    match read_source_state(&conn) {
        Ok(rows) => s.source_state = rows,
        Err(e) => s.damage.push(format!("capture sources' state unreadable (they will take a new baseline): {e}")),
    }
    match crate::queue::stored_policy(&conn) {
        Ok(p) => s.policy = p,
        Err(e) => s.damage.push(format!("policy unreadable: {e}")),
    }
    match Head::read(&conn) {
        Ok(h) => s.head = h,
        Err(e) => s.damage.push(format!("queue head unreadable: {e}")),
    }
    match read_deferred(&conn) {
        Ok(d) => s.deferred = d,
        Err((d, e)) => {
            s.deferred = d;
            s.damage.push(format!("deferred agent events partly unreadable: {e}"));
        }
    }
    read_epochs(&conn, &mut s);
    read_records(&conn, &mut s);
    s
}

pub(super) fn link_of(bytes: Vec<u8>) -> Option<Link> {
    bytes.as_slice().try_into().ok()
}

pub(super) type Deferred = Vec<(i64, Vec<u8>)>;

pub(super) fn read_deferred(conn: &Connection) -> std::result::Result<Deferred, (Deferred, rusqlite::Error)> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT captured_ms, plaintext FROM deferred_events ORDER BY id").map_err(|e| (Vec::new(), e))?;
    let mut rows = stmt.query([]).map_err(|e| (Vec::new(), e))?;
    loop {
        match rows.next() {
            Ok(Some(row)) => match (row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1)) {
                (Ok(t), Ok(p)) => out.push((t, p)),
                (Err(e), _) | (_, Err(e)) => return Err((out, e)),
            },
            Ok(None) => return Ok(out),
            Err(e) => return Err((out, e)),
        }
    }
}

pub(super) fn read_epochs(conn: &Connection, s: &mut Salvage) {
    let read_one = |epoch: u64| {
        conn.query_row(
            "SELECT archive_key_id, encapsulation, created_ms, first_seq FROM epochs WHERE epoch = ?1",
            [epoch as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)),
        )
        .optional()
    };
    let listed: std::result::Result<Vec<i64>, _> =
        conn.prepare("SELECT epoch FROM epochs ORDER BY epoch").and_then(|mut st| st.query_map([], |r| r.get(0))?.collect());
    let candidates: Vec<u64> = match listed {
        Ok(list) => list.into_iter().filter(|e| *e > 0).map(|e| e as u64).collect(),
        Err(e) => {
            s.damage.push(format!("epoch list unreadable ({e}); probing each epoch"));
            let max = s.head.as_ref().map_or(0, |h| h.last_epoch).max(1);
            (1..=max.min(1_000_000)).collect()
        }
    };
    for epoch in candidates {
        match read_one(epoch) {
            Ok(Some((key_id, encapsulation, created, first))) => {
                s.epochs.push((EpochInfo { epoch, archive_key_id: key_id, encapsulation }, created, first))
            }
            Ok(None) => {}
            Err(e) => s.damage.push(format!("epoch {epoch} unreadable: {e}")),
        }
    }
}

pub(super) enum Probe {
    Row(RowRead),
    Missing,
    Unreadable(String),
}

pub(super) fn probe(conn: &Connection, seq: u64) -> Probe {
    let r = conn
        .query_row("SELECT epoch, captured_ms, link, ciphertext FROM records WHERE seq = ?1", [seq as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?))
        })
        .optional();
    match r {
        Ok(Some((epoch, captured_ms, link, ciphertext))) => match (u64::try_from(epoch), link_of(link)) {
            (Ok(epoch), Some(link)) if epoch > 0 => Probe::Row(RowRead { seq, epoch, captured_ms, link, ciphertext }),
            _ => Probe::Unreadable(format!("record {seq}: malformed row")),
        },
        Ok(None) => Probe::Missing,
        Err(e) => Probe::Unreadable(format!("record {seq}: {e}")),
    }
}

/// The predecessor's link as far as it is known.
#[derive(Debug, Clone, Copy)]
pub(super) enum Prev {
    /// Known genuine: the acknowledged head, or a record that verified.
    Strong(Link),
    /// Stored, not verified: its successor is checked against it.
    Weak(Link),
    /// The predecessor is lost.
    Lost,
}

/// Reads pending records one sequence number at a time and checks each against the chain.
pub(super) fn read_records(conn: &Connection, s: &mut Salvage) {
    let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).ok().flatten().map(|v| v.max(0) as u64);
    let (min_seq, max_seq) = (q("SELECT min(seq) FROM records"), q("SELECT max(seq) FROM records"));
    let (start_after, mut prev) = match &s.head {
        Some(h) => (h.acked_through, Prev::Strong(h.acked_link)),
        None => {
            // Without the head the acknowledged point is unknown: start at the first record held.
            let first = min_seq.unwrap_or(1);
            s.damage.push(format!("queue head lost: records before {first} cannot be accounted for"));
            (first.saturating_sub(1), Prev::Lost)
        }
    };
    s.first_seq = start_after + 1;
    let mut upper = s.head.as_ref().map_or(0, |h| h.last_seq).max(max_seq.unwrap_or(0));
    if s.head.is_none() && max_seq.is_none() {
        // Walk the table where it still answers.
        let mut at = start_after;
        let mut misses = 0u32;
        loop {
            match conn
                .query_row("SELECT seq FROM records WHERE seq > ?1 ORDER BY seq LIMIT 1", [at as i64], |r| r.get::<_, i64>(0))
                .optional()
            {
                Ok(Some(n)) if n > at as i64 => {
                    upper = n as u64;
                    at = n as u64;
                    misses = 0;
                }
                Ok(_) => break,
                Err(_) => {
                    at += 1;
                    misses += 1;
                    if misses > 10_000 {
                        break;
                    }
                }
            }
        }
        s.maybe_lost_after = Some(upper);
    } else if s.head.is_none() {
        s.maybe_lost_after = Some(upper);
    }
    if upper > s.first_seq.saturating_add(10_000_000) {
        s.damage
            .push(format!("the highest sequence number held ({upper}) is implausible; scanning 10,000,000 from {}", s.first_seq));
        upper = s.first_seq + 10_000_000;
    }
    let held_epochs: std::collections::HashSet<u64> = s.epochs.iter().map(|(e, _, _)| e.epoch).collect();
    let mut unreadable = 0u64;
    for seq in s.first_seq..=upper {
        match probe(conn, seq) {
            Probe::Row(row) => {
                let verified = match prev {
                    Prev::Strong(l) | Prev::Weak(l) => chain::link(&l, seq, row.epoch, &row.ciphertext) == row.link,
                    Prev::Lost => false,
                };
                if let (Prev::Strong(_), false) = (prev, verified) {
                    // It does not chain from a link known to be genuine: this record is damaged.
                    // Its stored link may still be genuine: its successor is checked against it.
                    s.lost.push(seq);
                    s.damage.push(format!("record {seq}: fails its chain link"));
                    prev = Prev::Weak(row.link);
                    continue;
                }
                if !held_epochs.contains(&row.epoch) {
                    s.lost.push(seq);
                    s.damage.push(format!("record {seq}: its epoch {} is lost", row.epoch));
                    prev = if verified { Prev::Strong(row.link) } else { Prev::Weak(row.link) };
                    continue;
                }
                let a = match (prev, verified) {
                    (Prev::Strong(l) | Prev::Weak(l), true) => Anchor::Verified(l),
                    _ => {
                        s.unopenable.push(seq);
                        Anchor::Unanchored
                    }
                };
                prev = if verified { Prev::Strong(row.link) } else { Prev::Weak(row.link) };
                s.kept.push((row, a));
            }
            Probe::Missing => {
                s.lost.push(seq);
                prev = Prev::Lost;
            }
            Probe::Unreadable(e) => {
                unreadable += 1;
                if unreadable <= 20 {
                    s.damage.push(e);
                }
                s.lost.push(seq);
                prev = Prev::Lost;
            }
        }
    }
    if unreadable > 20 {
        s.damage.push(format!("... {} more unreadable records", unreadable - 20));
    }
    if let Some(h) = &s.head {
        // The head's last link must be the last record's: otherwise records after it are lost.
        let last_ok =
            s.kept.last().is_some_and(|(r, _)| r.seq == h.last_seq && r.link == h.last_link) || h.last_seq == h.acked_through;
        if !last_ok && s.lost.last() != Some(&h.last_seq) {
            s.damage.push("the queue head does not match the last record held".into());
        }
    }
}

/// The `source_state` rows (none in a store older than the table).
fn read_source_state(conn: &Connection) -> rusqlite::Result<Vec<(String, String, Vec<u8>)>> {
    let exists: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'source_state')", [], |r| {
            r.get(0)
        })?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT source, key, value FROM source_state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}
