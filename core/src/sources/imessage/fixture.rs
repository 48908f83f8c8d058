//! Test support: builds a `chat.db` like Messages' own — the real table and column names
//! and types (the columns the relay reads and the ones around them), WAL mode, and rows of
//! every kind: `attributedBody` blobs, edit histories, retractions, tapbacks, group chats,
//! attachments, SMS forwarded from the phone.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::typedstream::encode_attributed_string;

/// Messages' schema (macOS 13 and later), as far as the relay's tables go.
pub const SCHEMA: &str = r#"
CREATE TABLE _SqliteDatabaseProperties (key TEXT, value TEXT, UNIQUE(key));
CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, id TEXT NOT NULL, country TEXT, service TEXT NOT NULL,
  uncanonicalized_id TEXT, person_centric_id TEXT, UNIQUE (id, service));
CREATE TABLE chat (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, style INTEGER, state INTEGER,
  account_id TEXT, properties BLOB, chat_identifier TEXT, service_name TEXT, room_name TEXT, account_login TEXT,
  is_archived INTEGER DEFAULT 0, last_addressed_handle TEXT, display_name TEXT, group_id TEXT, is_filtered INTEGER DEFAULT 0,
  successful_query INTEGER, engram_id TEXT, server_change_token TEXT, ck_sync_state INTEGER DEFAULT 0,
  original_group_id TEXT, last_read_message_timestamp INTEGER DEFAULT 0, cloudkit_record_id TEXT,
  last_addressed_sim_id TEXT, is_blackholed INTEGER DEFAULT 0, syndication_date INTEGER DEFAULT 0, syndication_type INTEGER DEFAULT 0);
CREATE TABLE message (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, text TEXT, replace INTEGER DEFAULT 0,
  service_center TEXT, handle_id INTEGER DEFAULT 0, subject TEXT, country TEXT, attributedBody BLOB, version INTEGER DEFAULT 0,
  type INTEGER DEFAULT 0, service TEXT, account TEXT, account_guid TEXT, error INTEGER DEFAULT 0, date INTEGER, date_read INTEGER,
  date_delivered INTEGER, is_delivered INTEGER DEFAULT 0, is_finished INTEGER DEFAULT 0, is_emote INTEGER DEFAULT 0,
  is_from_me INTEGER DEFAULT 0, is_empty INTEGER DEFAULT 0, is_delayed INTEGER DEFAULT 0, is_auto_reply INTEGER DEFAULT 0,
  is_prepared INTEGER DEFAULT 0, is_read INTEGER DEFAULT 0, is_system_message INTEGER DEFAULT 0, is_sent INTEGER DEFAULT 0,
  has_dd_results INTEGER DEFAULT 0, is_service_message INTEGER DEFAULT 0, is_forward INTEGER DEFAULT 0,
  was_downgraded INTEGER DEFAULT 0, is_archive INTEGER DEFAULT 0, cache_has_attachments INTEGER DEFAULT 0,
  cache_roomnames TEXT, was_data_detected INTEGER DEFAULT 0, was_deduplicated INTEGER DEFAULT 0, is_audio_message INTEGER DEFAULT 0,
  is_played INTEGER DEFAULT 0, date_played INTEGER, item_type INTEGER DEFAULT 0, other_handle INTEGER DEFAULT 0,
  group_title TEXT, group_action_type INTEGER DEFAULT 0, share_status INTEGER DEFAULT 0, share_direction INTEGER DEFAULT 0,
  is_expirable INTEGER DEFAULT 0, expire_state INTEGER DEFAULT 0, message_action_type INTEGER DEFAULT 0,
  message_source INTEGER DEFAULT 0, associated_message_guid TEXT, associated_message_type INTEGER DEFAULT 0,
  balloon_bundle_id TEXT, payload_data BLOB, expressive_send_style_id TEXT, associated_message_range_location INTEGER DEFAULT 0,
  associated_message_range_length INTEGER DEFAULT 0, time_expressive_send_played INTEGER, message_summary_info BLOB,
  ck_sync_state INTEGER DEFAULT 0, ck_record_id TEXT, ck_record_change_tag TEXT, destination_caller_id TEXT,
  is_corrupt INTEGER DEFAULT 0, reply_to_guid TEXT, sort_id INTEGER, is_spam INTEGER DEFAULT 0,
  has_unseen_mention INTEGER DEFAULT 0, thread_originator_guid TEXT, thread_originator_part TEXT,
  syndication_ranges TEXT, synced_syndication_ranges TEXT, was_delivered_quietly INTEGER DEFAULT 0,
  did_notify_recipient INTEGER DEFAULT 0, date_retracted INTEGER DEFAULT 0, date_edited INTEGER DEFAULT 0,
  was_detonated INTEGER DEFAULT 0, part_count INTEGER, is_stewie INTEGER DEFAULT 0, is_kt_verified INTEGER DEFAULT 0,
  is_sos INTEGER DEFAULT 0, is_critical INTEGER DEFAULT 0, bia_reference_id TEXT DEFAULT NULL, fallback_hash TEXT DEFAULT NULL,
  associated_message_emoji TEXT DEFAULT NULL, is_pending_satellite_send INTEGER DEFAULT 0, needs_relay INTEGER DEFAULT 0,
  schedule_type INTEGER DEFAULT 0, schedule_state INTEGER DEFAULT 0, sent_or_received_off_grid INTEGER DEFAULT 0);
CREATE TABLE attachment (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, created_date INTEGER DEFAULT 0,
  start_date INTEGER DEFAULT 0, filename TEXT, uti TEXT, mime_type TEXT, transfer_state INTEGER DEFAULT 0,
  is_outgoing INTEGER DEFAULT 0, user_info BLOB, transfer_name TEXT, total_bytes INTEGER DEFAULT 0, is_sticker INTEGER DEFAULT 0,
  sticker_user_info BLOB, attribution_info BLOB, hide_attachment INTEGER DEFAULT 0, ck_sync_state INTEGER DEFAULT 0,
  ck_server_change_token_blob BLOB, ck_record_id TEXT, original_guid TEXT UNIQUE NOT NULL, is_commsafety_sensitive INTEGER DEFAULT 0);
CREATE TABLE chat_handle_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
  handle_id INTEGER REFERENCES handle (ROWID) ON DELETE CASCADE, UNIQUE(chat_id, handle_id));
CREATE TABLE chat_message_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
  message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE, message_date INTEGER DEFAULT 0, PRIMARY KEY (chat_id, message_id));
CREATE TABLE message_attachment_join (message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
  attachment_id INTEGER REFERENCES attachment (ROWID) ON DELETE CASCADE, UNIQUE(message_id, attachment_id));
CREATE INDEX chat_message_join_idx_message_id_only ON chat_message_join(message_id);
CREATE INDEX message_attachment_join_idx_message_id ON message_attachment_join(message_id);
CREATE INDEX chat_handle_join_idx_handle_id ON chat_handle_join(handle_id);
"#;

/// Unix milliseconds to Apple time (nanoseconds since 2001-01-01), as `message.date` holds it.
pub fn apple_ns(unix_ms: i64) -> i64 {
    (unix_ms - 978_307_200_000) * 1_000_000
}

/// A message row to insert. `text_in_body_only` leaves `text` NULL with the text only in
/// `attributedBody`, as recent macOS writes many rows.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub guid: String,
    pub text: Option<String>,
    pub text_in_body_only: bool,
    /// `iMessage`, `SMS` or `RCS`.
    pub service: String,
    /// The employee's own handle (`destination_caller_id`; `account` gets it with its prefix).
    pub own_handle: String,
    /// The other party (`handle.ROWID`), 0 for none (outbound to a group).
    pub handle_id: i64,
    pub chat_id: i64,
    pub is_from_me: bool,
    pub unix_ms: i64,
    pub thread_originator_guid: Option<String>,
    pub associated_message_guid: Option<String>,
    pub associated_message_type: i64,
    pub associated_message_emoji: Option<String>,
    pub item_type: i64,
}

/// A writer over a fixture `chat.db` (any number may be open, like Messages' own).
pub struct ChatDbFixture {
    pub path: PathBuf,
    conn: Connection,
}

fn ok<T>(r: rusqlite::Result<T>) -> T {
    r.expect("fixture chat.db write")
}

impl ChatDbFixture {
    /// Creates the database with Messages' schema in WAL mode.
    pub fn create(path: &Path) -> ChatDbFixture {
        let conn = ok(Connection::open(path));
        ok(conn.execute_batch("PRAGMA journal_mode = WAL;"));
        ok(conn.execute_batch(SCHEMA));
        ChatDbFixture { path: path.to_path_buf(), conn }
    }

    /// Another writing connection to an existing fixture.
    pub fn open(path: &Path) -> ChatDbFixture {
        let conn = ok(Connection::open(path));
        ok(conn.busy_timeout(std::time::Duration::from_secs(10)));
        ChatDbFixture { path: path.to_path_buf(), conn }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn handle(&self, id: &str, service: &str) -> i64 {
        ok(self.conn.execute(
            "INSERT OR IGNORE INTO handle (id, country, service, uncanonicalized_id) VALUES (?1, 'us', ?2, ?1)",
            params![id, service],
        ));
        ok(self.conn.query_row("SELECT ROWID FROM handle WHERE id = ?1 AND service = ?2", params![id, service], |r| r.get(0)))
    }

    /// A chat: `style` 43 for a group, 45 for one to one, like Messages.
    pub fn chat(&self, guid: &str, service: &str, own_handle: &str, participants: &[i64]) -> i64 {
        let style = if participants.len() > 1 { 43 } else { 45 };
        ok(self.conn.execute(
            "INSERT INTO chat (guid, style, state, account_id, chat_identifier, service_name, account_login, last_addressed_handle)
             VALUES (?1, ?2, 3, 'ACCOUNT-GUID', ?1, ?3, ?4, ?5)",
            params![guid, style, service, format!("E:{own_handle}"), own_handle],
        ));
        let chat = self.conn.last_insert_rowid();
        for h in participants {
            ok(self.conn.execute("INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (?1, ?2)", params![chat, h]));
        }
        chat
    }

    pub fn message(&self, m: &NewMessage) -> i64 {
        let body = m.text.as_deref().map(encode_attributed_string);
        let text = if m.text_in_body_only { None } else { m.text.clone() };
        let prefix = if m.own_handle.contains('@') { "E:" } else { "P:" };
        ok(self.conn.execute(
            "INSERT INTO message (guid, text, handle_id, attributedBody, version, type, service, account, account_guid, date,
               date_delivered, is_delivered, is_finished, is_from_me, is_sent, item_type, associated_message_guid,
               associated_message_type, associated_message_emoji, thread_originator_guid, destination_caller_id)
             VALUES (?1, ?2, ?3, ?4, 10, 0, ?5, ?6, 'ACCOUNT-GUID', ?7, ?7, 1, 1, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                m.guid,
                text,
                m.handle_id,
                body,
                m.service,
                format!("{prefix}{}", m.own_handle),
                apple_ns(m.unix_ms),
                m.is_from_me as i64,
                m.item_type,
                m.associated_message_guid,
                m.associated_message_type,
                m.associated_message_emoji,
                m.thread_originator_guid,
                m.own_handle,
            ],
        ));
        let rowid = self.conn.last_insert_rowid();
        if m.chat_id != 0 {
            ok(self.conn.execute(
                "INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?1, ?2, ?3)",
                params![m.chat_id, rowid, apple_ns(m.unix_ms)],
            ));
        }
        rowid
    }

    /// An attachment of a message; `filename` as Messages stores it (`~/Library/Messages/Attachments/...`).
    pub fn attachment(&self, message: i64, guid: &str, filename: &str, mime_type: &str, transfer_name: &str) -> i64 {
        ok(self.conn.execute(
            "INSERT INTO attachment (guid, original_guid, created_date, filename, uti, mime_type, transfer_state, transfer_name, total_bytes)
             VALUES (?1, ?1, 0, ?2, 'public.data', ?3, 5, ?4, 0)",
            params![guid, filename, mime_type, transfer_name],
        ));
        let id = self.conn.last_insert_rowid();
        ok(self
            .conn
            .execute("INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?1, ?2)", params![message, id]));
        ok(self.conn.execute("UPDATE message SET cache_has_attachments = 1 WHERE ROWID = ?1", [message]));
        id
    }

    /// Edits a message as Messages does: the new text in `text` and `attributedBody`,
    /// `date_edited`, and the version appended to the history in `message_summary_info`.
    pub fn edit(&self, rowid: i64, new_text: &str, unix_ms: i64) {
        type Row = (i64, Option<String>, Option<Vec<u8>>, Option<Vec<u8>>);
        let (date, text, body, summary): Row = ok(self.conn.query_row(
            "SELECT date, text, attributedBody, message_summary_info FROM message WHERE ROWID = ?1",
            [rowid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        ));
        let mut root = summary
            .and_then(|s| plist::Value::from_reader(std::io::Cursor::new(s)).ok())
            .and_then(|v| v.into_dictionary())
            .unwrap_or_default();
        let mut ec = root.remove("ec").and_then(|v| v.into_dictionary()).unwrap_or_default();
        let mut versions = ec.remove("0").and_then(|v| v.into_array()).unwrap_or_default();
        let version = |d: i64, body: Vec<u8>| {
            let mut v = plist::Dictionary::new();
            v.insert("d".into(), plist::Value::Integer(d.into()));
            v.insert("t".into(), plist::Value::Data(body));
            plist::Value::Dictionary(v)
        };
        if versions.is_empty() {
            let original = body.unwrap_or_else(|| encode_attributed_string(text.as_deref().unwrap_or("")));
            versions.push(version(date, original));
        }
        let new_body = encode_attributed_string(new_text);
        versions.push(version(apple_ns(unix_ms), new_body.clone()));
        ec.insert("0".into(), plist::Value::Array(versions));
        root.insert("ec".into(), plist::Value::Dictionary(ec));
        let mut summary = Vec::new();
        ok(plist::Value::Dictionary(root)
            .to_writer_binary(&mut summary)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e))));
        ok(self.conn.execute(
            "UPDATE message SET text = ?2, attributedBody = ?3, date_edited = ?4, message_summary_info = ?5 WHERE ROWID = ?1",
            params![rowid, new_text, new_body, apple_ns(unix_ms), summary],
        ));
    }

    /// Unsends a message as Messages does: the text gone, `date_retracted` set.
    pub fn retract(&self, rowid: i64, unix_ms: i64) {
        ok(self.conn.execute(
            "UPDATE message SET text = NULL, attributedBody = NULL, date_retracted = ?2 WHERE ROWID = ?1",
            params![rowid, apple_ns(unix_ms)],
        ));
    }

    pub fn rowid_of(&self, guid: &str) -> Option<i64> {
        ok(self.conn.query_row("SELECT ROWID FROM message WHERE guid = ?1", [guid], |r| r.get(0)).optional())
    }
}

/// A Mac whose Messages holds every kind of row the relay handles, on the employee's
/// business Apple ID (`trader.jane@acme`), the iPhone's forwarded business number
/// (`+1 555 0100`), and a personal Apple ID that is out of scope. Times are fixed, one
/// minute apart from [`World::T0`].
pub struct World {
    pub db: ChatDbFixture,
    pub attachments_root: PathBuf,
}

pub const BUSINESS_ID: &str = "trader.jane@acme";
pub const BUSINESS_NUMBER: &str = "+15550100";
pub const PERSONAL_ID: &str = "jane.home@icloud.example";
pub const CLIENT_A: &str = "+12125550111";
pub const CLIENT_B: &str = "bob@client.example";
pub const CLIENT_C: &str = "+12125550122";
pub const FRIEND: &str = "pal@friends.example";

/// What the world's rows are expected to become, for the tests to compare with.
pub mod expect {
    /// guids of the rows captured as messages, in order.
    pub const MESSAGES: [&str; 6] = ["M1-QUOTE", "M2-REPLY", "M3-GROUP", "M4-PHOTO", "M5-SCAN", "M10-SMS"];
    /// The message edited twice before the relay first saw it: captured as its first
    /// version, then two edits.
    pub const EDITED: &str = "M8-EDITED";
    pub const EDITED_VERSIONS: [&str; 3] = ["Buy 100", "Buy 1000", "Buy 100 at limit 12.50"];
    pub const RETRACTED: &str = "M9-UNSENT";
    pub const PERSONAL: &str = "M11-PERSONAL";
    pub const PHOTO_ATTACHMENT: &str = "ATT-PHOTO";
    pub const MISSING_ATTACHMENT: &str = "ATT-SCAN";
}

impl World {
    pub const T0: i64 = 1_790_000_000_000;

    pub fn at(minute: i64) -> i64 {
        World::T0 + minute * 60_000
    }

    /// Creates `chat.db` (and an attachments folder) in `dir`.
    pub fn create(dir: &Path) -> World {
        let db = ChatDbFixture::create(&dir.join("chat.db"));
        let attachments_root = dir.join("Attachments");
        std::fs::create_dir_all(attachments_root.join("ab/01/ATT-PHOTO")).expect("attachments folder");
        std::fs::write(attachments_root.join("ab/01/ATT-PHOTO/term-sheet.png"), b"\x89PNG fixture bytes").expect("attachment");
        let a = db.handle(CLIENT_A, "iMessage");
        let b = db.handle(CLIENT_B, "iMessage");
        let c = db.handle(CLIENT_C, "SMS");
        let f = db.handle(FRIEND, "iMessage");
        let one = db.chat("iMessage;-;+12125550111", "iMessage", BUSINESS_ID, &[a]);
        let group = db.chat("iMessage;+;chat777", "iMessage", BUSINESS_ID, &[a, b]);
        let sms = db.chat("SMS;-;+12125550122", "SMS", BUSINESS_NUMBER, &[c]);
        let personal = db.chat("iMessage;-;pal@friends.example", "iMessage", PERSONAL_ID, &[f]);
        let msg = |guid: &str, minute: i64, chat: i64, handle: i64, from_me: bool, text: &str| NewMessage {
            guid: guid.into(),
            text: Some(text.into()),
            service: "iMessage".into(),
            own_handle: BUSINESS_ID.into(),
            handle_id: handle,
            chat_id: chat,
            is_from_me: from_me,
            unix_ms: World::at(minute),
            ..Default::default()
        };
        db.message(&msg("M1-QUOTE", 1, one, a, false, "Can you quote 100 ACME?"));
        db.message(&NewMessage {
            text_in_body_only: true,
            thread_originator_guid: Some("M1-QUOTE".into()),
            ..msg("M2-REPLY", 2, one, a, true, "ACME 12.40 / 12.55")
        });
        db.message(&msg("M3-GROUP", 3, group, b, false, "Adding Bob to the thread"));
        let photo = db.message(&msg("M4-PHOTO", 4, group, 0, true, "\u{fffc}Term sheet attached"));
        db.attachment(
            photo,
            "ATT-PHOTO",
            "~/Library/Messages/Attachments/ab/01/ATT-PHOTO/term-sheet.png",
            "image/png",
            "term-sheet.png",
        );
        let scan = db.message(&NewMessage { text: None, ..msg("M5-SCAN", 5, one, a, false, "") });
        db.attachment(
            scan,
            "ATT-SCAN",
            "~/Library/Messages/Attachments/cd/02/ATT-SCAN/signed.pdf",
            "application/pdf",
            "signed.pdf",
        );
        db.message(&NewMessage {
            associated_message_guid: Some("p:0/M2-REPLY".into()),
            associated_message_type: 2001,
            ..msg("M6-LIKE", 6, one, a, false, "Liked “ACME 12.40 / 12.55”")
        });
        db.message(&NewMessage {
            associated_message_guid: Some("p:0/M2-REPLY".into()),
            associated_message_type: 3001,
            ..msg("M7-UNLIKE", 7, one, a, false, "Removed a like from “ACME 12.40 / 12.55”")
        });
        let edited = db.message(&msg("M8-EDITED", 8, one, a, true, "Buy 100"));
        db.edit(edited, "Buy 1000", World::at(9));
        db.edit(edited, "Buy 100 at limit 12.50", World::at(10));
        let unsent = db.message(&msg("M9-UNSENT", 11, one, a, true, "wrong chat"));
        db.retract(unsent, World::at(12));
        db.message(&NewMessage {
            service: "SMS".into(),
            own_handle: BUSINESS_NUMBER.into(),
            ..msg("M10-SMS", 13, sms, c, false, "Confirm the fill?")
        });
        db.message(&NewMessage { own_handle: PERSONAL_ID.into(), ..msg("M11-PERSONAL", 14, personal, f, false, "dinner at 8?") });
        db.message(&NewMessage { item_type: 2, ..msg("M12-RENAMED", 15, group, b, false, "") });
        World { db, attachments_root }
    }

    /// The missing attachment finishes downloading.
    pub fn download_missing_attachment(&self) {
        let dir = self.attachments_root.join("cd/02/ATT-SCAN");
        std::fs::create_dir_all(&dir).expect("attachment folder");
        std::fs::write(dir.join("signed.pdf"), b"%PDF-1.7 fixture").expect("attachment");
    }

    /// Inserts `n` more business messages from client A, after every row so far.
    pub fn more_messages(db: &ChatDbFixture, prefix: &str, n: usize) {
        let a = db.handle(CLIENT_A, "iMessage");
        let chat: i64 = db
            .connection()
            .query_row("SELECT ROWID FROM chat WHERE guid = 'iMessage;-;+12125550111'", [], |r| r.get(0))
            .expect("chat");
        for i in 0..n {
            db.message(&NewMessage {
                guid: format!("{prefix}-{i}"),
                text: Some(format!("message {i}")),
                text_in_body_only: i % 2 == 0,
                service: "iMessage".into(),
                own_handle: BUSINESS_ID.into(),
                handle_id: a,
                chat_id: chat,
                is_from_me: i % 3 == 0,
                unix_ms: World::at(100) + i as i64,
                ..Default::default()
            });
        }
    }
}
