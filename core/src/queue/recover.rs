//! Damaged stores: detecting damage before the queue opens, and rebuilding a store from what
//! can still be read without losing any intact record or hiding any loss.
//!
//! **Detection** ([`check`], run by every open). Three checks, before anything writes:
//! - the write-ahead log is scanned frame by frame (SQLite's own format: salts and cumulative
//!   checksums). A torn tail — frames of a transaction that never committed, what a kill or a
//!   power cut leaves — is normal, and SQLite drops it. But when a frame in the middle is
//!   damaged, SQLite silently stops reading there and every transaction committed after it
//!   vanishes, acknowledged captures included. Committed frames of the current log found
//!   *after* a damaged one are that signature: the open is refused as [`ErrorKind::Corrupt`].
//!   (Rule: two or more commits after the damage. A single one could be the last transaction
//!   of a power cut, torn before its sync returned, so never acknowledged.)
//! - the database file's header and size (a truncated file), when the log does not hold the
//!   missing pages;
//! - `PRAGMA quick_check`: SQLite's structural check of every page, for stores up to
//!   [`FULL_CHECK_MAX_BYTES`] (milliseconds for the few megabytes a queue usually holds);
//!   bigger stores get the pages opening reads checked, so that a large queue still opens in
//!   milliseconds (its records are checked anyway as they are read for upload).
//!
//! Every refusal names the damaged file and says what to do. Record contents are checked as
//! they are read for upload (each chain link against its predecessor): a damaged record is
//! reported as a `QueueCorrupt` agent event and never sent or skipped.
//!
//! **Recovery** ([`recover`], `verbatim recover --state DIR`). The damaged files are moved
//! aside into `damaged-<ms>/` (never deleted), and a new store is built from a scratch copy:
//! every record whose row SQLite can still return is read one sequence number at a time
//! (a damaged page costs the rows on it, not the scan), and checked against the chain. Epochs,
//! the policy, the device id and the evidence state are copied.
//!
//! - Nothing lost (every pending record readable and verified, the head intact): the store is
//!   rebuilt with the *same* stream, records and links unchanged, and continues; an agent
//!   event (`QueueCorrupt`, detail `{"kind":"queue_recovered",...}`) records the rebuild.
//! - Records lost: the rebuilt store starts a **new stream**. The old one cannot continue:
//!   the archive refuses a gap (409, and it must — a gap is how it proves completeness), and
//!   reusing the lost sequence numbers for new content would fork the chain. Nothing is
//!   re-sealed (the device cannot read what it sealed): the new stream's first records are
//!   the recovery event, naming the old stream and the sequence ranges carried, lost, and
//!   carried but unopenable, followed by the intact records themselves — their original
//!   ciphertexts, links and epoch encapsulations, byte for byte — in one attachment, a
//!   *salvage container* ([`read_salvage`]). The archive verifies them against their own
//!   chain and opens them with its key. The archive sees the old stream end where its
//!   uploads ended, and the new stream say exactly why and what became of the rest.
//!
//! A record whose predecessor is lost cannot be opened (its seal binds the predecessor's
//! link); it is carried anyway (its successors verify against it) and listed as unopenable.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::oneshot;

use super::head::Head;
use super::writer::{Config, Job, Outcome};
use super::{DB_FILE, ROW_OVERHEAD};
use crate::chain::{self, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Channel, Direction, EventMeta};
use crate::record::{AgentEvent, AttachmentHeader, Record, RecordBody};
use crate::wire::{Batch, EpochInfo, WireRecord};

/// First bytes of a salvage container.
pub const SALVAGE_MAGIC: &[u8] = b"verbatim-salvage/v1\n";
/// MIME type of the salvage container attachment.
pub const SALVAGE_MIME: &str = "application/vnd.verbatim.salvage.v1";
/// Conversation id the salvage container is filed under in the new stream.
pub const RECOVERY_CONVERSATION: &str = "verbatim-recovery";
/// Bytes of records per batch inside a salvage container.
const SALVAGE_BATCH_BYTES: usize = 4 * 1024 * 1024;

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn shm_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    PathBuf::from(p)
}

/// The error every damaged store gives: kind `Corrupt`, the file, the problem, and the remedy.
fn damaged(file: &Path, problem: &str) -> Error {
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

fn examine(db: &Path, full: bool) -> Result<()> {
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
fn probe_open_path(db: &Path) -> Result<Vec<String>> {
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
fn quick_check(db: &Path) -> Result<Vec<String>> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    quick_check_conn(&conn)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The database file's header against its size: a truncated file, or no header at all.
fn check_db_header(db: &Path) -> Result<Option<String>> {
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
struct WalScan {
    /// The log holds at least one valid committed transaction.
    has_commits: bool,
    /// Committed transactions that SQLite would silently drop.
    damage: Option<String>,
}

/// SQLite's WAL checksum (https://sqlite.org/fileformat2.html#walformat): pairs of 32-bit words
/// in the byte order the log's magic number names.
fn wal_checksum(big_endian: bool, data: &[u8], mut s0: u32, mut s1: u32) -> (u32, u32) {
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

fn scan_wal(wal: &Path) -> Result<WalScan> {
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

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

fn ranges(seqs: &[u64]) -> Vec<SeqRange> {
    let mut out: Vec<SeqRange> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some(r) if r.last + 1 == s => r.last = s,
            _ => out.push(SeqRange { first: s, last: s }),
        }
    }
    out
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The store was moved aside and rebuilt (false: no damage found, nothing changed).
    pub rebuilt: bool,
    /// Where the damaged files are kept (never deleted).
    pub damaged_store: Option<PathBuf>,
    /// The damage found (the log scan, SQLite's integrity check, unreadable rows).
    pub damage: Vec<String>,
    /// The stream the damaged store wrote (when its head was readable).
    pub old_stream: Option<StreamId>,
    /// True when the rebuilt store starts a new stream (records were lost); false when the
    /// same stream continues.
    pub new_stream: bool,
    pub acked_through: Option<u64>,
    /// The last sequence number the damaged store recorded in its head.
    pub last_seq: Option<u64>,
    /// Pending records kept: in the same stream, or carried in the salvage container.
    pub recovered: Vec<SeqRange>,
    /// Of those, records the archive cannot open (the predecessor whose link their seal binds
    /// is lost); carried so that what follows them verifies.
    pub unopenable: Vec<SeqRange>,
    /// Records lost: unreadable, missing, failing the chain, or of an epoch that is lost.
    pub lost: Vec<SeqRange>,
    /// Records after this sequence number may have been written and lost without a trace (the
    /// head or the log was damaged).
    pub maybe_lost_after: Option<u64>,
    /// Attachment id of the salvage container in the new stream.
    pub salvage_attachment: Option<String>,
    pub salvage_bytes: u64,
    pub epochs_recovered: u64,
    pub policy_recovered: bool,
    pub deferred_events_recovered: u64,
}

/// Options for [`recover_with`].
#[derive(Default)]
pub struct RecoverOptions {
    /// The policy tree to use when the damaged store's own is unreadable (or to replace it).
    pub policy: Option<crate::policy::Value>,
    /// Rebuild even when no damage is found.
    pub force: bool,
}

/// Recovers the store in `dir` (see the module documentation). No agent may have it open.
pub fn recover(dir: &Path) -> Result<RecoveryReport> {
    recover_with(dir, RecoverOptions::default())
}

struct RowRead {
    seq: u64,
    epoch: u64,
    captured_ms: i64,
    link: Link,
    ciphertext: Vec<u8>,
}

/// What could be read from the damaged store.
struct Salvage {
    damage: Vec<String>,
    generated_device_id: Option<String>,
    evidence: Option<String>,
    head: Option<Head>,
    policy: Option<(String, String)>,
    deferred: Vec<(i64, Vec<u8>)>,
    epochs: Vec<(EpochInfo, i64, i64)>,
    /// Kept records, in order, with how each relates to its predecessor.
    kept: Vec<(RowRead, Anchor)>,
    lost: Vec<u64>,
    unopenable: Vec<u64>,
    maybe_lost_after: Option<u64>,
    first_seq: u64,
}

/// How a kept record joins the chain.
#[derive(Debug, Clone, Copy)]
enum Anchor {
    /// Its link verifies from its predecessor's (held or kept) link.
    Verified(Link),
    /// Its predecessor is lost: it starts a run the archive verifies from here.
    Unanchored,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// [`recover`] with options.
pub fn recover_with(dir: &Path, options: RecoverOptions) -> Result<RecoveryReport> {
    let db = dir.join(DB_FILE);
    if !db.exists() {
        return Err(Error::new(ErrorKind::Storage, format!("no agent store in {}", dir.display())));
    }
    let lock = super::lock_dir(dir)?;
    let now = now_ms();
    let aside = dir.join(format!("damaged-{now}"));
    let scratch = dir.join(format!(".recover-scratch-{now}"));
    fs::create_dir_all(&scratch)?;
    let result = (|| {
        // Read from a copy: SQLite would otherwise replay (and then delete) the damaged log.
        let wal_scan = scan_wal(&wal_path(&db))?;
        for (from, name) in [(db.clone(), DB_FILE.to_string()), (wal_path(&db), format!("{DB_FILE}-wal"))] {
            if from.exists() {
                fs::copy(&from, scratch.join(name))?;
            }
        }
        let mut salvage = read_salvage_from(&scratch.join(DB_FILE));
        if let Some(d) = &wal_scan.damage {
            salvage.damage.insert(0, format!("write-ahead log: {d}"));
            salvage.maybe_lost_after =
                Some(salvage.kept.last().map(|(r, _)| r.seq).unwrap_or(salvage.first_seq.saturating_sub(1)));
        }
        build(&db, &aside, lock, salvage, &options, now)
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Reads everything still readable from a copy of the damaged database.
fn read_salvage_from(db: &Path) -> Salvage {
    let mut s = Salvage {
        damage: Vec::new(),
        generated_device_id: None,
        evidence: None,
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
    match meta(super::EVIDENCE_META_KEY) {
        Ok(v) => s.evidence = v,
        Err(e) => s.damage.push(format!("evidence state unreadable: {e}")),
    }
    match super::stored_policy(&conn) {
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

fn quick_check_conn(conn: &Connection) -> Result<Vec<String>> {
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

fn link_of(bytes: Vec<u8>) -> Option<Link> {
    bytes.as_slice().try_into().ok()
}

type Deferred = Vec<(i64, Vec<u8>)>;

fn read_deferred(conn: &Connection) -> std::result::Result<Deferred, (Deferred, rusqlite::Error)> {
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

fn read_epochs(conn: &Connection, s: &mut Salvage) {
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

enum Probe {
    Row(RowRead),
    Missing,
    Unreadable(String),
}

fn probe(conn: &Connection, seq: u64) -> Probe {
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
enum Prev {
    /// Known genuine: the acknowledged head, or a record that verified.
    Strong(Link),
    /// Stored, not verified: its successor is checked against it.
    Weak(Link),
    /// The predecessor is lost.
    Lost,
}

/// Reads pending records one sequence number at a time and checks each against the chain.
fn read_records(conn: &Connection, s: &mut Salvage) {
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

/// A salvage container writer: entries of (anchor, batch), batches of at most 4 MB.
struct SalvageWriter {
    out: BufWriter<File>,
    bytes: u64,
}

impl SalvageWriter {
    fn entry(&mut self, prev_seq: u64, prev_link: Option<Link>, batch: &Batch) -> Result<()> {
        let header = serde_json::json!({ "prev_seq": prev_seq, "prev_link": prev_link.map(hex::encode) }).to_string();
        let body = batch.encode();
        for part in [&(header.len() as u32).to_be_bytes()[..], header.as_bytes(), &(body.len() as u32).to_be_bytes()[..], &body] {
            self.out.write_all(part)?;
            self.bytes += part.len() as u64;
        }
        Ok(())
    }
}

/// One run of carried records: a batch that continues the old chain at (`prev_seq`,
/// `prev_link`); `prev_link` is `None` when the predecessor was lost (its first record cannot
/// be opened, the rest verify from it).
#[derive(Debug, Clone)]
pub struct SalvageRun {
    pub prev_seq: u64,
    pub prev_link: Option<Link>,
    pub batch: Batch,
}

/// Decodes a salvage container (the attachment a recovered store's new stream carries).
pub fn read_salvage(bytes: &[u8]) -> Result<Vec<SalvageRun>> {
    let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("salvage container: {why}"));
    let mut rest = bytes.strip_prefix(SALVAGE_MAGIC).ok_or_else(|| bad("not a salvage container".into()))?;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        if rest.len() < 4 {
            return Err(bad("truncated".into()));
        }
        let n = be32(&rest[..4]) as usize;
        if rest.len() < 4 + n {
            return Err(bad("truncated".into()));
        }
        let part = rest[4..4 + n].to_vec();
        *rest = &rest[4 + n..];
        Ok(part)
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let header: serde_json::Value =
            serde_json::from_slice(&take(&mut rest)?).map_err(|e| bad(format!("entry header: {e}")))?;
        let batch = Batch::decode(&take(&mut rest)?).map_err(|e| bad(e.to_string()))?;
        let prev_link = match header["prev_link"].as_str() {
            Some(h) => Some(hex::decode(h).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| bad("entry link".into()))?),
            None => None,
        };
        let prev_seq = header["prev_seq"].as_u64().ok_or_else(|| bad("entry sequence".into()))?;
        out.push(SalvageRun { prev_seq, prev_link, batch });
    }
    Ok(out)
}

fn wait(rx: oneshot::Receiver<Result<Outcome>>) -> Result<Outcome> {
    crate::block_on::block_on(rx).map_err(|_| Error::new(ErrorKind::Closed, "the queue writer stopped"))?
}

/// Moves the damaged store aside and builds the new one.
fn build(db: &Path, aside: &Path, lock: File, s: Salvage, options: &RecoverOptions, now: i64) -> Result<RecoveryReport> {
    // The policy for the new store, its tree to persist (no secrets) and its fingerprint: the
    // operator's, or the one the damaged store kept (without a device token, as always).
    let (policy, tree_json, fingerprint) = match (&options.policy, &s.policy) {
        (Some(tree), _) => {
            let p = crate::policy::parse(tree).map_err(|r| Error::new(ErrorKind::PolicyRejected, r.to_string()))?.policy;
            let fingerprint = p.fingerprint_hex();
            (Some(p), Some(crate::policy::stored::persistable_json(tree)), fingerprint)
        }
        (None, Some((tree, fingerprint))) => {
            let (p, kept) = crate::policy::stored::parse_stored(tree)
                .ok_or_else(|| Error::new(ErrorKind::PolicyRejected, "the stored policy is unreadable or no longer validates"))?;
            (Some(p), Some(kept), fingerprint.clone())
        }
        (None, None) => (None, None, String::new()),
    };
    let head = s.head.as_ref();
    let old_stream = head.and_then(|h| h.stream.clone());
    let pending_any = head.is_some_and(|h| h.last_seq > h.acked_through) || !s.kept.is_empty() || !s.lost.is_empty();
    let lost_anything = !s.lost.is_empty() || !s.unopenable.is_empty() || s.maybe_lost_after.is_some();
    let device_of = |p: &crate::policy::Policy| p.device_id.clone().or_else(|| s.generated_device_id.clone());
    let same_identity = match (&old_stream, &policy) {
        (Some(old), Some(p)) => old.tenant == p.tenant_id && Some(old.device.clone()) == device_of(p),
        (None, _) => !pending_any,
        (Some(_), None) => true,
    };
    // The head must end where the kept records end, or records after them are unaccounted for.
    let head_matches = head.is_some_and(|h| match s.kept.last() {
        Some((r, _)) => r.seq == h.last_seq && r.link == h.last_link && s.kept.len() as u64 == h.last_seq - h.acked_through,
        None => h.last_seq == h.acked_through,
    });
    let native = !lost_anything && same_identity && (head_matches || (head.is_none() && !pending_any));
    let mut report = RecoveryReport {
        rebuilt: false,
        damaged_store: None,
        damage: s.damage.clone(),
        old_stream: old_stream.clone(),
        new_stream: !native,
        acked_through: head.map(|h| h.acked_through),
        last_seq: head.map(|h| h.last_seq),
        recovered: ranges(&s.kept.iter().map(|(r, _)| r.seq).collect::<Vec<_>>()),
        unopenable: ranges(&s.unopenable),
        lost: ranges(&s.lost),
        maybe_lost_after: s.maybe_lost_after,
        salvage_attachment: None,
        salvage_bytes: 0,
        epochs_recovered: s.epochs.len() as u64,
        policy_recovered: s.policy.is_some(),
        deferred_events_recovered: s.deferred.len() as u64,
    };
    if s.damage.is_empty() && !options.force {
        return Ok(report); // nothing to recover
    }
    if !native && !s.kept.is_empty() && policy.is_none() {
        return Err(Error::new(
            ErrorKind::NotConfigured,
            "the damaged store's policy is unreadable: give the policy (verbatim recover --policy FILE) so that its intact \
             records can be carried into the rebuilt store; nothing was changed",
        ));
    }

    // Move the damaged files aside; from here on the directory holds no store.
    fs::create_dir_all(aside)?;
    for from in [db.to_path_buf(), wal_path(db), shm_path(db)] {
        if from.exists() {
            let name = from.file_name().expect("store files have names");
            fs::rename(&from, aside.join(name))?;
        }
    }
    report.rebuilt = true;
    report.damaged_store = Some(aside.to_path_buf());
    let aside_name = aside.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();

    let mut conn = super::open_connection(db, false)?;
    super::schema::migrate(&mut conn)?;
    {
        let tx = conn.transaction()?;
        if let Some(id) = &s.generated_device_id {
            tx.execute("INSERT INTO meta (key, value) VALUES ('generated_device_id', ?1)", [id])?;
        }
        if let Some(ev) = &s.evidence {
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![super::EVIDENCE_META_KEY, ev])?;
        }
        if let (Some(json), Some(_)) = (&tree_json, &policy) {
            tx.execute(
                "INSERT INTO policy (id, tree, fingerprint, applied_ms) VALUES (1, ?1, ?2, ?3)",
                params![json, fingerprint, now],
            )?;
        }
        for (t, plaintext) in &s.deferred {
            tx.execute("INSERT INTO deferred_events (captured_ms, plaintext) VALUES (?1, ?2)", params![t, plaintext])?;
        }
        if native && let (Some(h), Some(stream)) = (head, &old_stream) {
            let mut bytes = 0u64;
            for (r, _) in &s.kept {
                tx.execute(
                    "INSERT INTO records (seq, epoch, captured_ms, link, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.seq as i64, r.epoch as i64, r.captured_ms, &r.link[..], &r.ciphertext],
                )?;
                bytes += r.ciphertext.len() as u64 + ROW_OVERHEAD;
            }
            for (e, created, first) in &s.epochs {
                tx.execute(
                    "INSERT INTO epochs (epoch, archive_key_id, encapsulation, created_ms, first_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![e.epoch as i64, e.archive_key_id, e.encapsulation, created, first],
                )?;
            }
            let last_epoch = s.epochs.iter().map(|(e, _, _)| e.epoch).max().unwrap_or(0).max(h.last_epoch);
            let rebuilt = Head {
                stream: Some(stream.clone()),
                pending_count: s.kept.len() as u64,
                pending_bytes: bytes,
                last_epoch,
                ..h.clone()
            };
            rebuilt.save(&tx)?;
        }
        tx.commit()?;
    }

    // The salvage container: every kept record, byte for byte, in runs.
    let salvage_path = aside.join("salvage.vsalvage");
    let mut salvage_id = None;
    if !native && !s.kept.is_empty() {
        let old = old_stream.clone().unwrap_or_else(|| StreamId {
            tenant: policy.as_ref().map(|p| p.tenant_id.clone()).unwrap_or_default(),
            device: policy.as_ref().and_then(device_of).unwrap_or_default(),
            stream: "unknown".into(),
        });
        let mut w = SalvageWriter { out: BufWriter::new(File::create(&salvage_path)?), bytes: 0 };
        w.out.write_all(SALVAGE_MAGIC)?;
        w.bytes += SALVAGE_MAGIC.len() as u64;
        let epochs_for = |records: &[WireRecord]| -> Vec<EpochInfo> {
            let mut out: Vec<EpochInfo> = Vec::new();
            for r in records {
                if !out.iter().any(|e| e.epoch == r.epoch)
                    && let Some((e, _, _)) = s.epochs.iter().find(|(e, _, _)| e.epoch == r.epoch)
                {
                    out.push(e.clone());
                }
            }
            out
        };
        let mut run: Vec<WireRecord> = Vec::new();
        let mut run_anchor: (u64, Option<Link>) = (0, None);
        let mut size = 0usize;
        let flush = |run: &mut Vec<WireRecord>, anchor: (u64, Option<Link>), w: &mut SalvageWriter| -> Result<()> {
            if !run.is_empty() {
                let batch = Batch { stream: old.clone(), epochs: epochs_for(run), records: std::mem::take(run) };
                w.entry(anchor.0, anchor.1, &batch)?;
            }
            Ok(())
        };
        for (r, a) in &s.kept {
            let continues =
                run.last().is_some_and(|l| l.seq + 1 == r.seq) && matches!(a, Anchor::Verified(_)) && size < SALVAGE_BATCH_BYTES;
            if !continues {
                flush(&mut run, run_anchor, &mut w)?;
                size = 0;
                run_anchor = (
                    r.seq - 1,
                    match a {
                        Anchor::Verified(l) => Some(*l),
                        Anchor::Unanchored => None,
                    },
                );
            }
            size += r.ciphertext.len() + 52;
            run.push(WireRecord { seq: r.seq, epoch: r.epoch, link: r.link, ciphertext: r.ciphertext.clone() });
        }
        flush(&mut run, run_anchor, &mut w)?;
        w.out.flush()?;
        w.out.get_ref().sync_all()?;
        report.salvage_bytes = w.bytes;
        let first = s.kept.first().map_or(0, |(r, _)| r.seq);
        let last = s.kept.last().map_or(0, |(r, _)| r.seq);
        salvage_id = Some(format!("recovered-{}-{first}-{last}", old.stream));
    }
    report.salvage_attachment = salvage_id.clone();

    // The recovery event, then (new stream) the salvage container, through the writer so that
    // they are sealed and chained like everything else.
    let detail = serde_json::json!({
        "kind": "queue_recovered",
        "old_stream": old_stream,
        "new_stream": report.new_stream,
        "acked_through": report.acked_through,
        "last_seq": report.last_seq,
        "recovered": report.recovered,
        "unopenable": report.unopenable,
        "lost": report.lost,
        "maybe_lost_after": report.maybe_lost_after,
        "salvage_attachment": salvage_id,
        "damaged_store": aside_name,
        "damage": report.damage.iter().take(10).collect::<Vec<_>>(),
    })
    .to_string();
    let events = vec![AgentEvent::QueueCorrupt { detail }];
    let (writer, _snapshot, info) = super::writer::start(conn, lock, now)?;
    let (tx, rx) = oneshot::channel();
    match &policy {
        Some(p) => {
            let salvage_bytes = report.salvage_bytes;
            let config = Config {
                tenant: p.tenant_id.clone(),
                device: p.device_id.clone().unwrap_or_else(|| info.generated_device_id.clone()),
                archive_public_key: p.archive_public_key,
                archive_key_id: p.archive_key_id.clone(),
                // Room for the container whatever the cap; the next open restores the policy's.
                queue_max_bytes: (p.queue_max_mb as u64 * 1024 * 1024).max(salvage_bytes * 2 + (8 << 20)),
                alert_percent: 100,
                tree_json: tree_json.clone().unwrap_or_default(),
                fingerprint: fingerprint.clone(),
                events,
            };
            writer.submit(Job::Configure { config: Box::new(config), now_ms: now, reply: tx })?;
        }
        None => writer.submit(Job::Agent { events, meta: Vec::new(), now_ms: now, reply: tx })?,
    }
    let configured = wait(rx);
    let attached = match (&configured, &salvage_id, &policy) {
        (Ok(_), Some(id), Some(p)) => {
            let size = fs::metadata(&salvage_path)?.len();
            let header = AttachmentHeader {
                meta: EventMeta {
                    channel: p.capture_channels.iter().next().copied().unwrap_or(Channel::Sms),
                    line: p.business_lines.iter().next().cloned().unwrap_or_else(|| "verbatim-agent".into()),
                    conversation_id: RECOVERY_CONVERSATION.into(),
                    source_id: id.clone(),
                    source_time_ms: now,
                },
                attachment_id: id.clone(),
                message_id: None,
                direction: Direction::Outbound,
                sender: "verbatim-agent".into(),
                file_name: format!("{id}.vsalvage"),
                mime_type: SALVAGE_MIME.into(),
                size,
            };
            let (tx, rx) = oneshot::channel();
            writer.submit(Job::Attachment {
                lead: Vec::new(),
                header: Box::new(header),
                path: salvage_path.clone(),
                captured_ms: now,
                reply: tx,
            })?;
            wait(rx).map(|_| ())
        }
        (Ok(_), _, _) => Ok(()),
        (Err(e), _, _) => Err(e.clone()),
    };
    let (tx, rx) = oneshot::channel();
    let _ = writer.submit(Job::Shutdown { reply: tx });
    let _ = wait(rx);
    writer.join();
    attached?;
    configured?;
    Ok(report)
}

/// The recovery events in a list of opened records (for tests and tools): the details of
/// every `QueueCorrupt` event of kind `queue_recovered`, parsed.
pub fn recovery_events<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<serde_json::Value> {
    records
        .into_iter()
        .filter_map(|r| match &r.body {
            RecordBody::Agent(AgentEvent::QueueCorrupt { detail }) => serde_json::from_str::<serde_json::Value>(detail).ok(),
            _ => None,
        })
        .filter(|v| v["kind"] == "queue_recovered")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Agent, AgentOptions};

    fn store(n: u32) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = crate::seal::generate_archive_keypair();
        let agent = Agent::open(dir.path(), AgentOptions::default()).unwrap();
        let tree = crate::synth::sample_policy("https://archive.acme-securities.test", &public, "tok", &[]);
        crate::block_on::block_on(agent.apply_policy(&tree)).unwrap();
        let mut w = crate::synth::Workload::new(crate::synth::WorkloadOptions::new(3, &dir.path().join("files"))).unwrap();
        for _ in 0..n {
            let _ = crate::block_on::block_on(agent.capture(w.next_event().unwrap().event));
        }
        let last: Vec<u8> = {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.query_row("SELECT ciphertext FROM records ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).unwrap()
        };
        crate::block_on::block_on(agent.close()).unwrap();
        (dir, last)
    }

    #[test]
    fn the_open_path_probe_finds_damage_on_the_pages_opening_reads() {
        let (dir, last) = store(40);
        let db = dir.path().join(DB_FILE);
        assert!(probe_open_path(&db).unwrap().is_empty());
        let bytes = fs::read(&db).unwrap();
        let page = bytes.windows(32).position(|w| w == &last[last.len() - 32..]).unwrap() / 4096;
        let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((page * 4096) as u64)).unwrap();
        f.write_all(&[0u8; 128]).unwrap();
        drop(f);
        assert_eq!(probe_open_path(&db).unwrap_err().kind, ErrorKind::Corrupt);
        assert_eq!(check(dir.path()).unwrap_err().kind, ErrorKind::Corrupt);
    }

    #[test]
    fn wal_checksums_follow_sqlite() {
        // Two words: s0 = 0 + x0 + 0, s1 = 0 + x1 + s0 (big-endian words).
        assert_eq!(wal_checksum(true, &[0, 0, 0, 1, 0, 0, 0, 2], 0, 0), (1, 3));
        assert_eq!(wal_checksum(false, &[1, 0, 0, 0, 2, 0, 0, 0], 0, 0), (1, 3));
        assert_eq!(
            ranges(&[1, 2, 3, 7, 9, 10]),
            [SeqRange { first: 1, last: 3 }, SeqRange { first: 7, last: 7 }, SeqRange { first: 9, last: 10 }]
        );
    }
}
