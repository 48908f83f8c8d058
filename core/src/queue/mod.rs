//! The durable queue: sealed records in SQLite (WAL), one contiguous, hash-chained sequence per
//! device stream. A single writer thread owns every change and group-commits concurrent
//! captures; readers use their own connection and never block it.

mod head;
mod private_files;
pub mod recover;
mod schema;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::chain::{self, ChainedRecord, Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::wire::{Batch, EpochInfo, WIRE_RECORD_OVERHEAD, WireRecord};

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub(crate) use writer::{Config, Job, Outcome, Pending, Reply, WriterHandle};

/// Group commits of every queue in this process since it started (see [`commit_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Jobs (captures, agent events, acknowledgements, ...) they carried.
    pub jobs: u64,
}

/// The process's group-commit counters: `jobs / transactions` is the average group size.
pub fn commit_stats() -> CommitStats {
    use std::sync::atomic::Ordering::Relaxed;
    CommitStats { transactions: writer::GROUPS_COMMITTED.load(Relaxed), jobs: writer::JOBS_COMMITTED.load(Relaxed) }
}

/// File name of the queue database inside the agent's data directory.
pub const DB_FILE: &str = "queue.sqlite3";

/// Bytes a record costs in the queue besides its ciphertext (key, epoch, time, link, SQLite cell).
pub const ROW_OVERHEAD: u64 = 64;

/// The queue's state as of the last commit; status reads it without touching the disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub stream: Option<StreamId>,
    pub last_seq: u64,
    pub acked_through: u64,
    pub acked_link: Link,
    pub pending_count: u64,
    pub pending_bytes: u64,
    pub oldest_pending_ms: Option<i64>,
    pub epoch: Option<u64>,
    pub queue_max_bytes: u64,
    pub alert_raised: bool,
    pub full: bool,
    pub policy_fingerprint: Option<String>,
    pub deferred_events: u64,
}

/// Bytes the WAL file is cut back to once its content is checkpointed. SQLite checkpoints at
/// about 4 MB of WAL; twice that leaves ordinary group commits alone (cutting the file back
/// every time would make each next commit grow it again) and catches large attachments.
pub const WAL_SIZE_LIMIT: i64 = 8 * 1024 * 1024;

pub(crate) fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        // WAL lets readers work beside the writer; FULL makes every commit durable (the WAL is
        // synced at each commit), which is what "capture returns once durable" promises.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(ErrorKind::Storage, format!("queue needs WAL journaling, got {mode}")));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Zero what a write removes from a page it rewrites anyway (no extra I/O): the bytes of
        // a replaced policy row do not linger beside the new one.
        conn.pragma_update(None, "secure_delete", "FAST")?;
        // A large attachment is one transaction, and the WAL file would otherwise keep its
        // size for as long as the agent runs: truncated back to this when it restarts.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    }
    Ok(conn)
}

/// The persisted policy tree (JSON) and its fingerprint, if a policy was ever applied.
pub(crate) fn stored_policy(conn: &Connection) -> Result<Option<(String, String)>> {
    Ok(conn.query_row("SELECT tree, fingerprint FROM policy WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

/// Reads pending records for upload, on its own connection.
pub struct QueueReader {
    conn: Mutex<Connection>,
}

struct Row {
    seq: u64,
    epoch: u64,
    link: Link,
    ciphertext: Vec<u8>,
}

impl ChainedRecord for Row {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn epoch(&self) -> u64 {
        self.epoch
    }
    fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
    fn link(&self) -> &Link {
        &self.link
    }
}

impl QueueReader {
    pub(crate) fn open(path: &Path) -> Result<QueueReader> {
        // Opening runs no statement: a reader that never reads does not join the WAL, so the
        // writer, closing last, checkpoints and removes it.
        Ok(QueueReader { conn: Mutex::new(open_connection(path, true)?) })
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
            records.push(WireRecord { seq: row.seq, epoch: row.epoch, link: row.link, ciphertext: row.ciphertext });
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

fn decode_row(row: &rusqlite::Row<'_>) -> Result<Row> {
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
    Ok(Row { seq: seq as u64, epoch: epoch as u64, link, ciphertext })
}

/// Opens (creating if needed) the queue in `dir`: migrates, loads the head, starts the writer.
pub(crate) fn open(
    dir: &Path,
    now_ms: i64,
    storage_limit_bytes: Option<u64>,
) -> Result<(WriterHandle, QueueReader, Arc<Mutex<Snapshot>>, OpenInfo)> {
    private_files::dir(dir)?;
    let lock = lock_dir(dir)?;
    let path = dir.join(DB_FILE);
    recover::preflight(&path)?; // damage found before anything writes: a clear Corrupt error
    make_store_files_private(&path)?;
    let mut conn = open_connection(&path, false)?;
    if let Some(limit) = storage_limit_bytes {
        // SQLite then fails writes with SQLITE_FULL exactly as on a full disk.
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
        conn.pragma_update(None, "max_page_count", (limit / page_size.max(1)).max(1) as i64)?;
    }
    schema::migrate(&mut conn)?;
    let (handle, snapshot, info) = writer::start(conn, lock, now_ms)?;
    let reader = QueueReader::open(&path)?;
    Ok((handle, reader, snapshot, info))
}

/// Files of the store, for unenroll's shredding.
pub const STORE_FILES: [&str; 4] = [DB_FILE, "queue.sqlite3-wal", "queue.sqlite3-shm", LOCK_FILE];

/// File whose exclusive lock marks the directory as in use by one agent.
pub const LOCK_FILE: &str = "agent.lock";

/// Two agents writing one store would fork its chain: the second is refused.
/// The database file made (or tightened) owner-only before SQLite opens it, and its log files
/// tightened when an older store left them readable.
fn make_store_files_private(db: &Path) -> Result<()> {
    private_files::file(db)?;
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        private_files::tighten_if_present(Path::new(&p))?;
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    private_files::file(&dir.join(LOCK_FILE))?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(Error::new(ErrorKind::Storage, format!("another agent is using the data directory {}", dir.display())))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// What opening the queue found.
#[derive(Debug, Clone)]
pub(crate) struct OpenInfo {
    /// The previous run did not close cleanly.
    pub after_crash: bool,
    /// Device id generated for this install, used when the policy names none.
    pub generated_device_id: String,
    /// Latest capture time recorded before this run (to notice a clock set backwards).
    pub last_captured_ms: i64,
    pub stored_policy: Option<(String, String)>,
    /// The agent's compliance-evidence state (JSON), saved under [`EVIDENCE_META_KEY`].
    pub evidence_json: Option<String>,
}

/// `meta` key of the agent's compliance-evidence state.
pub const EVIDENCE_META_KEY: &str = "evidence";

/// A read-only look at a store, for operators: no lock taken, nothing written, no content.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub schema_version: u32,
    pub tenant: Option<String>,
    pub device: Option<String>,
    pub stream: Option<String>,
    pub last_seq: u64,
    pub acked_through: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub oldest_pending_ms: Option<i64>,
    pub epochs_held: u64,
    pub current_epoch: u64,
    pub deferred_agent_events: u64,
    pub policy_fingerprint: Option<String>,
    /// The last run did not close cleanly (or an agent is running now).
    pub running_or_crashed: bool,
}

pub fn inspect(dir: &Path) -> Result<Inspection> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(Error::new(ErrorKind::Storage, format!("no agent store in {}", dir.display())));
    }
    let conn = open_connection(&path, true)?;
    let schema_version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let head = head::Head::read(&conn)?.unwrap_or_else(head::Head::empty);
    let (tenant, device, stream) = match head.stream {
        Some(id) => (Some(id.tenant), Some(id.device), Some(id.stream)),
        None => (None, None, None),
    };
    let (last_seq, acked_through, pending_records, pending_bytes, current_epoch) =
        (head.last_seq, head.acked_through, head.pending_count, head.pending_bytes, head.last_epoch);
    let count = |sql: &str| -> Result<u64> { Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
    Ok(Inspection {
        schema_version,
        tenant,
        device,
        stream,
        last_seq,
        acked_through,
        pending_records,
        pending_bytes,
        oldest_pending_ms: conn.query_row("SELECT captured_ms FROM records ORDER BY seq LIMIT 1", [], |r| r.get(0)).optional()?,
        epochs_held: count("SELECT count(*) FROM epochs")?,
        current_epoch,
        deferred_agent_events: count("SELECT count(*) FROM deferred_events")?,
        policy_fingerprint: stored_policy(&conn)?.map(|(_, f)| f),
        running_or_crashed: conn
            .query_row("SELECT value FROM meta WHERE key = 'running'", [], |r| r.get::<_, String>(0))
            .optional()?
            .as_deref()
            == Some("1"),
    })
}
