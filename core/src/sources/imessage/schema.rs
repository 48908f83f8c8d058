//! Reading Messages' `chat.db` strictly read-only, in short read transactions, so the relay
//! never holds Messages up: the file is opened read-only with `query_only`, a busy timeout
//! instead of failing on a moment's lock, and every page of rows is read in its own
//! transaction (a WAL reader holds back checkpoints only while it reads).
//!
//! Columns that older macOS releases lack (`date_edited`, `date_retracted`,
//! `message_summary_info`, `destination_caller_id`, `thread_originator_guid`,
//! `associated_message_emoji`) read as absent.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// How long a read waits for Messages' own lock before giving up on this pass.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds from the Unix epoch to 2001-01-01 (Apple's reference date).
const APPLE_EPOCH_UNIX_S: i64 = 978_307_200;

/// Apple time (nanoseconds since 2001-01-01; seconds before macOS 10.13) to Unix milliseconds.
pub fn apple_time_to_unix_ms(t: i64) -> i64 {
    let ms = if t.abs() > 100_000_000_000 { t / 1_000_000 } else { t * 1000 };
    ms + APPLE_EPOCH_UNIX_S * 1000
}

/// What could not be read, without any content.
#[derive(Debug)]
pub enum ReadError {
    /// The database cannot be opened or read (missing, Full Disk Access revoked, not a
    /// database): capture from Messages is unavailable.
    Unavailable(String),
    /// A query failed on a readable database (a lock held past the busy timeout): retried at
    /// the next pass.
    Busy(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Unavailable(d) => write!(f, "chat.db unavailable: {d}"),
            ReadError::Busy(d) => write!(f, "chat.db busy: {d}"),
        }
    }
}

impl std::error::Error for ReadError {}

fn classify(e: rusqlite::Error) -> ReadError {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ReadError::Busy(e.to_string()),
        _ => ReadError::Unavailable(e.to_string()),
    }
}

/// One `message` row with its sender's handle and its chat.
#[derive(Debug, Clone, Default)]
pub struct MessageRow {
    pub rowid: i64,
    pub guid: String,
    pub text: Option<String>,
    pub attributed_body: Option<Vec<u8>>,
    pub service: Option<String>,
    pub account: Option<String>,
    pub destination_caller_id: Option<String>,
    /// The other party's handle (`handle.id`), the sender of an inbound message.
    pub handle: Option<String>,
    pub is_from_me: bool,
    pub date: i64,
    pub date_edited: i64,
    pub date_retracted: i64,
    pub associated_message_guid: Option<String>,
    pub associated_message_type: i64,
    pub associated_message_emoji: Option<String>,
    pub thread_originator_guid: Option<String>,
    pub message_summary_info: Option<Vec<u8>>,
    pub has_attachments: bool,
    pub item_type: i64,
    pub chat_id: Option<i64>,
}

/// A chat: its guid, the employee's own handle on it, and the other participants.
#[derive(Debug, Clone, Default)]
pub struct ChatRow {
    pub guid: String,
    pub account_login: Option<String>,
    pub last_addressed_handle: Option<String>,
    pub participants: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AttachmentRow {
    pub guid: String,
    pub filename: Option<String>,
    pub mime_type: Option<String>,
    pub transfer_name: Option<String>,
}

/// The database, open read-only.
pub struct ChatDb {
    conn: Connection,
    select: String,
    chats: HashMap<i64, ChatRow>,
}

const MESSAGE_COLUMNS: [&str; 19] = [
    "guid",
    "text",
    "attributedBody",
    "service",
    "account",
    "destination_caller_id",
    "is_from_me",
    "date",
    "date_edited",
    "date_retracted",
    "associated_message_guid",
    "associated_message_type",
    "associated_message_emoji",
    "thread_originator_guid",
    "message_summary_info",
    "cache_has_attachments",
    "item_type",
    "handle_id",
    "ROWID",
];

impl ChatDb {
    pub fn open(path: &Path) -> Result<ChatDb, ReadError> {
        if !path.is_file() {
            return Err(ReadError::Unavailable("no database file at the given path".into()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
        conn.execute_batch("PRAGMA query_only = 1;").map_err(classify)?;
        let present: Vec<String> = {
            let mut st = conn.prepare("SELECT name FROM pragma_table_info('message')").map_err(classify)?;
            st.query_map([], |r| r.get(0)).map_err(classify)?.collect::<rusqlite::Result<_>>().map_err(classify)?
        };
        if present.is_empty() {
            return Err(ReadError::Unavailable("no message table (not Messages' database)".into()));
        }
        let cols: Vec<String> = MESSAGE_COLUMNS
            .iter()
            .map(|c| if present.iter().any(|p| p.eq_ignore_ascii_case(c)) { format!("m.{c}") } else { "NULL".into() })
            .collect();
        let select = format!(
            "SELECT {}, h.id, (SELECT chat_id FROM chat_message_join WHERE message_id = m.ROWID LIMIT 1)
             FROM message m LEFT JOIN handle h ON h.ROWID = m.handle_id",
            cols.join(", ")
        );
        Ok(ChatDb { conn, select, chats: HashMap::new() })
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
        let int = |i: usize| -> rusqlite::Result<i64> { Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0)) };
        Ok(MessageRow {
            guid: r.get(0)?,
            text: r.get(1)?,
            attributed_body: r.get(2)?,
            service: r.get(3)?,
            account: r.get(4)?,
            destination_caller_id: r.get(5)?,
            is_from_me: int(6)? != 0,
            date: int(7)?,
            date_edited: int(8)?,
            date_retracted: int(9)?,
            associated_message_guid: r.get(10)?,
            associated_message_type: int(11)?,
            associated_message_emoji: r.get(12)?,
            thread_originator_guid: r.get(13)?,
            message_summary_info: r.get(14)?,
            has_attachments: int(15)? != 0,
            item_type: int(16)?,
            rowid: int(18)?,
            handle: r.get(19)?,
            chat_id: r.get(20)?,
        })
    }

    /// Up to `limit` rows with `ROWID >= from`, in `ROWID` order, in one short read.
    pub fn messages_from(&self, from: i64, limit: usize) -> Result<Vec<MessageRow>, ReadError> {
        let sql = format!("{} WHERE m.ROWID >= ?1 ORDER BY m.ROWID LIMIT ?2", self.select);
        let mut st = self.conn.prepare_cached(&sql).map_err(classify)?;
        let rows = st.query_map(params![from, limit as i64], Self::row).map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    /// Rows up to `through` that were edited or retracted: the only old rows that can need
    /// an event after they were captured.
    pub fn changed_through(&self, through: i64) -> Result<Vec<MessageRow>, ReadError> {
        let has = |c: &str| self.select.contains(&format!("m.{c}"));
        let mut cond = Vec::new();
        if has("date_edited") {
            cond.push("m.date_edited > 0");
        }
        if has("date_retracted") {
            cond.push("m.date_retracted > 0");
        }
        if cond.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("{} WHERE m.ROWID <= ?1 AND ({})", self.select, cond.join(" OR "));
        let mut st = self.conn.prepare_cached(&sql).map_err(classify)?;
        let rows = st.query_map([through], Self::row).map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    /// The message row with this guid.
    pub fn message_by_guid(&self, guid: &str) -> Result<Option<MessageRow>, ReadError> {
        let sql = format!("{} WHERE m.guid = ?1", self.select);
        let mut st = self.conn.prepare_cached(&sql).map_err(classify)?;
        st.query_row([guid], Self::row).optional().map_err(classify)
    }

    /// The chat (cached for the life of this connection, one pass).
    pub fn chat(&mut self, chat_id: i64) -> Result<Option<ChatRow>, ReadError> {
        if let Some(c) = self.chats.get(&chat_id) {
            return Ok(Some(c.clone()));
        }
        let head = self
            .conn
            .query_row("SELECT guid, account_login, last_addressed_handle FROM chat WHERE ROWID = ?1", [chat_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
            })
            .optional()
            .map_err(classify)?;
        let Some((guid, account_login, last_addressed_handle)) = head else { return Ok(None) };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT h.id FROM chat_handle_join j JOIN handle h ON h.ROWID = j.handle_id WHERE j.chat_id = ?1 ORDER BY h.ROWID",
            )
            .map_err(classify)?;
        let participants =
            st.query_map([chat_id], |r| r.get(0)).map_err(classify)?.collect::<rusqlite::Result<_>>().map_err(classify)?;
        let chat = ChatRow { guid, account_login, last_addressed_handle, participants };
        self.chats.insert(chat_id, chat.clone());
        Ok(Some(chat))
    }

    /// The attachments of a message, in join order.
    pub fn attachments(&self, message_rowid: i64) -> Result<Vec<AttachmentRow>, ReadError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT a.guid, a.filename, a.mime_type, a.transfer_name FROM message_attachment_join j
                 JOIN attachment a ON a.ROWID = j.attachment_id WHERE j.message_id = ?1 ORDER BY a.ROWID",
            )
            .map_err(classify)?;
        let rows = st
            .query_map([message_rowid], |r| {
                Ok(AttachmentRow { guid: r.get(0)?, filename: r.get(1)?, mime_type: r.get(2)?, transfer_name: r.get(3)? })
            })
            .map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }
}

impl ChatDb {
    /// The guid of the message an attachment belongs to.
    pub fn message_guid_of_attachment(&self, attachment_guid: &str) -> Result<Option<String>, ReadError> {
        self.conn
            .query_row(
                "SELECT m.guid FROM attachment a JOIN message_attachment_join j ON j.attachment_id = a.ROWID
                 JOIN message m ON m.ROWID = j.message_id WHERE a.guid = ?1 LIMIT 1",
                [attachment_guid],
                |r| r.get(0),
            )
            .optional()
            .map_err(classify)
    }
}
