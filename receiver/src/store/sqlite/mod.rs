//! The embedded store: SQLite (WAL, synchronous=FULL) in the data directory, for one receiver.
//! One writer thread applies batches (see [`writer`]); readers (cursor queries, verify,
//! export) use their own read-only connections and see committed data only.

pub mod read;
pub(crate) mod schema;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;
use verbatim_core::chain::{Link, StreamId};
use verbatim_core::wire::Batch;

use super::{ArchiveStore, BoxFuture, Mode, Outcome, StoreRules};
use crate::error::{Error, Result};
pub use read::SqliteReader;

/// The database file inside a data directory.
pub const DB_FILE: &str = "archive.db";
/// Held (locked) by the receiver that owns a data directory.
pub const LOCK_FILE: &str = "receiver.lock";
/// Read connections kept for reuse.
const READ_POOL: usize = 8;

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// `archive.db-wal`, `archive.db-shm`.
fn sqlite_side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub struct SqliteStore {
    db: PathBuf,
    tx: Mutex<Option<mpsc::Sender<writer::Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<ReadPool>,
}

/// Read-only connections kept for the cursor answer.
struct ReadPool {
    db: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn cursor(&self, id: &StreamId) -> Result<(u64, Link)> {
        let conn = self.take()?;
        let r = read::cursor(&conn, id);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < READ_POOL {
            idle.push(conn);
        }
        r
    }

    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(c)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, takes the directory's lock and
    /// starts the writer thread, which applies `rules` to every batch.
    pub fn open(data_dir: &Path, rules: StoreRules) -> Result<SqliteStore> {
        SqliteStore::open_with_limit(data_dir, rules, None)
    }

    /// [`Store::open`] with the database capped at `storage_limit_bytes` (see
    /// `Limits::storage_limit_bytes`): an emulated full disk for tests.
    pub fn open_with_limit(data_dir: &Path, rules: StoreRules, storage_limit_bytes: Option<u64>) -> Result<SqliteStore> {
        if rules.accepted_keys.is_empty() {
            return Err(Error::Config("the archive store needs at least one accepted archive key".into()));
        }
        if rules.max_streams_per_device == 0 {
            return Err(Error::Config("max_streams_per_device must be at least 1".into()));
        }
        // Owner only: the directory 0700, the lock, the database and its WAL files 0600.
        // Created so, and narrowed if an older receiver (or a umask) left them wider.
        crate::fsutil::create_private_dir(data_dir)?;
        crate::fsutil::restrict_dir(data_dir)?;
        let lock_path = data_dir.join(LOCK_FILE);
        crate::fsutil::create_private_file(&lock_path)?;
        crate::fsutil::restrict_file(&lock_path)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io_path("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked(data_dir.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io_path("lock", &lock_path, e)),
        }
        let db = db_path(data_dir);
        // SQLite gives its -wal and -shm files the database file's mode.
        crate::fsutil::create_private_file(&db)?;
        for file in [db.clone(), sqlite_side_file(&db, "-wal"), sqlite_side_file(&db, "-shm")] {
            crate::fsutil::restrict_file(&file)?;
        }
        let mut conn = Connection::open(&db)?;
        schema::prepare_writer(&mut conn)?;
        if let Some(limit) = storage_limit_bytes {
            // Disk-full emulation: SQLite refuses to grow the file past this many pages and
            // fails the write with SQLITE_FULL, as a full file system makes it do. (A cap below
            // the current size holds the database at its current size.)
            let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (limit / page_size.max(1) as u64).max(1);
            conn.pragma_update(None, "max_page_count", i64::try_from(pages).unwrap_or(i64::MAX))?;
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("verbatim-archive-writer".into())
            .spawn(move || writer::run(conn, rx, lock, rules))
            .map_err(|e| Error::io("start the writer thread", e))?;
        let readers = Arc::new(ReadPool { db: db.clone(), idle: Mutex::new(Vec::new()) });
        Ok(SqliteStore { db, tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), readers })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Applies `batch`; resolves once the outcome is durable (or rolled back, in `RollBack`).
    pub async fn submit(&self, batch: Batch, mode: Mode) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        let sender = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::Closed)?;
        sender.send(writer::Job { batch, mode, reply }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Stops the writer after the batches already submitted and waits for it: the database
    /// is closed and the directory unlocked when this returns. Blocking.
    pub fn close(&self) {
        self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl ArchiveStore for SqliteStore {
    fn submit(&self, batch: Batch, mode: Mode) -> BoxFuture<'_, Result<Outcome>> {
        Box::pin(SqliteStore::submit(self, batch, mode))
    }

    fn cursor(&self, id: StreamId) -> BoxFuture<'_, Result<(u64, Link)>> {
        let readers = self.readers.clone();
        Box::pin(async move { tokio::task::spawn_blocking(move || readers.cursor(&id)).await.map_err(|_| Error::Closed)? })
    }

    fn close(&self) {
        SqliteStore::close(self);
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}
