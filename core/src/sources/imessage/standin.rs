//! STAND-IN for the shared source state (`verbatim_core::sources::{Mark, Agent::capture_marked,
//! save_marks, source_state, content_digest}`), with exactly its signatures, until it lands on
//! main. Deleted when merging: the real one commits marks in the capture's own transaction;
//! this one commits them in a side table right after the capture, so a kill between the two
//! can capture one event twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::model::Event;
use crate::{Agent, CaptureOutcome};

pub struct Mark {
    pub source: &'static str,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

fn db_path(agent: &Agent) -> PathBuf {
    agent.data_dir().join("source-state-standin.sqlite")
}

fn open(agent: &Agent) -> Result<Connection> {
    let store = |e: rusqlite::Error| Error::new(ErrorKind::Storage, format!("source state: {e}"));
    let c = Connection::open(db_path(agent)).map_err(store)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS marks (source TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (source, key));
         CREATE TABLE IF NOT EXISTS digest_key (k BLOB NOT NULL);",
    )
    .map_err(store)?;
    Ok(c)
}

#[allow(async_fn_in_trait)]
pub trait SourceStateApi {
    async fn capture_marked(&self, event: Event, marks: Vec<Mark>) -> Result<CaptureOutcome>;
    async fn save_marks(&self, marks: Vec<Mark>) -> Result<()>;
    fn source_state(&self, source: &str) -> Result<BTreeMap<String, Vec<u8>>>;
    fn content_digest(&self, source: &str, bytes: &[u8]) -> [u8; 32];
}

impl SourceStateApi for Agent {
    async fn capture_marked(&self, event: Event, marks: Vec<Mark>) -> Result<CaptureOutcome> {
        let outcome = self.capture(event).await?;
        self.save_marks(marks).await?;
        Ok(outcome)
    }

    async fn save_marks(&self, marks: Vec<Mark>) -> Result<()> {
        let store = |e: rusqlite::Error| Error::new(ErrorKind::Storage, format!("source state: {e}"));
        let mut c = open(self)?;
        let tx = c.transaction().map_err(store)?;
        for m in marks {
            match m.value {
                Some(v) => tx
                    .execute("INSERT OR REPLACE INTO marks (source, key, value) VALUES (?1, ?2, ?3)", params![m.source, m.key, v])
                    .map_err(store)?,
                None => {
                    tx.execute("DELETE FROM marks WHERE source = ?1 AND key = ?2", params![m.source, m.key]).map_err(store)?
                }
            };
        }
        tx.commit().map_err(store)
    }

    fn source_state(&self, source: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let store = |e: rusqlite::Error| Error::new(ErrorKind::Storage, format!("source state: {e}"));
        let c = open(self)?;
        let mut st = c.prepare("SELECT key, value FROM marks WHERE source = ?1").map_err(store)?;
        let rows = st.query_map([source], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))).map_err(store)?;
        rows.collect::<rusqlite::Result<_>>().map_err(store)
    }

    fn content_digest(&self, source: &str, bytes: &[u8]) -> [u8; 32] {
        let key = open(self)
            .and_then(|c| {
                let k: Option<Vec<u8>> = c.query_row("SELECT k FROM digest_key", [], |r| r.get(0)).optional().ok().flatten();
                if let Some(k) = k {
                    return Ok(k);
                }
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| Error::new(ErrorKind::Storage, format!("randomness: {e}")))?;
                let _ = c.execute("INSERT INTO digest_key (k) VALUES (?1)", [&k]);
                Ok(k)
            })
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(&key);
        h.update(source.as_bytes());
        h.update(bytes);
        h.finalize().into()
    }
}
