//! The queue's head: the one `chain_state` row saying where the chain ends, how far the
//! archive acknowledged, and what is pending. Read and written here only (the writer, the
//! recovery and `inspect` share it).

use rusqlite::{Connection, OptionalExtension, params};

use crate::chain::{Link, StreamId};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Unset until the first policy names the tenant and device.
    pub stream: Option<StreamId>,
    pub last_seq: u64,
    pub last_link: Link,
    pub acked_through: u64,
    pub acked_link: Link,
    pub pending_count: u64,
    pub pending_bytes: u64,
    pub last_epoch: u64,
    pub last_captured_ms: i64,
}

impl Head {
    /// The head of a store nothing was written to.
    pub fn empty() -> Head {
        Head {
            stream: None,
            last_seq: 0,
            last_link: [0; 32],
            acked_through: 0,
            acked_link: [0; 32],
            pending_count: 0,
            pending_bytes: 0,
            last_epoch: 0,
            last_captured_ms: 0,
        }
    }

    /// The stored head, if the row exists. A count read back negative or a link that is not 32
    /// bytes is a typed `Corrupt` error naming the field, never a panic later.
    pub fn read(conn: &Connection) -> Result<Option<Head>> {
        let row = conn
            .query_row(
                "SELECT tenant, device, stream, last_seq, last_link, acked_through, acked_link, pending_count,
                        pending_bytes, last_epoch, last_captured_ms FROM chain_state WHERE id = 1",
                [],
                |r| {
                    Ok((
                        (r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?),
                        (r.get::<_, i64>(3)?, r.get::<_, Vec<u8>>(4)?, r.get::<_, i64>(5)?, r.get::<_, Vec<u8>>(6)?),
                        (r.get::<_, i64>(7)?, r.get::<_, i64>(8)?, r.get::<_, i64>(9)?, r.get::<_, i64>(10)?),
                    ))
                },
            )
            .optional()?;
        let Some(((tenant, device, stream), (last_seq, last_link, acked, acked_link), (count, bytes, epoch, last_ms))) = row
        else {
            return Ok(None);
        };
        let number = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(&format!("{what} is out of range")));
        let link = |v: Vec<u8>, what: &str| Link::try_from(v.as_slice()).map_err(|_| corrupt(&format!("{what} is not 32 bytes")));
        Ok(Some(Head {
            stream: match (tenant, device, stream) {
                (Some(tenant), Some(device), Some(stream)) => Some(StreamId { tenant, device, stream }),
                _ => None,
            },
            last_seq: number(last_seq, "the last sequence number")?,
            last_link: link(last_link, "the last link")?,
            acked_through: number(acked, "the acknowledged sequence number")?,
            acked_link: link(acked_link, "the acknowledged link")?,
            pending_count: number(count, "the pending count")?,
            pending_bytes: number(bytes, "the pending size")?,
            last_epoch: number(epoch, "the last epoch")?,
            last_captured_ms: last_ms,
        }))
    }

    /// What must hold before anything is appended after this head: more acknowledged than
    /// written, or records without a stream identity, mean the store was damaged or altered.
    pub fn check(&self) -> Result<()> {
        if self.acked_through > self.last_seq {
            return Err(corrupt("more is acknowledged than was ever written"));
        }
        if self.stream.is_none() && (self.pending_count > 0 || self.last_seq > 0) {
            return Err(corrupt("records exist but the stream identity is missing"));
        }
        Ok(())
    }

    pub fn save(&self, conn: &Connection) -> Result<()> {
        let (tenant, device, stream) = match &self.stream {
            Some(id) => (Some(&id.tenant), Some(&id.device), Some(&id.stream)),
            None => (None, None, None),
        };
        conn.prepare_cached(
            "INSERT OR REPLACE INTO chain_state (id, tenant, device, stream, last_seq, last_link, acked_through,
                acked_link, pending_count, pending_bytes, last_epoch, last_captured_ms)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            tenant,
            device,
            stream,
            stored(self.last_seq)?,
            &self.last_link[..],
            stored(self.acked_through)?,
            &self.acked_link[..],
            stored(self.pending_count)?,
            stored(self.pending_bytes)?,
            stored(self.last_epoch)?,
            self.last_captured_ms,
        ])?;
        Ok(())
    }
}

fn corrupt(what: &str) -> Error {
    Error::new(ErrorKind::Corrupt, format!("queue head: {what}"))
}

/// SQLite integers are signed: a count past `i64::MAX` cannot be stored faithfully.
fn stored(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt("a count is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn a_saved_head_reads_back_the_same() {
        let conn = store();
        assert_eq!(Head::read(&conn).unwrap(), None);
        let head = Head {
            stream: Some(StreamId { tenant: "t".into(), device: "d".into(), stream: "s".into() }),
            last_seq: 42,
            last_link: [1; 32],
            acked_through: 40,
            acked_link: [2; 32],
            pending_count: 2,
            pending_bytes: 2900,
            last_epoch: 3,
            last_captured_ms: 1_767_225_600_000,
        };
        head.save(&conn).unwrap();
        assert_eq!(Head::read(&conn).unwrap(), Some(head));
    }

    #[test]
    fn damaged_heads_are_typed_errors_naming_the_field() {
        let conn = store();
        Head::empty().save(&conn).unwrap();
        conn.execute("UPDATE chain_state SET acked_through = -1", []).unwrap();
        let e = Head::read(&conn).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.detail.contains("acknowledged sequence number"), "{e}");
        conn.execute("UPDATE chain_state SET acked_through = 0, last_link = x'00'", []).unwrap();
        assert!(Head::read(&conn).unwrap_err().detail.contains("last link is not 32 bytes"));
        let ahead = Head { acked_through: 5, ..Head::empty() };
        assert!(ahead.check().unwrap_err().detail.contains("more is acknowledged"));
        let orphan = Head { last_seq: 1, acked_through: 1, ..Head::empty() };
        assert!(orphan.check().unwrap_err().detail.contains("stream identity is missing"));
        assert!(Head { last_seq: u64::MAX, ..Head::empty() }.save(&conn).is_err());
    }
}
