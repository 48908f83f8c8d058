//! The capture model: typed conversation events the app hands to the agent, their validation,
//! and the scope rules that decide what is business.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::policy::Policy;

/// A messaging channel the firm may capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "MessageEvent"))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "EditEvent"))]
pub struct Edit {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub editor: String,
    pub new_text: String,
}

/// A message was unsent or deleted. Captured as an event; never propagated as a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "UnsendEvent"))]
pub struct Unsend {
    pub meta: EventMeta,
    pub target_message_id: String,
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "ReactionEvent"))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "AttachmentEvent"))]
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
#[cfg_attr(feature = "uniffi", derive(uniffi::Record), uniffi(name = "CallEvent"))]
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

// --------------------------------------------------------------- validation and scope

/// Identifiers and handles longer than this are refused (they would bloat every record).
pub const MAX_ID_LEN: usize = 1024;
/// Source times further ahead of the device clock than this are refused as invalid.
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;
/// Only events on a business line, on a channel the policy captures, are business.
pub fn in_scope(policy: &Policy, event: &Event) -> bool {
    meta_in_scope(policy, event.meta())
}

/// The scope rule on what every event carries: its channel is captured and its line is one of
/// the business lines. (For a source evidencing a row it could not turn into an event.)
pub fn meta_in_scope(policy: &Policy, meta: &EventMeta) -> bool {
    policy.capture_channels.contains(&meta.channel) && policy.business_lines.contains(&normalize_handle(&meta.line))
}

fn invalid(detail: String) -> Error {
    Error::new(ErrorKind::InvalidEvent, detail)
}

/// Checks an event's shape. Details name fields, never their values (they may be personal).
pub fn validate(event: &Event, now_ms: i64) -> Result<()> {
    let kind = event.kind();
    let field = |name: &str, value: &str| -> Result<()> {
        if value.trim().is_empty() {
            return Err(invalid(format!("{kind}: {name} is empty")));
        }
        if value.len() > MAX_ID_LEN {
            return Err(invalid(format!("{kind}: {name} is longer than {MAX_ID_LEN} bytes")));
        }
        Ok(())
    };
    let meta = event.meta();
    field("line", &meta.line)?;
    field("conversation_id", &meta.conversation_id)?;
    field("source_id", &meta.source_id)?;
    let time = |name: &str, t: i64| -> Result<()> {
        if t <= 0 {
            return Err(invalid(format!("{kind}: {name} must be a positive Unix time in milliseconds")));
        }
        if t - now_ms > MAX_FUTURE_SKEW_MS {
            return Err(invalid(format!("{kind}: {name} is {} s ahead of the device clock", (t - now_ms) / 1000)));
        }
        Ok(())
    };
    time("source_time_ms", meta.source_time_ms)?;
    let line = normalize_handle(&meta.line);
    match event {
        Event::Message(m) => {
            field("sender", &m.sender)?;
            if m.recipients.is_empty() {
                return Err(invalid(format!("{kind}: recipients is empty")));
            }
            for r in &m.recipients {
                field("recipients[]", r)?;
            }
            if m.text.is_empty() && m.attachment_ids.is_empty() {
                return Err(invalid(format!("{kind}: neither text nor attachments")));
            }
            let parties = std::iter::once(&m.sender).chain(&m.recipients);
            if !parties.map(|p| normalize_handle(p)).any(|p| p == line) {
                return Err(invalid(format!("{kind}: no business party: line is neither the sender nor a recipient")));
            }
        }
        Event::Edit(e) => {
            field("target_message_id", &e.target_message_id)?;
            field("editor", &e.editor)?;
        }
        Event::Unsend(u) => {
            field("target_message_id", &u.target_message_id)?;
            field("actor", &u.actor)?;
        }
        Event::Reaction(r) => {
            field("target_message_id", &r.target_message_id)?;
            field("actor", &r.actor)?;
            field("reaction", &r.reaction)?;
        }
        Event::Attachment(a) => {
            field("sender", &a.sender)?;
            field("file_name", &a.file_name)?;
            field("mime_type", &a.mime_type)?;
            if a.path.as_os_str().is_empty() {
                return Err(invalid(format!("{kind}: path is empty")));
            }
        }
        Event::Call(c) => {
            if c.participants.is_empty() {
                return Err(invalid(format!("{kind}: participants is empty")));
            }
            for p in &c.participants {
                field("participants[]", p)?;
            }
            time("started_ms", c.started_ms)?;
            if let Some(end) = c.ended_ms
                && end < c.started_ms
            {
                return Err(invalid(format!("{kind}: ended_ms is before started_ms")));
            }
        }
    }
    Ok(())
}
