//! The vault's audit log: every decision (ingest runs, erasures, retention runs, holds, key
//! retirements) as an append-only entry naming who, what, why and when, never content. Each
//! entry's hash covers the previous entry's hash, so a rewritten or dropped entry shows.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    /// JSON object.
    pub detail: serde_json::Value,
}

fn entry_hash(prev: &[u8], seq: i64, at_ms: i64, actor: &str, action: &str, detail: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"verbatim/vault-audit/v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for part in [actor, action, detail] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_vec()
}

/// Appends an entry inside the caller's transaction; returns its sequence number.
pub fn append(conn: &Connection, at_ms: i64, actor: &str, action: &str, detail: &serde_json::Value) -> Result<i64> {
    let last: Option<(i64, Vec<u8>)> =
        conn.query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    let (seq, prev) = last.map_or((1, vec![0u8; 32]), |(s, h)| (s + 1, h));
    let detail = detail.to_string();
    let hash = entry_hash(&prev, seq, at_ms, actor, action, &detail);
    conn.execute(
        "INSERT INTO audit (seq, at_ms, actor, action, detail, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![seq, at_ms, actor, action, detail, hash],
    )?;
    Ok(seq)
}

/// Every entry, oldest first, after checking the hash chain.
pub fn entries(conn: &Connection) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare("SELECT seq, at_ms, actor, action, detail, hash FROM audit ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Vec<u8>>(5)?,
        ))
    })?;
    let mut prev = vec![0u8; 32];
    let mut out = Vec::new();
    for (expected, row) in (1..).zip(rows) {
        let (seq, at_ms, actor, action, detail, hash) = row?;
        if seq != expected || entry_hash(&prev, seq, at_ms, &actor, &action, &detail) != hash {
            return Err(Error::Vault(format!("audit log entry {seq} does not chain from the one before (altered or removed)")));
        }
        let detail =
            serde_json::from_str(&detail).map_err(|_| Error::Vault(format!("audit log entry {seq}: detail is not JSON")))?;
        out.push(Entry { seq, at_ms, actor, action, detail });
        prev = hash;
    }
    Ok(out)
}
