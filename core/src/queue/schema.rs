//! The queue's SQLite schema and its migrations. `PRAGMA user_version` holds the version; each
//! migration runs once, in order, in its own transaction. Never edit a released migration: add one.

use rusqlite::Connection;

use crate::error::{Error, ErrorKind, Result};

const MIGRATIONS: &[&str] = &[
    // 1: first release.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    -- The head of the one device stream this store writes, and the queue's accounting, kept
    -- in step with every commit so that opening never has to scan the records.
    CREATE TABLE chain_state (
        id              INTEGER PRIMARY KEY CHECK (id = 1),
        tenant          TEXT,
        device          TEXT,
        stream          TEXT,
        last_seq        INTEGER NOT NULL,
        last_link       BLOB NOT NULL,
        acked_through   INTEGER NOT NULL,
        acked_link      BLOB NOT NULL,
        pending_count   INTEGER NOT NULL,
        pending_bytes   INTEGER NOT NULL,
        last_epoch      INTEGER NOT NULL,
        last_captured_ms INTEGER NOT NULL
    );

    -- Only the HPKE encapsulation of each epoch key is stored, never the key.
    CREATE TABLE epochs (
        epoch          INTEGER PRIMARY KEY,
        archive_key_id TEXT NOT NULL,
        encapsulation  BLOB NOT NULL,
        created_ms     INTEGER NOT NULL,
        first_seq      INTEGER NOT NULL
    );

    -- Sealed records awaiting acknowledgement by the archive.
    CREATE TABLE records (
        seq         INTEGER PRIMARY KEY,
        epoch       INTEGER NOT NULL,
        captured_ms INTEGER NOT NULL,
        link        BLOB NOT NULL,
        ciphertext  BLOB NOT NULL
    );

    -- The policy in force, as the MDM pushed it.
    CREATE TABLE policy (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        tree        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        applied_ms  INTEGER NOT NULL
    );

    -- Agent events that happened while no policy (so no archive key) was in force. They hold
    -- no captured content, and move into the sealed chain as soon as a policy is applied.
    CREATE TABLE deferred_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        captured_ms INTEGER NOT NULL,
        plaintext   BLOB NOT NULL
    );

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: what each capture source has seen (provider row ids, guids, edit times, keyed hashes;
    // never text), written in the same transaction as the records captured from it.
    "
    CREATE TABLE source_state (
        source TEXT NOT NULL,
        key    TEXT NOT NULL,
        value  BLOB NOT NULL,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID;
    ",
];

pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database to the current schema version.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(Error::new(
            ErrorKind::Storage,
            format!("queue schema version {version} is newer than this agent understands ({CURRENT_VERSION}); update the app"),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
