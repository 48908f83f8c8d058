//! What the telephony source remembers of each provider row it has seen, as [`Mark`] values:
//! ids, thread, time, direction and keyed digests of the sender and body; never text.

use serde::{Deserialize, Serialize};

use crate::model::Channel;
use crate::sources::{Mark, SourceState};

/// The source's name in the store.
pub const SOURCE: &str = "telephony";
/// Set once the first scan took its baseline.
pub const BASELINE_KEY: &str = "baseline";

/// What became of a provider row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Captured as a message (or found out of scope: the agent stored nothing).
    Captured,
    /// There before the first scan (or older than `backfill_days`): history, not captured.
    Baseline,
    /// An RCS edit of `edit_of`: captured as an `Edit`, never as a message.
    Edit,
    /// Captured as a `Reaction` to `edit_of` (the quoted message).
    Reaction,
    /// The row disappeared from the provider and its `Unsend` was captured.
    Deleted,
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
    /// For an edit or a reaction: the provider id (`mms:<id>`) of the row it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
}

impl Seen {
    pub fn mark(&self, key: &str) -> Mark {
        Mark::set(SOURCE, key, serde_json::to_vec(self).expect("a Seen serialises"))
    }
}

/// Every remembered row by provider id (`sms:<_id>`, `mms:<_id>`); part keys and the baseline
/// marker are left out. A value that does not parse is skipped: its row is then new again,
/// which can only duplicate, never lose.
pub fn rows(state: &SourceState) -> std::collections::BTreeMap<String, Seen> {
    state
        .iter()
        .filter(|(k, _)| (k.starts_with("sms:") || k.starts_with("mms:")) && !k.contains('/'))
        .filter_map(|(k, v)| serde_json::from_slice(v).ok().map(|s| (k.clone(), s)))
        .collect()
}

/// The key of a captured media part.
pub fn part_key(row_key: &str, part_id: i64) -> String {
    format!("{row_key}/part:{part_id}")
}
