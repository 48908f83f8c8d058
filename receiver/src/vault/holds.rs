//! Legal holds in the vault: while a hold is in force, no erasure request and no retention
//! run deletes a key it covers. A hold covers a device, a conversation (on one device) or a
//! participant (every conversation in which the handle took part). Holds are placed and
//! released with a reason, both audited; a released hold is kept, never deleted.
//!
//! (An object store's own legal hold, `verbatim legal-hold`, keeps the sealed objects; this
//! one keeps them readable.)

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{Vault, audit};
use crate::error::{Error, Result};
use crate::participants;

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum HoldScope {
    Device { device: String },
    Conversation { device: String, conversation_id: String },
    Participant { handle: String },
}

impl HoldScope {
    fn parts(&self) -> (&'static str, Option<&str>, String) {
        match self {
            HoldScope::Device { device } => ("device", Some(device), device.clone()),
            HoldScope::Conversation { device, conversation_id } => ("conversation", Some(device), conversation_id.clone()),
            HoldScope::Participant { handle } => ("participant", None, participants::normalize(handle)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub id: i64,
    #[serde(flatten)]
    pub scope: HoldScope,
    pub reason: String,
    pub placed_by: String,
    pub placed_ms: i64,
    pub released_ms: Option<i64>,
}

/// Places a hold; returns its id.
pub fn place(vault: &mut Vault, scope: HoldScope, reason: &str, actor: &str) -> Result<i64> {
    if reason.trim().is_empty() {
        return Err(Error::Config("a legal hold needs a reason (--reason)".into()));
    }
    let (kind, device, value) = scope.parts();
    if value.trim().is_empty() {
        return Err(Error::Config(format!("a {kind} hold needs a non-empty {kind}")));
    }
    let now = crate::time::now_ms();
    let tx = vault.conn_mut().transaction()?;
    tx.execute(
        "INSERT INTO holds (scope, device, value, reason, placed_by, placed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![kind, device, value, reason, actor, now],
    )?;
    let id = tx.last_insert_rowid();
    audit::append(&tx, now, actor, "hold_placed", &serde_json::json!({ "hold": id, "scope": scope, "reason": reason }))?;
    tx.commit()?;
    Ok(id)
}

/// Releases a hold in force.
pub fn release(vault: &mut Vault, id: i64, reason: &str, actor: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::Config("releasing a legal hold needs a reason (--reason)".into()));
    }
    let now = crate::time::now_ms();
    let tx = vault.conn_mut().transaction()?;
    let n = tx.execute(
        "UPDATE holds SET released_ms = ?2, released_by = ?3 WHERE id = ?1 AND released_ms IS NULL",
        params![id, now, actor],
    )?;
    if n == 0 {
        return Err(Error::Config(format!("no legal hold {id} is in force")));
    }
    audit::append(&tx, now, actor, "hold_released", &serde_json::json!({ "hold": id, "reason": reason }))?;
    tx.commit()?;
    Ok(())
}

/// Every hold, in force or released, oldest first.
pub fn list(vault: &Vault) -> Result<Vec<Hold>> {
    let mut stmt = vault
        .conn()
        .prepare("SELECT id, scope, device, value, reason, placed_by, placed_ms, released_ms FROM holds ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let kind: String = r.get(1)?;
        let device: Option<String> = r.get(2)?;
        let value: String = r.get(3)?;
        let scope = match kind.as_str() {
            "device" => HoldScope::Device { device: value },
            "conversation" => HoldScope::Conversation { device: device.unwrap_or_default(), conversation_id: value },
            _ => HoldScope::Participant { handle: value },
        };
        Ok(Hold { id: r.get(0)?, scope, reason: r.get(4)?, placed_by: r.get(5)?, placed_ms: r.get(6)?, released_ms: r.get(7)? })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// The first hold in force that covers the conversation `(device, channel, conversation_id)`.
pub(crate) fn covering(
    conn: &Connection,
    tenant: &str,
    device: &str,
    channel: &str,
    conversation_id: &str,
) -> Result<Option<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.id, h.reason FROM holds h WHERE h.released_ms IS NULL AND (
            (h.scope = 'device' AND h.value = ?2)
         OR (h.scope = 'conversation' AND h.device = ?2 AND h.value = ?4)
         OR (h.scope = 'participant' AND EXISTS (
                SELECT 1 FROM participants p JOIN content_keys k ON k.id = p.key_row
                WHERE p.handle = h.value AND k.tenant = ?1 AND k.device = ?2 AND k.channel = ?3 AND k.conversation_id = ?4)))
         ORDER BY h.id LIMIT 1",
    )?;
    let mut rows = stmt.query(params![tenant, device, channel, conversation_id])?;
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?)),
        None => None,
    })
}
