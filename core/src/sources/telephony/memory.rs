//! What the telephony source remembers, as [`Mark`]s in the device store: per provider row its
//! fate, thread, time, direction and keyed digests of sender and body (never text), and two
//! small indexes that let a new row find the row it edits or reacts to with a point lookup.
//!
//! Keys (all under the source `telephony`):
//! - `sms/<_id>`, `mms/<_id>`: a row seen (`_id` zero-padded to 12 digits), with what is
//!   remembered of it;
//! - `seen/sms/<bucket>`, `seen/mms/<bucket>`: which rows of each 1,024 `_id`s are seen, as a
//!   bitmap ([`super::seen`]): what a scan walks, a small row per 1,024 provider rows;
//! - `gone/sms/<_id>`, `gone/mms/<_id>`: a captured row deleted from the provider (kept out of
//!   the walk; a row reappearing is not captured twice);
//! - `part/<mms _id>/<part _id>`: a media part captured (a row cut short is finished without
//!   capturing its parts again);
//! - `at/<thread>/<time ms>/<sender digest>` → the row key of a message there (edit lookup);
//! - `body/<thread>/<body digest>` → the row key of the one message with that body in the
//!   thread, or `*` when there are several (reaction lookup: a tapback quoting an ambiguous
//!   text is not a reaction);
//! - `baseline-started` (time of the first scan) and `baseline` (the first scan finished).

use crate::model::Channel;
use crate::sources::Mark;

/// The source's name in the store.
pub const SOURCE: &str = "telephony";
pub const BASELINE_KEY: &str = "baseline";
pub const BASELINE_STARTED_KEY: &str = "baseline-started";
/// Marks the `body/` index value of a text several messages of a thread share.
pub const AMBIGUOUS: &[u8] = b"*";

/// The two provider tables whose rows are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

pub fn at_key(thread: i64, time_ms: i64, sender: &Fingerprint) -> String {
    format!("at/{thread}/{time_ms}/{}", hex::encode(sender))
}

pub fn body_key(thread: i64, body: &Fingerprint) -> String {
    format!("body/{thread}/{}", hex::encode(body))
}

/// What became of a provider row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Captured as a message (or found out of scope: the agent stored nothing).
    Captured,
    /// There before the first scan (or older than `backfill_days`): history, not captured.
    Baseline,
    /// An RCS edit of `refers_to`: captured as an `Edit`, never as a message.
    Edit,
    /// Captured as a `Reaction` to `refers_to` (the quoted message).
    Reaction,
    /// The agent refused the row (a field the provider left empty or out of range): evidenced
    /// as an `uncaptured_communication` and passed over, so one bad row cannot stop every scan.
    Refused,
}

const FATES: [Fate; 5] = [Fate::Captured, Fate::Baseline, Fate::Edit, Fate::Reaction, Fate::Refused];

/// A 128-bit keyed fingerprint (the first half of [`crate::Agent::content_digest`]): only
/// compared for equality within one device's memory, where 128 bits leave no practical
/// collision.
pub type Fingerprint = [u8; 16];

/// One remembered row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub fate: Fate,
    pub channel: Channel,
    pub thread: i64,
    /// `source_time_ms` of the row.
    pub time_ms: i64,
    pub outbound: bool,
    /// Fingerprint of the normalised sender.
    pub sender: Fingerprint,
    /// Fingerprint of the body text.
    pub body: Fingerprint,
    /// For an edit or a reaction: the event id (`mms:<id>`) of the message it refers to.
    pub refers_to: Option<String>,
}

/// The encoding's version, its first byte.
const SEEN_V1: u8 = 1;
/// Bytes before `refers_to`: version, fate, channel, thread, time, direction, two fingerprints.
const SEEN_FIXED: usize = 1 + 1 + 1 + 8 + 8 + 1 + 16 + 16;

impl Seen {
    pub fn mark(&self, key: &str) -> Mark {
        Mark::set(SOURCE, key, self.encode())
    }

    /// A compact binary form (52 bytes and the referred id): a provider of a million rows is
    /// remembered in tens of megabytes, and walking it reads little.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEEN_FIXED + self.refers_to.as_ref().map_or(0, String::len));
        out.push(SEEN_V1);
        out.push(FATES.iter().position(|f| *f == self.fate).unwrap_or(0) as u8);
        out.push(Channel::ALL.iter().position(|c| *c == self.channel).unwrap_or(0) as u8);
        out.extend_from_slice(&self.thread.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.push(u8::from(self.outbound));
        out.extend_from_slice(&self.sender);
        out.extend_from_slice(&self.body);
        if let Some(r) = &self.refers_to {
            out.extend_from_slice(r.as_bytes());
        }
        out
    }

    /// A stored value; `None` for one this version cannot read (the row is then treated as
    /// history: never captured again, never reported deleted).
    pub fn parse(value: &[u8]) -> Option<Seen> {
        if value.len() < SEEN_FIXED || value[0] != SEEN_V1 {
            return None;
        }
        let i64_at = |at: usize| i64::from_le_bytes(value[at..at + 8].try_into().expect("8 bytes"));
        let refers_to = &value[SEEN_FIXED..];
        Some(Seen {
            fate: *FATES.get(value[1] as usize)?,
            channel: *Channel::ALL.get(value[2] as usize)?,
            thread: i64_at(3),
            time_ms: i64_at(11),
            outbound: value[19] == 1,
            sender: value[20..36].try_into().ok()?,
            body: value[36..52].try_into().ok()?,
            refers_to: (!refers_to.is_empty()).then(|| String::from_utf8_lossy(refers_to).into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_round_trips_and_refuses_what_it_cannot_read() {
        let s = Seen {
            fate: Fate::Edit,
            channel: Channel::Rcs,
            thread: -3,
            time_ms: 1_779_656_022_000,
            outbound: true,
            sender: [7; 16],
            body: [9; 16],
            refers_to: Some("mms:23".into()),
        };
        assert_eq!(Seen::parse(&s.encode()), Some(s.clone()));
        let plain = Seen { refers_to: None, fate: Fate::Baseline, ..s };
        assert_eq!(plain.encode().len(), SEEN_FIXED);
        assert_eq!(Seen::parse(&plain.encode()), Some(plain));
        assert_eq!(Seen::parse(b"{\"fate\":\"captured\"}"), None);
        assert_eq!(Seen::parse(&[SEEN_V1; 10]), None);
    }
}
