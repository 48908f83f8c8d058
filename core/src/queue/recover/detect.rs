//! Detecting damage before the queue opens (see the module docs of `recover`).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::wal_path;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::DB_FILE;

/// The error every damaged store gives: kind `Corrupt`, the file, the problem, and the remedy.
pub(super) fn damaged(file: &Path, problem: &str) -> Error {
    let dir = file.parent().map(|d| d.display().to_string()).unwrap_or_default();
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "{}: {problem}. The queue store is damaged and was not opened; nothing was changed. Recover it \
             (`verbatim recover --state {dir}`, or queue::recover::recover): the damaged files are kept aside \
             and every intact record is carried into a rebuilt store",
            file.display()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------------------------

/// Checks the store in `dir` for damage without changing it beyond what opening it would
/// (SQLite replays a healthy log). `Ok(())` when there is no store yet.
/// Unlike the check at open, it always verifies every page, whatever the store's size.
pub fn check(dir: &Path) -> Result<()> {
    examine(&dir.join(DB_FILE), true)
}

/// Run by `queue::open` before the store is opened for writing.
pub(crate) fn preflight(db: &Path) -> Result<()> {
    examine(db, false)
}

pub(super) fn examine(db: &Path, full: bool) -> Result<()> {
    let wal = wal_path(db);
    let scan = scan_wal(&wal)?;
    if let Some(problem) = &scan.damage {
        return Err(damaged(&wal, problem));
    }
    if !scan.has_commits
        && let Some(problem) = check_db_header(db)?
    {
        return Err(damaged(db, &problem));
    }
    let size = fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    if size == 0 && !scan.has_commits {
        return Ok(()); // a new store
    }
    // Every page when that is cheap; on a big store, the pages opening reads (its records are
    // checked as they are read for upload), so that a large queue still opens in milliseconds.
    let checked = if full || size <= FULL_CHECK_MAX_BYTES { quick_check(db) } else { probe_open_path(db) };
    match checked {
        Ok(problems) if problems.is_empty() => Ok(()),
        Ok(problems) => Err(damaged(db, &format!("integrity check failed: {}", problems.join("; ")))),
        Err(e) if e.kind == ErrorKind::Corrupt => {
            Err(damaged(db, &format!("integrity check failed: {}", e.detail.trim_start_matches("local store: "))))
        }
        Err(e) => Err(e),
    }
}

/// Stores up to this size get SQLite's full structural check at every open (a few
/// milliseconds for the few megabytes a queue usually holds); bigger ones a targeted one.
pub const FULL_CHECK_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// Reads what opening the store reads (schema, head, metadata, policy, epochs, the first and
/// last records): SQLite checks every page it reads on the way.
pub(super) fn probe_open_path(db: &Path) -> Result<Vec<String>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    for sql in [
        "SELECT count(*) FROM sqlite_schema",
        "SELECT count(*) FROM (SELECT * FROM chain_state)",
        "SELECT count(*) FROM (SELECT * FROM meta)",
        "SELECT count(*) FROM (SELECT * FROM policy)",
        "SELECT count(*) FROM (SELECT * FROM epochs)",
        "SELECT count(*) FROM (SELECT * FROM deferred_events)",
        "SELECT count(*) FROM (SELECT * FROM records ORDER BY seq LIMIT 1)",
        "SELECT count(*) FROM (SELECT * FROM records ORDER BY seq DESC LIMIT 1)",
    ] {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))?;
    }
    Ok(Vec::new())
}

/// `PRAGMA quick_check`: the first problems found, none when the database is sound.
pub(super) fn quick_check(db: &Path) -> Result<Vec<String>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    quick_check_conn(&conn)
}

pub(super) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The database file's header against its size: a truncated file, or no header at all.
pub(super) fn check_db_header(db: &Path) -> Result<Option<String>> {
    let mut f = match File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    if len < 100 {
        return Ok(Some(format!("the file is {len} bytes long, shorter than a database header (truncated)")));
    }
    let mut h = [0u8; 100];
    f.read_exact(&mut h)?;
    if &h[..16] != b"SQLite format 3\0" {
        return Ok(Some("the database header is damaged (not an SQLite database any more)".into()));
    }
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536u64,
        n => n as u64,
    };
    if page_size < 512 || !page_size.is_power_of_two() {
        return Ok(Some(format!("the database header is damaged (page size {page_size})")));
    }
    let pages = be32(&h[28..32]) as u64;
    if be32(&h[24..28]) == be32(&h[92..96]) && pages * page_size > len {
        return Ok(Some(format!(
            "the file is truncated: its header counts {pages} pages ({} bytes) but the file holds {len} bytes",
            pages * page_size
        )));
    }
    if len % page_size != 0 {
        return Ok(Some(format!("the file is {len} bytes long, not a whole number of {page_size}-byte pages (truncated)")));
    }
    Ok(None)
}

/// What a scan of the write-ahead log found.
#[derive(Debug, Default)]
pub(super) struct WalScan {
    /// The log holds at least one valid committed transaction.
    pub(super) has_commits: bool,
    /// Committed transactions that SQLite would silently drop.
    pub(super) damage: Option<String>,
}

/// SQLite's WAL checksum (https://sqlite.org/fileformat2.html#walformat): pairs of 32-bit words
/// in the byte order the log's magic number names.
pub(super) fn wal_checksum(big_endian: bool, data: &[u8], mut s0: u32, mut s1: u32) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (u32::from_be_bytes(pair[..4].try_into().expect("4")), u32::from_be_bytes(pair[4..].try_into().expect("4")))
        } else {
            (u32::from_le_bytes(pair[..4].try_into().expect("4")), u32::from_le_bytes(pair[4..].try_into().expect("4")))
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

pub(super) fn scan_wal(wal: &Path) -> Result<WalScan> {
    let mut bytes = Vec::new();
    match File::open(wal) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(WalScan::default()),
        Err(e) => return Err(e.into()),
    }
    if bytes.len() < 32 {
        return Ok(WalScan::default());
    }
    let magic = be32(&bytes[0..4]);
    let big_endian = magic & 1 == 1;
    let page_size = match be32(&bytes[8..12]) {
        n if (512..=65536).contains(&n) && n.is_power_of_two() => n as usize,
        _ => 0,
    };
    let (salt1, salt2) = (be32(&bytes[16..20]), be32(&bytes[20..24]));
    let header_ok = (magic & !1) == 0x377f_0682
        && page_size != 0
        && wal_checksum(big_endian, &bytes[..24], 0, 0) == (be32(&bytes[24..28]), be32(&bytes[28..32]));
    let frame = 24 + page_size.max(512);
    let frames = (bytes.len() - 32) / frame;
    // Frames of the current log generation (its salts) that are commits.
    let is_current = |i: usize| {
        let f = &bytes[32 + i * frame..32 + (i + 1) * frame];
        be32(&f[8..12]) == salt1 && be32(&f[12..16]) == salt2
    };
    let is_commit = |i: usize| be32(&bytes[32 + i * frame + 4..32 + i * frame + 8]) != 0;
    if !header_ok {
        if page_size == 0 {
            return Ok(WalScan::default());
        }
        let commits = (0..frames).filter(|&i| is_current(i) && is_commit(i)).count();
        return Ok(WalScan {
            has_commits: false,
            damage: (commits >= 2)
                .then(|| format!("the log's header is damaged; SQLite would ignore {commits} committed transactions in it")),
        });
    }
    let mut sum = (be32(&bytes[24..28]), be32(&bytes[28..32]));
    let mut valid_commits = 0usize;
    let mut first_bad = None;
    for i in 0..frames {
        let f = &bytes[32 + i * frame..32 + (i + 1) * frame];
        if !is_current(i) {
            first_bad = Some(i);
            break;
        }
        let s = wal_checksum(big_endian, &f[..8], sum.0, sum.1);
        let s = wal_checksum(big_endian, &f[24..], s.0, s.1);
        if s != (be32(&f[16..20]), be32(&f[20..24])) {
            first_bad = Some(i);
            break;
        }
        sum = s;
        if is_commit(i) {
            valid_commits += 1;
        }
    }
    let damage = first_bad.and_then(|bad| {
        let later = (bad + 1..frames).filter(|&i| is_current(i) && is_commit(i)).count();
        (later >= 2).then(|| {
            format!("frame {} of the write-ahead log is damaged; SQLite would silently drop the {later} transactions committed after it", bad + 1)
        })
    });
    Ok(WalScan { has_commits: valid_commits > 0, damage })
}

/// SQLite's structural check of an open connection: the problems it lists, none when intact.
pub(super) fn quick_check_conn(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(10)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        let line = row?;
        if line != "ok" {
            out.push(line);
        }
    }
    Ok(out)
}
