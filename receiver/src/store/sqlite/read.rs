//! Read-side queries shared by the cursor endpoint, verify and export. Every function takes a
//! connection so callers choose the transaction (export and verify read one snapshot).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use verbatim_core::chain::{Link, StreamId};
use verbatim_core::wire::{EpochInfo, WireRecord};

use super::writer::{self, bytes, link_from};
use crate::error::{Error, Result};
use crate::store::{Alert, ArchiveReader};

/// Opens a data directory's database for reading only (verify, export). Works while a
/// receiver is running on it.
pub fn open_read_only(data_dir: &Path) -> Result<Connection> {
    let db = super::db_path(data_dir);
    if !db.is_file() {
        return Err(Error::Store(format!("no archive database at {}", db.display())));
    }
    let c = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

pub fn stream_row(conn: &Connection, id: &StreamId) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM streams WHERE tenant = ?1 AND device = ?2 AND stream = ?3",
            params![id.tenant, id.device, id.stream],
            |r| r.get(0),
        )
        .optional()?)
}

/// Highest contiguous sequence held and its link. The writer never stores past a gap, so the
/// last record is the contiguous head.
pub fn cursor(conn: &Connection, id: &StreamId) -> Result<(u64, Link)> {
    let sid = stream_row(conn, id)?;
    writer::head(conn, sid, id)
}

/// Every stream held, in a stable order.
pub fn streams(conn: &Connection) -> Result<Vec<(i64, StreamId)>> {
    let mut stmt = conn.prepare("SELECT id, tenant, device, stream FROM streams ORDER BY tenant, device, stream")?;
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, StreamId { tenant: r.get(1)?, device: r.get(2)?, stream: r.get(3)? })))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The epochs held for a stream (few: one per rotation).
pub fn epochs(conn: &Connection, sid: i64) -> Result<Vec<EpochInfo>> {
    let mut stmt = conn.prepare("SELECT epoch, key_id, encapsulation FROM epochs WHERE stream_id = ?1 ORDER BY epoch")?;
    let rows = stmt.query_map([sid], |r| {
        Ok(EpochInfo {
            epoch: r.get::<_, i64>(0)? as u64,
            archive_key_id: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            encapsulation: bytes(r.get_ref(2)?),
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// When the newest record of a stream was received (receiver clock, ms).
pub fn last_received_ms(conn: &Connection, sid: i64) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT max(received_ms) FROM records WHERE stream_id = ?1", [sid], |r| r.get(0))?)
}

/// Alerts of a stream, oldest first.
pub fn alert_list(conn: &Connection, sid: i64) -> Result<Vec<Alert>> {
    let mut stmt = conn.prepare(
        "SELECT a.at_ms, a.kind, a.detail, r.repeats, r.last_ms, r.last_detail
         FROM alerts a LEFT JOIN alert_repeats r ON r.alert_id = a.id WHERE a.stream_id = ?1 ORDER BY a.id",
    )?;
    let rows = stmt.query_map([sid], |r| {
        let (at_ms, detail): (i64, String) = (r.get(0)?, r.get(2)?);
        let repeats: Option<i64> = r.get(3)?;
        Ok(Alert {
            at_ms,
            kind: r.get(1)?,
            count: 1 + repeats.unwrap_or(0).max(0) as u64,
            last_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(at_ms),
            last_detail: r.get::<_, Option<String>>(5)?.unwrap_or_else(|| detail.clone()),
            detail,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Alerts of a stream, oldest first: (at_ms, kind, detail) of the first of each kind.
pub fn alerts(conn: &Connection, sid: i64) -> Result<Vec<(i64, String, String)>> {
    Ok(alert_list(conn, sid)?.into_iter().map(|a| (a.at_ms, a.kind, a.detail)).collect())
}

/// Calls `f` with every record of a stream in sequence order, one row at a time: memory stays
/// bounded by the largest record whatever the stream's size. `f` returns false to stop.
pub fn for_each_record(conn: &Connection, sid: i64, mut f: impl FnMut(WireRecord) -> Result<bool>) -> Result<()> {
    let mut stmt = conn.prepare("SELECT seq, epoch, link, ciphertext FROM records WHERE stream_id = ?1 ORDER BY seq")?;
    let mut rows = stmt.query([sid])?;
    while let Some(row) = rows.next()? {
        let seq = row.get::<_, i64>(0)? as u64;
        let record = WireRecord {
            seq,
            epoch: row.get::<_, i64>(1)? as u64,
            // A link of the wrong length (tampering) becomes all zeros: it then fails chain
            // verification and opening like any altered link, instead of stopping the scan.
            link: link_from(bytes(row.get_ref(2)?), seq).unwrap_or([0; 32]),
            ciphertext: bytes(row.get_ref(3)?),
        };
        if !f(record)? {
            break;
        }
    }
    Ok(())
}

/// [`ArchiveReader`] over one read transaction of a data directory's database: verify and
/// export see one consistent snapshot, even while a receiver writes.
pub struct SqliteReader {
    conn: Connection,
    rows: HashMap<StreamId, i64>,
}

impl SqliteReader {
    pub fn open(data_dir: &Path) -> Result<SqliteReader> {
        let conn = open_read_only(data_dir)?;
        // A deferred transaction takes its snapshot at the first read and keeps it until the
        // connection closes (dropping the reader rolls it back).
        conn.execute_batch("BEGIN")?;
        Ok(SqliteReader { conn, rows: HashMap::new() })
    }

    fn row(&mut self, id: &StreamId) -> Result<i64> {
        if let Some(sid) = self.rows.get(id) {
            return Ok(*sid);
        }
        let sid = stream_row(&self.conn, id)?.ok_or_else(|| Error::Store("no such stream in the archive".into()))?;
        self.rows.insert(id.clone(), sid);
        Ok(sid)
    }
}

impl ArchiveReader for SqliteReader {
    fn streams(&mut self) -> Result<Vec<StreamId>> {
        let all = streams(&self.conn)?;
        self.rows = all.iter().map(|(sid, id)| (id.clone(), *sid)).collect();
        Ok(all.into_iter().map(|(_, id)| id).collect())
    }

    fn epochs(&mut self, id: &StreamId) -> Result<Vec<EpochInfo>> {
        let sid = self.row(id)?;
        epochs(&self.conn, sid)
    }

    fn alerts(&mut self, id: &StreamId) -> Result<Vec<Alert>> {
        let sid = self.row(id)?;
        alert_list(&self.conn, sid)
    }

    fn last_received_ms(&mut self, id: &StreamId) -> Result<Option<i64>> {
        let sid = self.row(id)?;
        last_received_ms(&self.conn, sid)
    }

    fn for_each_record(&mut self, id: &StreamId, f: &mut dyn FnMut(WireRecord) -> Result<bool>) -> Result<()> {
        let sid = self.row(id)?;
        for_each_record(&self.conn, sid, f)
    }
}
