//! The key vault: what keeps sealed records readable after the archive private key that
//! sealed them retires, and what erasure deletes. See docs/erasure.md.
//!
//! One directory: `vault.sqlite3` (schema in [`schema`]) and `vault.key`, the 32-byte key every
//! stored key is wrapped under (AES-256-GCM, a random nonce per wrap, the row's identity as
//! associated data, so a wrapped key moved to another row does not unwrap).
//!
//! Modules, one job each: [`ingest`] files the keys of what the archive holds, [`erase`]
//! deletes them (erasure requests, retention) under [`holds`], [`retire`] destroys archive
//! private keys once nothing depends on them, [`audit`] records every decision.

pub mod audit;
pub mod erase;
pub mod holds;
pub mod ingest;
pub mod retire;
mod schema;

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use verbatim_core::Channel;
use verbatim_core::chain::StreamId;
use verbatim_core::seal::conversation::{ConversationRef, KeyRef, KeyScope};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fsutil;

pub const DB_FILE: &str = "vault.sqlite3";
pub const KEY_FILE: &str = "vault.key";

/// The vault's standing settings, fixed at `verbatim vault init` and changeable there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// How often the archive key pair is rotated (`verbatim keys rotate`), in days.
    pub rotation_days: u32,
    /// How long devices get, after a rotation, to upload what they sealed to the old key
    /// before it is retired, in days.
    pub grace_days: u32,
    /// How long records are kept; `None`: no retention period (keys are kept until erased).
    pub retention_days: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { rotation_days: 30, grace_days: 7, retention_days: None }
    }
}

impl Settings {
    /// The longest an erasure stays pending: a record sealed just after a rotation is under a
    /// key that retires one rotation period plus the grace period later.
    pub fn worst_case_erasure_days(&self) -> u32 {
        self.rotation_days + self.grace_days
    }

    fn check(&self) -> Result<()> {
        if self.rotation_days == 0 || self.rotation_days > 3650 {
            return Err(Error::Config(format!("rotation_days must be 1 to 3650, got {}", self.rotation_days)));
        }
        if self.grace_days > 365 {
            return Err(Error::Config(format!("grace_days must be 0 to 365, got {}", self.grace_days)));
        }
        if self.retention_days == Some(0) {
            return Err(Error::Config("retention_days must be at least 1 (or absent: no retention period)".into()));
        }
        Ok(())
    }
}

/// A content key the vault holds.
pub struct FiledKey {
    pub key_ref: KeyRef,
    /// The conversation it covers, or the agent's own events.
    pub scope: KeyScope,
    pub key: Zeroizing<[u8; 32]>,
}

/// What the vault keeps of an epoch.
pub struct FiledEpoch {
    /// 1: every record under the epoch key; 2: conversation keys.
    pub sealing: u8,
    /// Version 1: the epoch key; version 2: the reference key. `None` once deleted (retention
    /// of a version 1 epoch).
    pub secret: Option<Zeroizing<[u8; 32]>>,
}

pub struct Vault {
    dir: PathBuf,
    conn: Connection,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Fault injection for the crash tests: a process whose `VERBATIM_VAULT_CRASH_AT` names this
/// point dies here at once, as a power cut or kill -9 would stop it.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("VERBATIM_VAULT_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Who acts: recorded in the audit log with every change.
pub fn actor_or_default(actor: Option<&str>) -> String {
    actor.map(str::to_string).or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into())
}

impl Vault {
    /// Creates a vault in `dir` (created if missing; refuses an existing vault).
    pub fn create(dir: &Path, settings: Settings, actor: &str) -> Result<Vault> {
        settings.check()?;
        fsutil::create_private_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() || dir.join(DB_FILE).exists() {
            return Err(Error::Vault(format!("{} already holds a vault; refusing to replace it", dir.display())));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| Error::Vault(format!("no randomness: {e}")))?;
        fsutil::write_private_new(&key_path, format!("{}\n", STANDARD.encode(key.as_slice())).as_bytes())?;
        let mut vault = Vault::open(dir)?;
        let tx = vault.conn.transaction()?;
        write_settings(&tx, &settings)?;
        audit::append(&tx, crate::time::now_ms(), actor, "vault_created", &serde_json::json!({ "settings": settings }))?;
        tx.commit()?;
        Ok(vault)
    }

    /// Opens the vault in `dir`.
    pub fn open(dir: &Path) -> Result<Vault> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            return Err(Error::Vault(format!("{} holds no vault (run `verbatim vault init` first)", dir.display())));
        }
        fsutil::check_private_mode(&key_path)?;
        let text = Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|e| Error::io_path("read", &key_path, e))?);
        let raw = Zeroizing::new(
            STANDARD.decode(text.trim()).map_err(|_| Error::Vault(format!("{} is not base64 of a key", key_path.display())))?,
        );
        let cipher = Aes256Gcm::new_from_slice(&raw)
            .map_err(|_| Error::Vault(format!("{} does not hold a 32-byte key", key_path.display())))?;
        let db = dir.join(DB_FILE);
        let existed = db.exists();
        let mut conn = Connection::open(&db)?;
        if !existed {
            fsutil::restrict_file(&db)?;
        }
        // Deleted keys are overwritten in the file, not left in free pages.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        schema::migrate(&mut conn)?;
        Ok(Vault { dir: dir.to_path_buf(), conn, cipher })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> Result<Settings> {
        read_settings(&self.conn)
    }

    /// Changes the settings (audited).
    pub fn set_settings(&mut self, settings: Settings, actor: &str) -> Result<()> {
        settings.check()?;
        let tx = self.conn.transaction()?;
        write_settings(&tx, &settings)?;
        audit::append(&tx, crate::time::now_ms(), actor, "settings_changed", &serde_json::json!({ "settings": settings }))?;
        tx.commit()?;
        Ok(())
    }

    /// Read access for reports (the audit log).
    pub fn conn_for_reports(&self) -> &Connection {
        &self.conn
    }

    /// What the vault holds, counted.
    pub fn counts(&self) -> Result<serde_json::Value> {
        let count = |sql: &str| -> Result<i64> { Ok(self.conn.query_row(sql, [], |r| r.get(0))?) };
        Ok(serde_json::json!({
            "streams": count("SELECT count(*) FROM cursors")?,
            "records_filed": count("SELECT coalesce(sum(through_seq), 0) FROM cursors")?,
            "epochs": count("SELECT count(*) FROM epochs")?,
            "epochs_sealed_before_conversation_keys": count("SELECT count(*) FROM epochs WHERE sealing = 1")?,
            "content_keys": count("SELECT count(*) FROM content_keys WHERE wrapped IS NOT NULL")?,
            "erased_keys": count("SELECT count(*) FROM erased_keys")?,
            "holds_in_force": count("SELECT count(*) FROM holds WHERE released_ms IS NULL")?,
            "audit_entries": count("SELECT count(*) FROM audit")?,
        }))
    }

    /// Archive keys retired or being retired: (key id, state, when).
    pub fn retired_keys(&self) -> Result<Vec<serde_json::Value>> {
        let mut stmt = self.conn.prepare("SELECT key_id, state, at_ms FROM retired_keys ORDER BY at_ms")?;
        let rows = stmt.query_map([], |r| {
            Ok(serde_json::json!({ "key_id": r.get::<_, String>(0)?, "state": r.get::<_, String>(1)?, "at_ms": r.get::<_, i64>(2)? }))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Makes deletions final on disk: the write-ahead log, which may still hold the pages of
    /// deleted keys, is checkpointed into the (overwritten) database and truncated.
    pub(crate) fn purge_log(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub(crate) fn wrap(&self, identity: &[u8], key: &[u8; 32]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| Error::Vault(format!("no randomness: {e}")))?;
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: key, aad: identity })
            .map_err(|_| Error::Vault("wrapping a key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn unwrap(&self, identity: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let bad = || Error::Vault("a stored key does not unwrap (altered, moved, or another vault key)".into());
        if wrapped.len() < 12 {
            return Err(bad());
        }
        let nonce: [u8; 12] = wrapped[..12].try_into().map_err(|_| bad())?;
        let raw = Zeroizing::new(
            self.cipher.decrypt(&Nonce::from(nonce), Payload { msg: &wrapped[12..], aad: identity }).map_err(|_| bad())?,
        );
        let key: [u8; 32] = raw.as_slice().try_into().map_err(|_| bad())?;
        Ok(Zeroizing::new(key))
    }

    /// The content keys the vault holds for one epoch, unwrapped.
    pub fn content_keys(&self, id: &StreamId, epoch: u64) -> Result<Vec<FiledKey>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_ref, channel, conversation_id, wrapped FROM content_keys
             WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4 AND wrapped IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![id.tenant, id.device, id.stream, epoch as i64], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key_ref, channel, conversation, wrapped) = row?;
            let key_ref: KeyRef =
                key_ref.try_into().map_err(|_| Error::Vault("a stored key reference is not 16 bytes".into()))?;
            let key = self.unwrap(&key_identity(id, epoch, &key_ref), &wrapped)?;
            let scope = match channel.as_deref().and_then(Channel::parse).zip(conversation) {
                Some((channel, conversation_id)) => KeyScope::Conversation(ConversationRef { channel, conversation_id }),
                None => KeyScope::Agent,
            };
            out.push(FiledKey { key_ref, scope, key });
        }
        Ok(out)
    }

    /// What the vault keeps of an epoch: its sealing and its wrapped secret (reference key
    /// for version 2, epoch key for version 1), unwrapped; `None` when not ingested.
    pub fn epoch_secret(&self, id: &StreamId, epoch: u64) -> Result<Option<FiledEpoch>> {
        let row: Option<(i64, Option<Vec<u8>>)> = self
            .conn
            .query_row(
                "SELECT sealing, wrapped FROM epochs WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4",
                params![id.tenant, id.device, id.stream, epoch as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((sealing, wrapped)) = row else { return Ok(None) };
        let secret = match wrapped {
            Some(w) => Some(self.unwrap(&epoch_identity(id, epoch), &w)?),
            None => None,
        };
        Ok(Some(FiledEpoch { sealing: sealing as u8, secret }))
    }

    /// The erasure that deleted a key, if one did.
    pub fn erased_by(&self, id: &StreamId, epoch: u64, key_ref: &KeyRef) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT erasure_id FROM erased_keys WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4 AND key_ref = ?5",
            )?
            .query_row(params![id.tenant, id.device, id.stream, epoch as i64, &key_ref[..]], |r| r.get(0))
            .optional()?)
    }

    /// Whether an archive key is retired (its private key destroyed).
    pub fn is_retired(&self, key_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT state FROM retired_keys WHERE key_id = ?1", params![key_id], |r| r.get::<_, String>(0))
            .optional()?
            .is_some_and(|s| s == "retired"))
    }
}

/// Which erasure, if any, made a stored record unreadable: for `verify`, which holds no
/// archive key. Caches each epoch's reference key.
pub struct ErasureLookup<'v> {
    vault: &'v Vault,
    id: StreamId,
    epochs: std::collections::HashMap<u64, Option<FiledEpoch>>,
    /// The answer per (epoch, key reference), asked once per key.
    erased: std::collections::HashMap<(u64, KeyRef), Option<i64>>,
}

impl<'v> ErasureLookup<'v> {
    pub fn new(vault: &'v Vault, id: &StreamId) -> ErasureLookup<'v> {
        ErasureLookup { vault, id: id.clone(), epochs: Default::default(), erased: Default::default() }
    }

    pub fn erasure_of(&mut self, r: &verbatim_core::wire::WireRecord) -> Result<Option<i64>> {
        if !self.epochs.contains_key(&r.epoch) {
            let secret = self.vault.epoch_secret(&self.id, r.epoch)?;
            self.epochs.insert(r.epoch, secret);
        }
        let key_ref = match &self.epochs[&r.epoch] {
            // Not filed: nothing known of it.
            None => return Ok(None),
            Some(FiledEpoch { sealing: 1, .. }) => verbatim_core::seal::conversation::EPOCH_KEY_REF,
            Some(FiledEpoch { secret: Some(ref_key), .. }) => {
                match verbatim_core::seal::conversation::key_ref_of(ref_key, r.seq, &r.ciphertext) {
                    Ok(k) => k,
                    Err(_) => return Ok(None),
                }
            }
            Some(FiledEpoch { secret: None, .. }) => return Ok(None),
        };
        if let Some(known) = self.erased.get(&(r.epoch, key_ref)) {
            return Ok(*known);
        }
        let erasure = self.vault.erased_by(&self.id, r.epoch, &key_ref)?;
        self.erased.insert((r.epoch, key_ref), erasure);
        Ok(erasure)
    }
}

/// Associated data of a wrapped content key: the row it belongs to.
pub(crate) fn key_identity(id: &StreamId, epoch: u64, key_ref: &KeyRef) -> Vec<u8> {
    let mut out = identity_prefix(b"verbatim/vault/content-key/v1", id, epoch);
    out.extend_from_slice(key_ref);
    out
}

/// Associated data of a wrapped epoch secret.
pub(crate) fn epoch_identity(id: &StreamId, epoch: u64) -> Vec<u8> {
    identity_prefix(b"verbatim/vault/epoch/v1", id, epoch)
}

fn identity_prefix(label: &[u8], id: &StreamId, epoch: u64) -> Vec<u8> {
    let mut out = label.to_vec();
    for part in [&id.tenant, &id.device, &id.stream] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(&epoch.to_be_bytes());
    out
}

fn write_settings(conn: &Connection, s: &Settings) -> Result<()> {
    let mut put = conn.prepare_cached("INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)")?;
    put.execute(params!["rotation_days", s.rotation_days.to_string()])?;
    put.execute(params!["grace_days", s.grace_days.to_string()])?;
    put.execute(params!["retention_days", s.retention_days.map(|d| d.to_string()).unwrap_or_default()])?;
    Ok(())
}

fn read_settings(conn: &Connection) -> Result<Settings> {
    let get = |name: &str| -> Result<Option<String>> {
        Ok(conn.query_row("SELECT value FROM settings WHERE name = ?1", params![name], |r| r.get(0)).optional()?)
    };
    let num = |name: &str, default: u32| -> Result<u32> {
        match get(name)? {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::Vault(format!("setting {name} is not a number"))),
        }
    };
    let d = Settings::default();
    Ok(Settings {
        rotation_days: num("rotation_days", d.rotation_days)?,
        grace_days: num("grace_days", d.grace_days)?,
        retention_days: match get("retention_days")?.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| Error::Vault("setting retention_days is not a number".into()))?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_is_created_once_with_a_private_key_and_wraps_keys_to_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::create(dir.path(), Settings::default(), "tester").unwrap();
        assert!(matches!(Vault::create(dir.path(), Settings::default(), "tester"), Err(Error::Vault(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let id = StreamId { tenant: "t".into(), device: "d".into(), stream: "s".into() };
        let key = [5u8; 32];
        let wrapped = v.wrap(&key_identity(&id, 1, &[1; 16]), &key).unwrap();
        assert_eq!(*v.unwrap(&key_identity(&id, 1, &[1; 16]), &wrapped).unwrap(), key);
        assert!(v.unwrap(&key_identity(&id, 1, &[2; 16]), &wrapped).is_err(), "moved to another row");
        assert!(v.unwrap(&key_identity(&id, 2, &[1; 16]), &wrapped).is_err(), "moved to another epoch");
        assert_eq!(v.settings().unwrap(), Settings::default());
        assert_eq!(Settings::default().worst_case_erasure_days(), 37);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = Vault::create(dir.path(), Settings { rotation_days: 0, ..Settings::default() }, "t").unwrap_err();
        assert!(e.to_string().contains("rotation_days"), "{e}");
        assert!(!dir.path().join(KEY_FILE).exists(), "nothing created");
        let e = Vault::create(dir.path(), Settings { retention_days: Some(0), ..Settings::default() }, "t").unwrap_err();
        assert!(e.to_string().contains("retention_days"), "{e}");
        assert!(matches!(Vault::open(dir.path()), Err(Error::Vault(_))));
    }
}
