//! The archive database schema and its migrations (`PRAGMA user_version` counts the ones
//! applied). Records, epochs and alerts are append-only: triggers refuse UPDATE and DELETE,
//! so even a bug in this crate cannot rewrite history through SQL. The one mutable table,
//! `alert_repeats`, only counts up: its triggers refuse DELETE and any UPDATE that does not
//! raise the count.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Each entry moves the schema from version `i` to `i + 1`. Never edit one that shipped.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE streams (
        id          INTEGER PRIMARY KEY,
        tenant      TEXT NOT NULL,
        device      TEXT NOT NULL,
        stream      TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        UNIQUE (tenant, device, stream)
    );
    CREATE TABLE epochs (
        stream_id      INTEGER NOT NULL REFERENCES streams(id),
        epoch          INTEGER NOT NULL,
        key_id         TEXT NOT NULL,
        encapsulation  BLOB NOT NULL,
        received_ms    INTEGER NOT NULL,
        PRIMARY KEY (stream_id, epoch)
    );
    CREATE TABLE records (
        stream_id    INTEGER NOT NULL REFERENCES streams(id),
        seq          INTEGER NOT NULL,
        epoch        INTEGER NOT NULL,
        link         BLOB NOT NULL,
        ciphertext   BLOB NOT NULL,
        received_ms  INTEGER NOT NULL,
        PRIMARY KEY (stream_id, seq)
    );
    CREATE TABLE alerts (
        id         INTEGER PRIMARY KEY,
        stream_id  INTEGER NOT NULL REFERENCES streams(id),
        at_ms      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX alerts_by_stream ON alerts (stream_id, id);
    CREATE TRIGGER records_append_only_u BEFORE UPDATE ON records BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
    CREATE TRIGGER records_append_only_d BEFORE DELETE ON records BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
    CREATE TRIGGER epochs_append_only_u BEFORE UPDATE ON epochs BEGIN SELECT RAISE(ABORT, 'epochs are append-only'); END;
    CREATE TRIGGER epochs_append_only_d BEFORE DELETE ON epochs BEGIN SELECT RAISE(ABORT, 'epochs are append-only'); END;
    CREATE TRIGGER alerts_append_only_u BEFORE UPDATE ON alerts BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
    CREATE TRIGGER alerts_append_only_d BEFORE DELETE ON alerts BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
    ",
    // 2: repeated alerts are counted, not added. The first alert of a kind on a stream keeps
    // its own row in `alerts`; later ones of that kind raise `repeats` of that row and set when
    // the last came and its detail. Finding the first row of a kind needs the index.
    "
    CREATE INDEX alerts_by_kind ON alerts (stream_id, kind, id);
    CREATE TABLE alert_repeats (
        alert_id     INTEGER PRIMARY KEY REFERENCES alerts(id),
        repeats      INTEGER NOT NULL CHECK (repeats > 0),
        last_ms      INTEGER NOT NULL,
        last_detail  TEXT NOT NULL
    );
    CREATE TRIGGER alert_repeats_only_grow BEFORE UPDATE ON alert_repeats
        WHEN NEW.alert_id IS NOT OLD.alert_id OR NEW.repeats <= OLD.repeats
        BEGIN SELECT RAISE(ABORT, 'alert counts only grow'); END;
    CREATE TRIGGER alert_repeats_kept BEFORE DELETE ON alert_repeats BEGIN SELECT RAISE(ABORT, 'alert counts are never deleted'); END;
    ",
];

/// Configures the writer connection and brings the schema up to date.
pub fn prepare_writer(conn: &mut Connection) -> Result<()> {
    // WAL + synchronous=FULL: a COMMIT returns only once the WAL is fsynced, so an answer
    // sent after it never acknowledges something a power cut could take back.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store(format!("could not enable WAL (journal mode is {mode})")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    migrate(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    apply_migrations(conn, MIGRATIONS, "database").map_err(|e| match e {
        Error::Config(m) => Error::Store(m),
        other => other,
    })
}

/// Applies `migrations` beyond the database's `user_version`, each in its own transaction.
/// A database newer than this build is refused (as `Error::Config`, naming `what`).
pub(crate) fn apply_migrations(conn: &mut Connection, migrations: &[&str], what: &str) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > migrations.len() {
        return Err(Error::Config(format!(
            "{what} schema version {version} is newer than this receiver knows ({})",
            migrations.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
