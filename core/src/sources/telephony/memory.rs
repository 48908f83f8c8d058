//! What the telephony source remembers, as [`Mark`]s in the device store: per provider row its
//! fate, thread, time, direction and keyed digests of sender and body (never text), and two
//! small indexes that let a new row find the row it edits or reacts to with a point lookup.
//!
//! Keys (all under the source `telephony`):
//! - `sms/<_id>`, `mms/<_id>`: a row seen, `_id` zero-padded to 12 digits so that key order is
//!   id order and a scan can walk them beside the provider's rows in bounded memory;
//! - `gone/sms/<_id>`, `gone/mms/<_id>`: a captured row deleted from the provider (kept out of
//!   the walk; a row reappearing is not captured twice);
//! - `part/<mms _id>/<part _id>`: a media part captured (a row cut short is finished without
//!   capturing its parts again);
//! - `at/<thread>/<time ms>/<sender digest>` → the row key of a message there (edit lookup);
//! - `body/<thread>/<body digest>` → the row key of the one message with that body in the
//!   thread, or `*` when there are several (reaction lookup: a tapback quoting an ambiguous
//!   text is not a reaction);
//! - `baseline-started` (time of the first scan) and `baseline` (the first scan finished).

use serde::{Deserialize, Serialize};

use crate::model::Channel;
use crate::sources::Mark;

/// The source's name in the store.
pub const SOURCE: &str = "telephony";
pub const BASELINE_KEY: &str = "baseline";
pub const BASELINE_STARTED_KEY: &str = "baseline-started";
/// Marks the `body/` index value of a text several messages of a thread share.
pub const AMBIGUOUS: &[u8] = b"*";

/// The two provider tables whose rows are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Sms,
    Mms,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Sms => "sms",
            Table::Mms => "mms",
        }
    }

    /// The state key of row `id`.
    pub fn key(self, id: i64) -> String {
        format!("{}/{id:012}", self.name())
    }

    /// Bounds of this table's row keys, exclusive (`/` < digits < `:`).
    pub fn range(self) -> (String, String) {
        (format!("{}/", self.name()), format!("{}:", self.name()))
    }

    /// The event id of row `id` (`sms:7`), stable across scans.
    pub fn event_id(self, id: i64) -> String {
        format!("{}:{id}", self.name())
    }

    /// The event id of a row key.
    pub fn event_id_of_key(key: &str) -> String {
        match key.split_once('/') {
            Some((table, id)) => format!("{table}:{}", id.trim_start_matches('0')),
            None => key.to_string(),
        }
    }
}

pub fn gone_key(table: Table, id: i64) -> String {
    format!("gone/{}", table.key(id))
}

pub fn part_key(mms_id: i64, part_id: i64) -> String {
    format!("part/{mms_id:012}/{part_id}")
}

pub fn at_key(thread: i64, time_ms: i64, sender: &str) -> String {
    format!("at/{thread}/{time_ms}/{sender}")
}

pub fn body_key(thread: i64, body: &str) -> String {
    format!("body/{thread}/{body}")
}

/// What became of a provider row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Captured as a message (or found out of scope: the agent stored nothing).
    Captured,
    /// There before the first scan (or older than `backfill_days`): history, not captured.
    Baseline,
    /// An RCS edit of `refers_to`: captured as an `Edit`, never as a message.
    Edit,
    /// Captured as a `Reaction` to `refers_to` (the quoted message).
    Reaction,
}

/// One remembered row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub fate: Fate,
    pub channel: Channel,
    pub thread: i64,
    /// `source_time_ms` of the row.
    pub time_ms: i64,
    pub outbound: bool,
    /// Keyed digest (hex) of the normalised sender.
    pub sender: String,
    /// Keyed digest (hex) of the body text.
    pub body: String,
    /// For an edit or a reaction: the event id (`mms:<id>`) of the message it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
}

impl Seen {
    pub fn mark(&self, key: &str) -> Mark {
        Mark::set(SOURCE, key, serde_json::to_vec(self).expect("a Seen serialises"))
    }

    /// A stored value; `None` for one this version cannot read (the row is then treated as
    /// history: never captured again, never reported deleted).
    pub fn parse(value: &[u8]) -> Option<Seen> {
        serde_json::from_slice(value).ok()
    }
}
