//! The durable queue: sealed records in SQLite (WAL), one contiguous, hash-chained sequence per
//! device stream. A single writer thread owns every change and group-commits concurrent
//! captures; readers use their own connection and never block it. [`Queue`] is the one handle
//! the rest of the core uses.
//!
//! Files: `writer.rs` (sealing, chaining, group commit, the cap), `reader.rs` (batches for
//! upload), `head.rs` (the chain head row), `schema.rs` (migrations), `recover/` (damage
//! detection and rebuild), `private_files.rs` (owner-only files).

mod head;
mod private_files;
mod reader;
pub mod recover;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::block_on::block_on;
use crate::chain::{Link, StreamId};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{AgentEvent, AttachmentHeader};
use crate::sources::{Mark, SourceState};
use crate::wire::Batch;
use reader::QueueReader;

pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub(crate) use writer::{Config, Outcome, Pending};
use writer::{Job, WriterHandle};

/// The queue as the agent, the uploader and recovery use it. Changes go to the single writer
/// thread and each async method returns once its change is durable (or refused); batches are
/// read on a connection of their own; [`Queue::snapshot`] is the state as of the last commit,
/// from memory. Cheap to clone: clones share one queue.
#[derive(Clone)]
pub struct Queue {
    writer: WriterHandle,
    reader: Arc<QueueReader>,
    snapshot: Arc<Mutex<Snapshot>>,
}

/// New records for the queue: ready plaintexts, or an attachment streamed from its file in
/// sealed chunks after `lead` records (the call a recording belongs to).
pub(crate) enum NewRecords {
    Records(Vec<Pending>),
    Attachment { lead: Vec<Pending>, header: Box<AttachmentHeader>, path: PathBuf, captured_ms: i64 },
}

impl Queue {
    /// Seals, chains and stores captured records; they count against the queue's cap.
    pub(crate) async fn append(&self, records: NewRecords) -> Result<Outcome> {
        self.append_marked(records, Vec::new()).await
    }

    /// [`Queue::append`], with a capture source's marks committed in the same transaction.
    pub(crate) async fn append_marked(&self, records: NewRecords, marks: Vec<Mark>) -> Result<Outcome> {
        self.ask(|reply| match records {
            NewRecords::Records(records) => Job::Capture { records, marks, reply },
            NewRecords::Attachment { lead, header, path, captured_ms } => {
                Job::Attachment { lead, header, path, captured_ms, marks, reply }
            }
        })
        .await
    }

    /// Saves a capture source's marks with nothing captured.
    pub(crate) async fn save_marks(&self, marks: Vec<Mark>, now_ms: i64) -> Result<()> {
        self.ask(|reply| Job::Agent { events: Vec::new(), meta: Vec::new(), marks, now_ms, reply }).await.map(|_| ())
    }

    /// What a capture source saved. Reads the store: background-only.
    pub(crate) fn source_state(&self, source: &str) -> Result<SourceState> {
        self.reader.source_state(source)
    }

    /// The keys of a capture source's entries with `after < key < before`, in key order.
    pub(crate) fn source_keys(&self, source: &str, after: &str, before: &str, limit: usize) -> Result<Vec<String>> {
        self.reader.source_keys(source, after, before, limit)
    }

    /// One saved value of a capture source.
    pub(crate) fn source_value(&self, source: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.reader.source_value(source, key)
    }

    /// Records agent events in the chain (before any policy, in the deferred table), and saves
    /// `meta` entries (the agent's evidence state) in the same commit. Not capped: evidence of a
    /// full queue must still be written.
    pub(crate) async fn record(&self, events: Vec<AgentEvent>, meta: Vec<(String, String)>, now_ms: i64) -> Result<Outcome> {
        self.ask(|reply| Job::Agent { events, meta, marks: Vec::new(), now_ms, reply }).await
    }

    /// Puts a policy's settings in force (identity, archive key, cap) and records its events.
    pub(crate) async fn configure(&self, config: Config, now_ms: i64) -> Result<Outcome> {
        self.ask(|reply| Job::Configure { config: Box::new(config), now_ms, reply }).await
    }

    /// The archive holds everything through `through`: delete it.
    pub async fn acknowledge(&self, through: u64) -> Result<()> {
        self.ask(|reply| Job::Ack { through, reply }).await.map(|_| ())
    }

    /// Records a clean stop and waits until the writer has released the store.
    pub(crate) async fn shut_down(&self) -> Result<()> {
        let result = self.ask(|reply| Job::Shutdown { reply }).await;
        self.writer.join();
        result.map(|_| ())
    }

    /// [`Queue::shut_down`] on the calling thread, for `Drop` and blocking callers; errors
    /// ignored (a writer already stopped has nothing left to record).
    pub(crate) fn shut_down_blocking(&self) {
        let _ = block_on(self.shut_down());
    }

    async fn ask(&self, make: impl FnOnce(oneshot::Sender<Result<Outcome>>) -> Job) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.writer.submit(make(tx))?;
        rx.await.map_err(|_| Error::new(ErrorKind::Closed, "the queue writer stopped"))?
    }

    /// The queue's state as of the last commit. Memory only.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stream written, once a policy named the device.
    pub fn stream(&self) -> Option<StreamId> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).stream.clone()
    }

    /// The next batch after what the archive acknowledged, at most `max_bytes` (at least one
    /// record). Background-only: it reads the database.
    pub fn read_batch(&self, max_bytes: usize) -> Result<Option<Batch>> {
        let snap = self.snapshot();
        match snap.stream {
            Some(stream) => self.reader.read_batch(&stream, snap.acked_through, snap.acked_link, max_bytes),
            None => Ok(None),
        }
    }

    /// A batch after any point of the chain (`after` and its link). Background-only.
    pub fn read_batch_after(&self, after: u64, after_link: Link, max_bytes: usize) -> Result<Option<Batch>> {
        match self.stream() {
            Some(stream) => self.reader.read_batch(&stream, after, after_link, max_bytes),
            None => Ok(None),
        }
    }

    /// The link this device holds for `seq`: the acknowledged head's, or a pending record's.
    /// Background-only (reads the database).
    pub fn link_of(&self, seq: u64) -> Result<Option<Link>> {
        let snap = self.snapshot();
        if seq == snap.acked_through {
            return Ok(Some(snap.acked_link));
        }
        self.reader.link_of(seq)
    }
}

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

/// Opens (creating if needed) the queue in `dir`: migrates, loads the head, starts the writer.
pub(crate) fn open(dir: &Path, now_ms: i64, storage_limit_bytes: Option<u64>) -> Result<(Queue, OpenInfo)> {
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
    let (queue, info) = start(conn, lock, &path, now_ms)?;
    Ok((queue, info))
}

/// Starts the writer on an open, migrated store and opens its reader.
fn start(conn: Connection, lock: std::fs::File, db: &Path, now_ms: i64) -> Result<(Queue, OpenInfo)> {
    let (writer, snapshot, info) = writer::start(conn, lock, now_ms)?;
    let reader = Arc::new(QueueReader::open(db)?);
    Ok((Queue { writer, reader, snapshot }, info))
}

/// Files of the store, for unenroll's shredding.
pub const STORE_FILES: [&str; 4] = [DB_FILE, "queue.sqlite3-wal", "queue.sqlite3-shm", LOCK_FILE];

/// File whose exclusive lock marks the directory as in use by one agent.
pub const LOCK_FILE: &str = "agent.lock";

/// Two agents writing one store would fork its chain: the second is refused.
/// The database file made (or tightened) owner-only before SQLite opens it, and its log files
/// tightened when an older store left them readable.
fn make_store_files_private(db: &Path) -> Result<()> {
    private_files::file(db)?; // closed at once: SQLite opens it itself
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        private_files::tighten_if_present(Path::new(&p))?;
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let file = private_files::file(&dir.join(LOCK_FILE))?;
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
    /// The key of capture sources' content digests (hex), saved under [`SOURCE_DIGEST_KEY`].
    pub source_digest_key: String,
}

/// `meta` key of the agent's compliance-evidence state.
pub const EVIDENCE_META_KEY: &str = "evidence";

/// `meta` key of the random per-store key of capture sources' content digests.
pub const SOURCE_DIGEST_KEY: &str = "source_digest_key";

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
