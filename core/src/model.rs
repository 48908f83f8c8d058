//! The capture model: typed conversation events the app hands to the agent, their validation,
//! and the scope rules that decide what is business.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A messaging channel the firm may capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Mms,
    Rcs,
    Imessage,
    Whatsapp,
    Wechat,
    Signal,
    Telegram,
    Line,
    Voice,
}

impl Channel {
    pub const ALL: [Channel; 10] = [
        Channel::Sms,
        Channel::Mms,
        Channel::Rcs,
        Channel::Imessage,
        Channel::Whatsapp,
        Channel::Wechat,
        Channel::Signal,
        Channel::Telegram,
        Channel::Line,
        Channel::Voice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Mms => "mms",
            Channel::Rcs => "rcs",
            Channel::Imessage => "imessage",
            Channel::Whatsapp => "whatsapp",
            Channel::Wechat => "wechat",
            Channel::Signal => "signal",
            Channel::Telegram => "telegram",
            Channel::Line => "line",
            Channel::Voice => "voice",
        }
    }

    /// Parses a channel name, ignoring case and surrounding blanks.
    pub fn parse(name: &str) -> Option<Channel> {
        let name = name.trim();
        Channel::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalises a phone number or handle so that policy entries and event parties compare
/// equal however they were typed: phone numbers keep only digits (and a leading `+`),
/// handles are trimmed and lower-cased.
pub fn normalize_handle(raw: &str) -> String {
    let s = raw.trim();
    let phone_like =
        !s.is_empty() && s.chars().any(|c| c.is_ascii_digit()) && s.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if phone_like {
        let mut out = String::with_capacity(s.len());
        if s.starts_with('+') {
            out.push('+');
        }
        out.extend(s.chars().filter(|c| c.is_ascii_digit()));
        out
    } else {
        s.to_lowercase()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Answered,
    Missed,
    Declined,
    Failed,
    Voicemail,
}

/// What every event carries, whatever its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    pub channel: Channel,
    /// The employee's own number or handle the event happened on. Scope is decided by it:
    /// only lines listed in the policy's `business_lines` are captured.
    pub line: String,
    pub conversation_id: String,
    /// The messaging app's own id for this event (message id, call id, ...).
    pub source_id: String,
    /// When the event happened, per the source, in milliseconds since the Unix epoch (UTC).
    pub source_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub meta: EventMeta,
    pub direction: Direction,
    pub sender: String,
    pub recipients: Vec<String>,
    pub text: String,
    /// `source_id`s of attachments captured separately with [`Attachment`] events.
    pub attachment_ids: Vec<String>,
    pub reply_to: Option<String>,
}

/// A message was edited. Only the new text is kept: the original was captured already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub editor: String,
    pub new_text: String,
}

/// A message was unsent or deleted. Captured as an event; never propagated as a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsend {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub actor: String,
    pub reaction: String,
    /// True when the reaction was taken back.
    pub removed: bool,
}

/// A file sent or received in a conversation, streamed from `path` in bounded chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub meta: EventMeta,
    pub message_id: Option<String>,
    pub direction: Direction,
    pub sender: String,
    pub file_name: String,
    pub mime_type: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub meta: EventMeta,
    pub direction: Direction,
    pub participants: Vec<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub outcome: CallOutcome,
    pub recording_path: Option<PathBuf>,
    pub recording_mime_type: Option<String>,
}

/// An event the app hands to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Message(Message),
    Edit(Edit),
    Unsend(Unsend),
    Reaction(Reaction),
    Attachment(Attachment),
    Call(Call),
}

impl Event {
    pub fn meta(&self) -> &EventMeta {
        match self {
            Event::Message(e) => &e.meta,
            Event::Edit(e) => &e.meta,
            Event::Unsend(e) => &e.meta,
            Event::Reaction(e) => &e.meta,
            Event::Attachment(e) => &e.meta,
            Event::Call(e) => &e.meta,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::Edit(_) => "edit",
            Event::Unsend(_) => "unsend",
            Event::Reaction(_) => "reaction",
            Event::Attachment(_) => "attachment",
            Event::Call(_) => "call",
        }
    }
}
