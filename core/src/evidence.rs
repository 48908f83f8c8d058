//! Compliance evidence the agent keeps about itself: heartbeats, windows when capture was
//! unavailable (and why), the client-notice schedule, and stale pending data. Regulators ask
//! firms to prove capture, including for the hours when it could not happen.
//!
//! The state lives in memory and is saved (as JSON in the store's `meta` table) together with
//! every evidence event, so it survives restarts. Counters counted since the last save are lost
//! if the process is killed; that run's crash is itself recorded at the next start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Channel;
use crate::policy::{DisclaimerMode, Policy};
use crate::record::AgentEvent;

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Why capture is unavailable: the key of a could-not-record window. Its text form
/// (`not_configured`, `policy_withdrawn`, `queue_full`, `disk_full`,
/// `channel_disabled:<channel>`, `source_unavailable:<source>`) is what status, MDM feedback (`verbatim.unavailable`), the saved state and `capture_unavailable` events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// No valid policy in force.
    NotConfigured,
    /// The MDM removed the managed configuration: capture stops until one is pushed again.
    PolicyWithdrawn,
    /// The queue reached `queue_max_mb`.
    QueueFull,
    /// The device's storage is full.
    DiskFull,
    /// The policy switched this channel off.
    ChannelDisabled(Channel),
    /// A capture source cannot read the store it captures from (Messages' database missing
    /// or unreadable, Full Disk Access revoked): one of [`Cause::SOURCES`].
    SourceUnavailable(&'static str),
}

impl Cause {
    const CHANNEL_PREFIX: &'static str = "channel_disabled:";
    const SOURCE_PREFIX: &'static str = "source_unavailable:";
    /// The capture sources a `source_unavailable` cause can name.
    pub const SOURCES: [&'static str; 4] = ["imessage", "telephony", "wecom", "whatsapp"];

    /// Reads the text form back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Cause> {
        match text {
            "not_configured" => Some(Cause::NotConfigured),
            "policy_withdrawn" => Some(Cause::PolicyWithdrawn),
            "queue_full" => Some(Cause::QueueFull),
            "disk_full" => Some(Cause::DiskFull),
            _ => match text.strip_prefix(Self::SOURCE_PREFIX) {
                Some(source) => Self::SOURCES.into_iter().find(|s| *s == source).map(Cause::SourceUnavailable),
                None => text.strip_prefix(Self::CHANNEL_PREFIX).and_then(Channel::parse).map(Cause::ChannelDisabled),
            },
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::NotConfigured => f.write_str("not_configured"),
            Cause::PolicyWithdrawn => f.write_str("policy_withdrawn"),
            Cause::QueueFull => f.write_str("queue_full"),
            Cause::DiskFull => f.write_str("disk_full"),
            Cause::ChannelDisabled(c) => write!(f, "{}{c}", Self::CHANNEL_PREFIX),
            Cause::SourceUnavailable(s) => write!(f, "{}{s}", Self::SOURCE_PREFIX),
        }
    }
}

/// Compares with the text form (`cause == "queue_full"`).
impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        Cause::parse(other) == Some(*self)
    }
}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        let text = String::deserialize(d)?;
        Cause::parse(&text).ok_or_else(|| serde::de::Error::custom("unknown cause of unavailability"))
    }
}

/// What became of one capture request. Counted once, by [`EvidenceState::count`], into both
/// the status's counters (since the agent opened) and the next heartbeat's tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Captured,
    OutOfScope,
    Invalid,
    RefusedNotConfigured,
    RefusedQueueFull,
    RefusedDiskFull,
}

/// Capture requests since the last heartbeat, for the next one (persisted with the state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub captured: u64,
    pub out_of_scope: u64,
    pub refused: u64,
}

/// Capture requests since the agent opened, for its status (memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "CaptureCounters"))]
pub struct Counters {
    pub captured: u64,
    pub out_of_scope: u64,
    pub invalid: u64,
    pub refused_not_configured: u64,
    pub refused_queue_full: u64,
}

/// An open could-not-record window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub detail: String,
    pub refused: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceState {
    /// When the last heartbeat was recorded (or the store first opened).
    pub last_heartbeat_ms: i64,
    /// Counted since the last heartbeat.
    pub tally: Tally,
    /// Counted since the agent opened (not persisted).
    #[serde(skip)]
    pub since_open: Counters,
    /// Open windows by cause.
    pub windows: BTreeMap<Cause, Window>,
    /// Last showing of the client notice, by conversation (a hash: no conversation ids at rest).
    pub disclaimers: BTreeMap<String, i64>,
    pub pending_alert_raised: bool,
}

impl EvidenceState {
    pub fn load(json: Option<&str>, now_ms: i64) -> EvidenceState {
        match json.and_then(|j| serde_json::from_str::<EvidenceState>(j).ok()) {
            Some(state) => state,
            None => EvidenceState { last_heartbeat_ms: now_ms, ..EvidenceState::default() },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("evidence state serialises")
    }

    /// Counts one capture request in the status's counters and the heartbeat's tally.
    pub fn count(&mut self, what: Counted) {
        let (open, tally) = (&mut self.since_open, &mut self.tally);
        match what {
            Counted::Captured => {
                open.captured += 1;
                tally.captured += 1;
            }
            Counted::OutOfScope => {
                open.out_of_scope += 1;
                tally.out_of_scope += 1;
            }
            Counted::Invalid => {
                open.invalid += 1;
                tally.refused += 1;
            }
            Counted::RefusedNotConfigured => {
                open.refused_not_configured += 1;
                tally.refused += 1;
            }
            Counted::RefusedQueueFull => {
                open.refused_queue_full += 1;
                tally.refused += 1;
            }
            // The status has no disk-full counter: the open window says it.
            Counted::RefusedDiskFull => tally.refused += 1,
        }
    }

    /// Opens a window for `cause` unless one is open; counts one refusal when `refused`.
    /// Returns true when the window is new (the state must be saved).
    pub fn open_window(&mut self, cause: Cause, detail: &str, now_ms: i64, refused: bool) -> bool {
        let new = !self.windows.contains_key(&cause);
        let window =
            self.windows.entry(cause).or_insert_with(|| Window { start_ms: now_ms, detail: detail.to_string(), refused: 0 });
        window.refused += u64::from(refused);
        new
    }

    /// Counts an event refused or dropped during an open window, if one is open.
    pub fn count_in_window(&mut self, cause: Cause) {
        if let Some(w) = self.windows.get_mut(&cause) {
            w.refused += 1;
        }
    }

    /// Closes the windows of `causes` that are open, as evidence events.
    pub fn close_windows(&mut self, causes: impl IntoIterator<Item = Cause>, now_ms: i64) -> Vec<AgentEvent> {
        causes
            .into_iter()
            .filter_map(|cause| {
                self.windows.remove(&cause).map(|w| AgentEvent::CaptureUnavailable {
                    cause: cause.to_string(),
                    detail: w.detail,
                    start_ms: w.start_ms,
                    end_ms: now_ms,
                    refused: w.refused,
                })
            })
            .collect()
    }

    /// Events due at `now`: the heartbeat when its interval has passed, and the stale-pending
    /// alert once per crossing of `pending_alert_hours`.
    pub fn due(&mut self, policy: &Policy, oldest_pending_ms: Option<i64>, now_ms: i64) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        let interval = policy.heartbeat_hours as i64 * HOUR_MS;
        if now_ms - self.last_heartbeat_ms >= interval {
            let tally = std::mem::take(&mut self.tally);
            events.push(AgentEvent::Heartbeat {
                interval_hours: policy.heartbeat_hours,
                since_ms: self.last_heartbeat_ms,
                captured: tally.captured,
                out_of_scope: tally.out_of_scope,
                refused: tally.refused,
            });
            self.last_heartbeat_ms = now_ms;
        }
        let stale = oldest_pending_ms.filter(|t| now_ms - t > policy.pending_alert_hours as i64 * HOUR_MS);
        match stale {
            Some(oldest) if !self.pending_alert_raised => {
                self.pending_alert_raised = true;
                events.push(AgentEvent::PendingStale { oldest_pending_ms: oldest, hours: policy.pending_alert_hours });
            }
            None => self.pending_alert_raised = false,
            _ => {}
        }
        events
    }

    /// Whether the client notice is due in this conversation now.
    pub fn disclaimer_due(&self, policy: &Policy, channel: Channel, conversation_id: &str, now_ms: i64) -> bool {
        if policy.disclaimer_text.is_none() {
            return false;
        }
        let last = self.disclaimers.get(&conversation_key(channel, conversation_id));
        match (policy.disclaimer_mode, last) {
            (DisclaimerMode::Off, _) => false,
            (_, None) => true,
            (DisclaimerMode::FirstMessage, Some(_)) => false,
            (DisclaimerMode::Daily, Some(&t)) => t.div_euclid(DAY_MS) < now_ms.div_euclid(DAY_MS),
        }
    }

    pub fn disclaimer_shown(&mut self, channel: Channel, conversation_id: &str, now_ms: i64) {
        self.disclaimers.insert(conversation_key(channel, conversation_id), now_ms);
    }
}

fn conversation_key(channel: Channel, conversation_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(channel.as_str().as_bytes());
    h.update([0]);
    h.update(conversation_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_keep_their_text_form_in_the_saved_state() {
        let all = [
            Cause::NotConfigured,
            Cause::PolicyWithdrawn,
            Cause::QueueFull,
            Cause::DiskFull,
            Cause::ChannelDisabled(Channel::Whatsapp),
            Cause::SourceUnavailable("imessage"),
            Cause::SourceUnavailable("telephony"),
        ];
        for cause in all {
            assert_eq!(Cause::parse(&cause.to_string()), Some(cause));
        }
        assert_eq!(Cause::ChannelDisabled(Channel::Whatsapp), "channel_disabled:whatsapp");
        assert_eq!(Cause::parse("channel_disabled:fax"), None);
        assert_eq!(Cause::SourceUnavailable("imessage"), "source_unavailable:imessage");
        assert_eq!(Cause::parse("source_unavailable:fax"), None);
        // A state saved by an earlier version (string keys) loads with the same windows.
        let saved = r#"{"last_heartbeat_ms":5,"tally":{"captured":1,"out_of_scope":0,"refused":2},
            "windows":{"queue_full":{"start_ms":1,"detail":"full","refused":2},
                       "channel_disabled:sms":{"start_ms":3,"detail":"off","refused":0}},
            "disclaimers":{},"pending_alert_raised":false}"#;
        let state = EvidenceState::load(Some(saved), 0);
        assert_eq!(state.windows.keys().copied().collect::<Vec<_>>(), [Cause::QueueFull, Cause::ChannelDisabled(Channel::Sms)]);
        let again = EvidenceState::load(Some(&state.to_json()), 0);
        assert_eq!(again, state);
    }
}
