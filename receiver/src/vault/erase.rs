//! Erasure and retention: deleting from the vault the keys under which records were sealed.
//!
//! An erasure request names a conversation (on one device) or a participant (every
//! conversation in which the handle took part); a retention run takes every key whose newest
//! record is older than the retention period. Either way, in one transaction: holds in force
//! are checked (a covered conversation refuses the request, or is skipped by retention), each
//! key gets a tombstone naming the erasure, its row is deleted (overwritten on disk), and the
//! audit log says who asked, why, which conversations and how many records: never content.
//!
//! Deleting the vault's copy is not yet erasure while the archive private key that sealed
//! those records exists (its key records announce the keys again). An erasure is therefore
//! reported **pending** until every archive key it depends on is retired
//! (`verbatim keys retire`), and **complete** from then on; the worst case is the rotation
//! period plus the grace period ([`super::Settings::worst_case_erasure_days`]).
//!
//! Records sealed before conversation keys (version 1 epochs) cannot be erased per
//! conversation: an erasure lists them as not erasable; retention deletes a version 1 epoch's
//! key once all of that epoch is past the retention period.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use serde::Serialize;
use verbatim_core::seal::conversation::EPOCH_KEY_REF;

use super::{Vault, audit, holds};
use crate::error::{Error, Result};
use crate::participants;

const DAY_MS: i64 = 86_400_000;

/// What an erasure request names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Selector {
    Conversation { device: String, conversation_id: String },
    Participant { handle: String },
}

/// A conversation, as erasure reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Conversation {
    pub tenant: String,
    pub device: String,
    pub channel: String,
    pub conversation_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `pending` (archive keys still exist that can re-derive the erased keys), `complete`,
    /// or `nothing_erased`.
    pub state: &'static str,
    /// Archive key ids that must retire before the erasure is complete.
    pub waiting_for_keys: Vec<String>,
    /// When it is complete at the latest if keys rotate and retire on schedule.
    pub complete_by_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The erasure's id (absent for a dry run).
    pub erasure: Option<i64>,
    pub kind: &'static str,
    pub conversations: Vec<Conversation>,
    pub keys: u64,
    pub records: u64,
    /// Conversations held by a legal hold (retention skips them).
    pub held: Vec<String>,
    /// Conversations with records sealed before conversation keys: they stay readable.
    pub not_erasable: Vec<String>,
    pub status: Status,
}

/// One key to delete.
struct Doomed {
    row: i64,
    tenant: String,
    device: String,
    stream: String,
    epoch: i64,
    key_ref: Vec<u8>,
    records: u64,
    archive_key_id: String,
    conversation: Option<Conversation>,
}

fn describe(c: &Conversation) -> String {
    format!("{}/{} {}:{}", c.tenant, c.device, c.channel, c.conversation_id)
}

/// Erases what `selector` names. Refused (nothing changed) when a legal hold covers any of it
/// or the reason is empty.
pub fn erase(vault: &mut Vault, selector: &Selector, reason: &str, actor: &str, now_ms: i64) -> Result<ErasureReport> {
    if reason.trim().is_empty() {
        return Err(Error::Config("an erasure needs a reason (--reason): it is kept in the audit log".into()));
    }
    let settings = vault.settings()?;
    let tx = vault.conn_mut().transaction()?;
    let conversations: Vec<Conversation> = match selector {
        Selector::Conversation { device, conversation_id } => query_conversations(
            &tx,
            "SELECT DISTINCT tenant, device, channel, conversation_id FROM content_keys WHERE device = ?1 AND conversation_id = ?2",
            params![device, conversation_id],
        )?,
        Selector::Participant { handle } => query_conversations(
            &tx,
            "SELECT DISTINCT k.tenant, k.device, k.channel, k.conversation_id FROM content_keys k
             JOIN participants p ON p.key_row = k.id WHERE p.handle = ?1 AND k.conversation_id IS NOT NULL",
            params![participants::normalize(handle)],
        )?,
    };
    for c in &conversations {
        if let Some((hold, why)) = holds::covering(&tx, &c.tenant, &c.device, &c.channel, &c.conversation_id)? {
            return Err(Error::Refused(format!(
                "legal hold {hold} ({why}) covers conversation {}; nothing was erased",
                describe(c)
            )));
        }
    }
    let mut doomed = Vec::new();
    let mut not_erasable = Vec::new();
    for c in &conversations {
        let (v2, v1) = keys_of_conversation(&tx, c)?;
        if v1 > 0 {
            not_erasable.push(format!("{} ({v1} records sealed before conversation keys)", describe(c)));
        }
        doomed.extend(v2);
    }
    let detail = serde_json::json!({ "selector": selector, "reason": reason });
    let report =
        delete_keys(&tx, "erasure", doomed, conversations, vec![], not_erasable, actor, reason, &detail, now_ms, &settings)?;
    tx.commit()?;
    vault.purge_log()?;
    Ok(report)
}

/// Applies the retention period: with `apply` false, only says what would become unreadable.
pub fn retention(vault: &mut Vault, apply: bool, actor: &str, now_ms: i64) -> Result<ErasureReport> {
    let settings = vault.settings()?;
    let days = settings
        .retention_days
        .ok_or_else(|| Error::Config("the vault has no retention period (verbatim vault init --retention-days N)".into()))?;
    let cutoff = now_ms.saturating_sub(i64::from(days) * DAY_MS);
    let tx = vault.conn_mut().transaction()?;
    let mut candidates = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT k.id, k.tenant, k.device, k.stream, k.epoch, k.key_ref, k.records, e.archive_key_id, k.channel, k.conversation_id
             FROM content_keys k JOIN epochs e USING (tenant, device, stream, epoch)
             WHERE k.wrapped IS NOT NULL AND coalesce(k.last_captured_ms, e.last_captured_ms) < ?1
             ORDER BY k.id",
        )?;
        let rows = stmt.query_map(params![cutoff], doomed_row)?;
        for r in rows {
            candidates.push(r?);
        }
    }
    let mut kept = Vec::new();
    let mut held = Vec::new();
    let mut conversations = BTreeMap::new();
    for d in candidates {
        let hold = match &d.conversation {
            Some(c) => holds::covering(&tx, &c.tenant, &c.device, &c.channel, &c.conversation_id)?,
            // The agent's own events: held by a device hold.
            None => holds::covering(&tx, &d.tenant, &d.device, "", "")?,
        };
        if let Some((id, _)) = hold {
            let what = d.conversation.as_ref().map_or_else(|| format!("{}/{} agent events", d.tenant, d.device), describe);
            held.push(format!("{what} (legal hold {id})"));
            continue;
        }
        if let Some(c) = &d.conversation {
            conversations.insert(c.clone(), ());
        }
        kept.push(d);
    }
    // Version 1 epochs wholly past the period: their epoch key goes.
    let mut v1 = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT tenant, device, stream, epoch, archive_key_id, last_seq - first_seq + 1 FROM epochs
             WHERE sealing = 1 AND wrapped IS NOT NULL AND last_captured_ms < ?1",
        )?;
        let rows = stmt.query_map(params![cutoff], |r| {
            Ok(Doomed {
                row: -1,
                tenant: r.get(0)?,
                device: r.get(1)?,
                stream: r.get(2)?,
                epoch: r.get(3)?,
                key_ref: EPOCH_KEY_REF.to_vec(),
                archive_key_id: r.get(4)?,
                records: r.get::<_, i64>(5)? as u64,
                conversation: None,
            })
        })?;
        for r in rows {
            let d = r?;
            if let Some((id, _)) = holds::covering(&tx, &d.tenant, &d.device, "", "")? {
                held.push(format!("{}/{} epoch {} (legal hold {id})", d.tenant, d.device, d.epoch));
            } else {
                v1.push(d);
            }
        }
    }
    kept.extend(v1);
    let conversations: Vec<Conversation> = conversations.into_keys().collect();
    if !apply {
        let records = kept.iter().map(|d| d.records).sum();
        let keys = kept.len() as u64;
        return Ok(ErasureReport {
            erasure: None,
            kind: "retention",
            conversations,
            keys,
            records,
            held,
            not_erasable: vec![],
            status: Status { state: "dry_run", waiting_for_keys: vec![], complete_by_ms: None },
        });
    }
    let detail = serde_json::json!({ "retention_days": days, "cutoff_ms": cutoff });
    let reason = format!("retention period of {days} days ended");
    let report = delete_keys(&tx, "retention", kept, conversations, held, vec![], actor, &reason, &detail, now_ms, &settings)?;
    tx.commit()?;
    vault.purge_log()?;
    Ok(report)
}

fn doomed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Doomed> {
    let channel: Option<String> = r.get(8)?;
    let conversation_id: Option<String> = r.get(9)?;
    let (tenant, device): (String, String) = (r.get(1)?, r.get(2)?);
    Ok(Doomed {
        row: r.get(0)?,
        conversation: channel.zip(conversation_id).map(|(channel, conversation_id)| Conversation {
            tenant: tenant.clone(),
            device: device.clone(),
            channel,
            conversation_id,
        }),
        tenant,
        device,
        stream: r.get(3)?,
        epoch: r.get(4)?,
        key_ref: r.get(5)?,
        records: r.get::<_, i64>(6)? as u64,
        archive_key_id: r.get(7)?,
    })
}

fn query_conversations(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Conversation>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok(Conversation { tenant: r.get(0)?, device: r.get(1)?, channel: r.get(2)?, conversation_id: r.get(3)? })
    })?;
    let mut out: Vec<Conversation> = rows.collect::<std::result::Result<_, _>>()?;
    out.sort();
    Ok(out)
}

/// A conversation's erasable keys, and how many of its records are in version 1 epochs.
fn keys_of_conversation(conn: &Connection, c: &Conversation) -> Result<(Vec<Doomed>, u64)> {
    let mut stmt = conn.prepare(
        "SELECT k.id, k.tenant, k.device, k.stream, k.epoch, k.key_ref, k.records, e.archive_key_id, k.channel, k.conversation_id,
                k.wrapped IS NULL
         FROM content_keys k JOIN epochs e USING (tenant, device, stream, epoch)
         WHERE k.tenant = ?1 AND k.device = ?2 AND k.channel = ?3 AND k.conversation_id = ?4 ORDER BY k.id",
    )?;
    let rows = stmt
        .query_map(params![c.tenant, c.device, c.channel, c.conversation_id], |r| Ok((doomed_row(r)?, r.get::<_, bool>(10)?)))?;
    let (mut keys, mut v1) = (Vec::new(), 0);
    for row in rows {
        let (d, legacy) = row?;
        if legacy {
            v1 += d.records;
        } else {
            keys.push(d);
        }
    }
    Ok((keys, v1))
}

#[allow(clippy::too_many_arguments)]
fn delete_keys(
    tx: &Connection,
    kind: &'static str,
    doomed: Vec<Doomed>,
    conversations: Vec<Conversation>,
    held: Vec<String>,
    not_erasable: Vec<String>,
    actor: &str,
    reason: &str,
    detail: &serde_json::Value,
    now_ms: i64,
    settings: &super::Settings,
) -> Result<ErasureReport> {
    let keys = doomed.len() as u64;
    let records: u64 = doomed.iter().map(|d| d.records).sum();
    if doomed.is_empty() {
        return Ok(ErasureReport {
            erasure: None,
            kind,
            conversations,
            keys: 0,
            records: 0,
            held,
            not_erasable,
            status: Status { state: "nothing_erased", waiting_for_keys: vec![], complete_by_ms: None },
        });
    }
    let mut audit_detail = detail.clone();
    audit_detail["conversations"] = serde_json::to_value(&conversations).unwrap_or_default();
    audit_detail["keys"] = keys.into();
    audit_detail["records"] = records.into();
    let audit_seq = audit::append(tx, now_ms, actor, kind, &audit_detail)?;
    tx.execute(
        "INSERT INTO erasures (kind, at_ms, requested_by, reason, selector, audit_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![kind, now_ms, actor, reason, detail.to_string(), audit_seq],
    )?;
    let erasure = tx.last_insert_rowid();
    for d in &doomed {
        tx.execute(
            "INSERT OR IGNORE INTO erased_keys (tenant, device, stream, epoch, key_ref, erasure_id, archive_key_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![d.tenant, d.device, d.stream, d.epoch, d.key_ref, erasure, d.archive_key_id],
        )?;
        if d.row >= 0 {
            tx.execute("DELETE FROM content_keys WHERE id = ?1", params![d.row])?;
        } else {
            // A version 1 epoch: its epoch key and its conversation index go.
            tx.execute(
                "UPDATE epochs SET wrapped = NULL WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4",
                params![d.tenant, d.device, d.stream, d.epoch],
            )?;
            tx.execute(
                "DELETE FROM content_keys WHERE tenant = ?1 AND device = ?2 AND stream = ?3 AND epoch = ?4",
                params![d.tenant, d.device, d.stream, d.epoch],
            )?;
        }
    }
    super::crash_point("erase:before-commit");
    let status = status_of(tx, erasure, now_ms, settings)?;
    Ok(ErasureReport { erasure: Some(erasure), kind, conversations, keys, records, held, not_erasable, status })
}

/// Where an erasure stands now.
pub(crate) fn status_of(conn: &Connection, erasure: i64, at_ms: i64, settings: &super::Settings) -> Result<Status> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT archive_key_id FROM erased_keys WHERE erasure_id = ?1
         AND archive_key_id NOT IN (SELECT key_id FROM retired_keys WHERE state = 'retired') ORDER BY archive_key_id",
    )?;
    let waiting: Vec<String> = stmt.query_map(params![erasure], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?;
    Ok(if waiting.is_empty() {
        Status { state: "complete", waiting_for_keys: waiting, complete_by_ms: None }
    } else {
        let by = at_ms + i64::from(settings.worst_case_erasure_days()) * DAY_MS;
        Status { state: "pending", waiting_for_keys: waiting, complete_by_ms: Some(by) }
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureEntry {
    pub erasure: i64,
    pub kind: String,
    pub at_ms: i64,
    pub requested_by: String,
    pub reason: String,
    pub audit_seq: i64,
    pub status: Status,
}

/// Every erasure and retention run, with where it stands now.
pub fn list(vault: &Vault) -> Result<Vec<ErasureEntry>> {
    let settings = vault.settings()?;
    let conn = vault.conn();
    let mut stmt = conn.prepare("SELECT id, kind, at_ms, requested_by, reason, audit_seq FROM erasures ORDER BY id")?;
    let rows: Vec<(i64, String, i64, String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<std::result::Result<_, _>>()?;
    rows.into_iter()
        .map(|(erasure, kind, at_ms, requested_by, reason, audit_seq)| {
            let status = status_of(conn, erasure, at_ms, &settings)?;
            Ok(ErasureEntry { erasure, kind, at_ms, requested_by, reason, audit_seq, status })
        })
        .collect()
}
