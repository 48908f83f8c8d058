//! Archive key rotation and retirement.
//!
//! A keyring is a directory of key pairs, one subdirectory per key named by its key id
//! (`<keyring>/<key id>/archive-private.key` and `archive-public.key`, as `verbatim keygen`
//! writes them). `rotate` adds a pair; its public key goes to devices by policy, and devices
//! start a new epoch on the key change. `retire` destroys a private key once nothing depends
//! on it: every stream that has epochs sealed to it was filed in the vault past them, into an
//! epoch sealed to another key (so the device moved on and nothing sealed to the old key can
//! still arrive). From then on the vault alone reads those records, and whatever was erased
//! from it is gone for good.
//!
//! Crash safety: the vault records `retiring` before the file is destroyed and `retired`
//! after; a run that died in between is finished by the next `retire` of the same key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use verbatim_core::seal::ArchiveSecretKey;

use super::{Vault, audit};
use crate::error::{Error, Result};
use crate::keys::{self, KeyInfo, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
use crate::store::ArchiveReader;

/// Adds a new key pair to the keyring; returns it (its public key is the policy's next
/// `archive_public_key`).
pub fn rotate(keyring: &Path, vault: &mut Vault, actor: &str) -> Result<KeyInfo> {
    crate::fsutil::create_private_dir(keyring)?;
    let staging = keyring.join(format!(".new-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io_path("remove", &staging, e))?;
    }
    let info = keys::keygen(&staging)?;
    let dir = keyring.join(&info.key_id);
    std::fs::rename(&staging, &dir).map_err(|e| Error::io_path("rename", &dir, e))?;
    crate::fsutil::sync_parent(&dir);
    let tx = vault.conn_mut().transaction()?;
    audit::append(&tx, crate::time::now_ms(), actor, "key_created", &serde_json::json!({ "key_id": info.key_id }))?;
    tx.commit()?;
    Ok(KeyInfo { private_path: dir.join(PRIVATE_KEY_FILE), public_path: dir.join(PUBLIC_KEY_FILE), ..info })
}

/// The private keys of a keyring (its subdirectories), plus a key pair directly in it (a
/// directory `verbatim keygen` wrote is a keyring of one).
pub fn load_keyring(keyring: &Path) -> Result<Vec<ArchiveSecretKey>> {
    let mut out = Vec::new();
    let direct = keyring.join(PRIVATE_KEY_FILE);
    if direct.exists() {
        out.push(keys::load_secret(&direct)?);
    }
    let entries = std::fs::read_dir(keyring).map_err(|e| Error::io_path("read", keyring, e))?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for d in dirs {
        let private = d.join(PRIVATE_KEY_FILE);
        if private.exists() {
            out.push(keys::load_secret(&private)?);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireCheck {
    pub key_id: String,
    /// Epochs sealed to the key, across streams.
    pub epochs: u64,
    /// Why it cannot retire yet (empty: it can).
    pub blocking: Vec<String>,
}

/// Whether `key_id` can retire: every epoch sealed to it is filed, and every stream that used
/// it has moved on to another key, as far as the vault has filed.
pub fn check(vault: &Vault, reader: &mut dyn ArchiveReader, key_id: &str) -> Result<RetireCheck> {
    let mut check = RetireCheck { key_id: key_id.to_string(), epochs: 0, blocking: Vec::new() };
    for id in reader.streams()? {
        let epochs = reader.epochs(&id)?;
        let Some(last_on_key) = epochs.iter().filter(|e| e.archive_key_id == key_id).map(|e| e.epoch).max() else {
            continue;
        };
        check.epochs += epochs.iter().filter(|e| e.archive_key_id == key_id).count() as u64;
        let name = format!("{}/{}/{}", id.tenant, id.device, id.stream);
        // Filed epochs of this stream: epoch -> key id.
        let mut filed = BTreeMap::new();
        {
            let mut stmt = vault
                .conn()
                .prepare("SELECT epoch, archive_key_id FROM epochs WHERE tenant = ?1 AND device = ?2 AND stream = ?3")?;
            let rows = stmt.query_map(params![id.tenant, id.device, id.stream], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })?;
            for r in rows {
                let (e, k) = r?;
                filed.insert(e, k);
            }
        }
        let unfiled: Vec<u64> =
            epochs.iter().filter(|e| e.archive_key_id == key_id && !filed.contains_key(&e.epoch)).map(|e| e.epoch).collect();
        if !unfiled.is_empty() {
            check.blocking.push(format!("{name}: epochs {unfiled:?} are not filed in the vault (run `verbatim vault ingest`)"));
            continue;
        }
        let moved_on = filed.range(last_on_key + 1..).any(|(_, k)| k != key_id);
        if !moved_on {
            check.blocking.push(format!(
                "{name}: no record sealed to another key is filed after epoch {last_on_key}: the device may still hold records sealed to this key (push the new key, let it upload, then `verbatim vault ingest`)"
            ));
        }
    }
    Ok(check)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetireReport {
    pub key_id: String,
    pub epochs: u64,
    pub destroyed: PathBuf,
}

/// Retires `key_id`: refuses (nothing changed) unless [`check`] finds nothing blocking, then
/// destroys its private key file in `keyring`.
pub fn retire(
    vault: &mut Vault,
    reader: &mut dyn ArchiveReader,
    keyring: &Path,
    key_id: &str,
    actor: &str,
) -> Result<RetireReport> {
    let dir = keyring.join(key_id);
    let private = dir.join(PRIVATE_KEY_FILE);
    let state: Option<String> =
        vault.conn().query_row("SELECT state FROM retired_keys WHERE key_id = ?1", params![key_id], |r| r.get(0)).optional()?;
    if state.as_deref() == Some("retired") {
        return Err(Error::Config(format!("archive key {key_id} is already retired")));
    }
    if state.is_none() {
        if !private.exists() {
            return Err(Error::Config(format!("no private key for archive key {key_id} in {}", keyring.display())));
        }
        // The file must be the key it claims to be.
        let secret = keys::load_secret(&private)?;
        if keys::key_id_of(&secret)? != key_id {
            return Err(Error::Key(format!("{} does not hold archive key {key_id}", private.display())));
        }
        let c = check(vault, reader, key_id)?;
        if !c.blocking.is_empty() {
            return Err(Error::Refused(format!("archive key {key_id} cannot retire yet: {}", c.blocking.join("; "))));
        }
        let tx = vault.conn_mut().transaction()?;
        tx.execute(
            "INSERT INTO retired_keys (key_id, state, at_ms) VALUES (?1, 'retiring', ?2)",
            params![key_id, crate::time::now_ms()],
        )?;
        audit::append(
            &tx,
            crate::time::now_ms(),
            actor,
            "key_retiring",
            &serde_json::json!({ "key_id": key_id, "epochs": c.epochs }),
        )?;
        tx.commit()?;
    }
    super::crash_point("retire:before-destroy");
    destroy(&private)?;
    super::crash_point("retire:after-destroy");
    // Every epoch sealed to the key is filed (checked above): the vault counts them without
    // reading the store again.
    let epochs: i64 =
        vault.conn().query_row("SELECT count(*) FROM epochs WHERE archive_key_id = ?1", params![key_id], |r| r.get(0))?;
    let epochs = epochs as u64;
    let tx = vault.conn_mut().transaction()?;
    tx.execute(
        "UPDATE retired_keys SET state = 'retired', at_ms = ?2 WHERE key_id = ?1",
        params![key_id, crate::time::now_ms()],
    )?;
    audit::append(&tx, crate::time::now_ms(), actor, "key_retired", &serde_json::json!({ "key_id": key_id, "epochs": epochs }))?;
    tx.commit()?;
    Ok(RetireReport { key_id: key_id.to_string(), epochs, destroyed: private })
}

/// Overwrites a key file with zeros, syncs, removes it and syncs its directory. (On storage
/// that remaps writes, such as SSDs and copy-on-write file systems, the overwrite is best
/// effort; the removal is what the keyring's backups must also honour: docs/erasure.md.)
fn destroy(path: &Path) -> Result<()> {
    use std::io::Write;
    if !path.exists() {
        return Ok(());
    }
    let len = std::fs::metadata(path).map_err(|e| Error::io_path("read", path, e))?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io_path("open", path, e))?;
    f.write_all(&vec![0u8; len as usize]).and_then(|_| f.sync_all()).map_err(|e| Error::io_path("overwrite", path, e))?;
    drop(f);
    std::fs::remove_file(path).map_err(|e| Error::io_path("remove", path, e))?;
    crate::fsutil::sync_parent(path);
    Ok(())
}
