//! The key vault's schema and migrations (`PRAGMA user_version` counts the ones applied).
//!
//! What the vault holds is what makes records readable once an archive private key retires:
//! content keys (version 2 epochs) and epoch keys (version 1 epochs), each wrapped under the
//! vault key. Deleting a row is what erasure is, so deletion is overwritten on disk
//! (`secure_delete`) and the write-ahead log is truncated after it. The audit log and the
//! tombstones of erased keys are append-only: triggers refuse UPDATE and DELETE.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Each entry moves the schema from version `i` to `i + 1`. Never edit one that shipped.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE settings (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    -- Ingest position per stream: every record through `through_seq` is filed.
    CREATE TABLE cursors (
        tenant       TEXT NOT NULL,
        device       TEXT NOT NULL,
        stream       TEXT NOT NULL,
        through_seq  INTEGER NOT NULL,
        link         BLOB NOT NULL,
        PRIMARY KEY (tenant, device, stream)
    );
    -- Epochs met by ingest. Version 2: the wrapped reference key (never the epoch key, which
    -- seals the key records). Version 1: the wrapped epoch key (those records cannot be erased
    -- per conversation).
    CREATE TABLE epochs (
        tenant          TEXT NOT NULL,
        device          TEXT NOT NULL,
        stream          TEXT NOT NULL,
        epoch           INTEGER NOT NULL,
        archive_key_id  TEXT NOT NULL,
        sealing         INTEGER NOT NULL,
        wrapped         BLOB,
        first_seq       INTEGER NOT NULL,
        last_seq        INTEGER NOT NULL,
        last_captured_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, device, stream, epoch)
    );
    -- Content keys of version 2 epochs; `conversation_id` NULL is the agent's own events.
    -- Version 1 epochs get index rows too (`wrapped` NULL): what they hold, for reports.
    CREATE TABLE content_keys (
        id               INTEGER PRIMARY KEY,
        tenant           TEXT NOT NULL,
        device           TEXT NOT NULL,
        stream           TEXT NOT NULL,
        epoch            INTEGER NOT NULL,
        key_ref          BLOB NOT NULL,
        channel          TEXT,
        conversation_id  TEXT,
        wrapped          BLOB,
        records          INTEGER NOT NULL DEFAULT 0,
        first_captured_ms INTEGER,
        last_captured_ms INTEGER,
        UNIQUE (tenant, device, stream, epoch, key_ref)
    );
    CREATE INDEX content_keys_by_conversation ON content_keys (tenant, device, channel, conversation_id);
    CREATE TABLE participants (
        key_row  INTEGER NOT NULL REFERENCES content_keys(id) ON DELETE CASCADE,
        handle   TEXT NOT NULL,
        PRIMARY KEY (handle, key_row)
    );
    CREATE INDEX participants_by_key ON participants (key_row);
    -- Keys deleted by an erasure or a retention run: export reports their records as erased,
    -- ingest never files them again.
    CREATE TABLE erased_keys (
        tenant       TEXT NOT NULL,
        device       TEXT NOT NULL,
        stream       TEXT NOT NULL,
        epoch        INTEGER NOT NULL,
        key_ref      BLOB NOT NULL,
        erasure_id   INTEGER NOT NULL REFERENCES erasures(id),
        archive_key_id TEXT NOT NULL,
        PRIMARY KEY (tenant, device, stream, epoch, key_ref)
    );
    CREATE TABLE erasures (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL,
        at_ms         INTEGER NOT NULL,
        requested_by  TEXT NOT NULL,
        reason        TEXT NOT NULL,
        selector      TEXT NOT NULL,
        audit_seq     INTEGER NOT NULL
    );
    CREATE TABLE holds (
        id           INTEGER PRIMARY KEY,
        scope        TEXT NOT NULL,
        tenant       TEXT,
        device       TEXT,
        value        TEXT NOT NULL,
        reason       TEXT NOT NULL,
        placed_by    TEXT NOT NULL,
        placed_ms    INTEGER NOT NULL,
        released_ms  INTEGER,
        released_by  TEXT
    );
    -- Archive keys retired: `retiring` while the private key file is being destroyed.
    CREATE TABLE retired_keys (
        key_id  TEXT PRIMARY KEY,
        state   TEXT NOT NULL,
        at_ms   INTEGER NOT NULL
    );
    -- Who did what, never content. Each entry's hash covers the previous one's.
    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        detail     TEXT NOT NULL,
        hash       BLOB NOT NULL
    );
    CREATE TRIGGER audit_append_only_u BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_append_only_d BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER erased_append_only_u BEFORE UPDATE ON erased_keys BEGIN SELECT RAISE(ABORT, 'erasures are final'); END;
    CREATE TRIGGER erased_append_only_d BEFORE DELETE ON erased_keys BEGIN SELECT RAISE(ABORT, 'erasures are final'); END;
    CREATE TRIGGER erasures_append_only_u BEFORE UPDATE ON erasures BEGIN SELECT RAISE(ABORT, 'erasures are final'); END;
    CREATE TRIGGER erasures_append_only_d BEFORE DELETE ON erasures BEGIN SELECT RAISE(ABORT, 'erasures are final'); END;
    "];

pub fn migrate(conn: &mut Connection) -> Result<()> {
    crate::store::sqlite::schema::apply_migrations(conn, MIGRATIONS, "vault").map_err(|e| match e {
        Error::Config(m) => Error::Vault(m),
        other => other,
    })
}
