//! Rows of `chat.db` to typed events. Pure functions: what the row says, and what the relay
//! remembers of it, decide the events; nothing here reads the database or the store.

use std::path::{Path, PathBuf};

use crate::model::{self, Channel, Direction, Event, EventMeta};

use super::schema::{AttachmentRow, ChatRow, MessageRow, apple_time_to_unix_ms};
use super::typedstream;

/// Where Messages keeps attachments; `attachment.filename` starts with it.
pub const ATTACHMENTS_PREFIX: &str = "~/Library/Messages/Attachments/";

/// The object-replacement character Messages puts in `text` where an attachment sits.
const OBJECT_REPLACEMENT: char = '\u{fffc}';

/// The channel of a row's `service`; `None` for services the relay does not know.
pub fn channel(service: Option<&str>) -> Option<Channel> {
    match service? {
        "iMessage" => Some(Channel::Imessage),
        "SMS" => Some(Channel::Sms),
        "RCS" => Some(Channel::Rcs),
        _ => None,
    }
}

/// Strips Messages' account prefixes (`e:`, `E:`, `p:`, `P:`) from an account string.
fn bare_account(account: &str) -> &str {
    match account.split_once(':') {
        Some((prefix, rest)) if prefix.len() == 1 && "eEpP".contains(prefix) => rest,
        _ => account,
    }
}

/// The employee's own handle the row happened on: the business line, or a personal one.
pub fn own_handle(row: &MessageRow, chat: Option<&ChatRow>) -> Option<String> {
    let candidates = [
        row.destination_caller_id.as_deref(),
        row.account.as_deref().map(bare_account),
        chat.and_then(|c| c.last_addressed_handle.as_deref()),
        chat.and_then(|c| c.account_login.as_deref()).map(bare_account),
    ];
    candidates.into_iter().flatten().map(str::trim).find(|s| !s.is_empty()).map(str::to_string)
}

/// The row's text: `text`, or the string archived in `attributedBody`, without the
/// attachment placeholders. `None` when neither holds any.
pub fn text_of(text: Option<&str>, attributed_body: Option<&[u8]>) -> Result<Option<String>, typedstream::DecodeError> {
    let raw = match text.filter(|t| !t.is_empty()) {
        Some(t) => t.to_string(),
        None => match attributed_body.filter(|b| !b.is_empty()) {
            Some(b) => typedstream::attributed_string_text(b)?,
            None => return Ok(None),
        },
    };
    let clean: String = raw.chars().filter(|&c| c != OBJECT_REPLACEMENT).collect();
    Ok(if clean.trim().is_empty() { None } else { Some(clean) })
}

/// A tapback's name and whether it was taken back, from `associated_message_type`.
pub fn tapback(kind: i64, emoji: Option<&str>) -> Option<(String, bool)> {
    let (base, removed) = match kind {
        2000..=2006 => (kind - 2000, false),
        3000..=3006 => (kind - 3000, true),
        _ => return None,
    };
    let name = match base {
        0 => "love",
        1 => "like",
        2 => "dislike",
        3 => "laugh",
        4 => "emphasize",
        5 => "question",
        _ => return Some((emoji.filter(|e| !e.is_empty()).unwrap_or("emoji").to_string(), removed)),
    };
    Some((name.to_string(), removed))
}

/// The target guid in `associated_message_guid` (`p:0/GUID`, `bp:GUID`, or a bare guid).
pub fn target_guid(associated: &str) -> &str {
    let s = associated.rsplit_once('/').map_or(associated, |(_, g)| g);
    s.strip_prefix("bp:").unwrap_or(s)
}

/// One version of an edited message, from `message_summary_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub unix_ms: i64,
    pub text: String,
}

/// The edit history in `message_summary_info` (a binary property list): key `ec` maps each
/// message part to its versions, oldest first, each with `d` (its time) and `t` (its text as
/// an archived attributed string). Only part 0 (the text) is read. Empty when absent.
pub fn edit_history(summary: Option<&[u8]>) -> Vec<Version> {
    let Some(bytes) = summary.filter(|b| !b.is_empty()) else { return Vec::new() };
    let Ok(value) = plist::Value::from_reader(std::io::Cursor::new(bytes)) else { return Vec::new() };
    let part = value.as_dictionary().and_then(|d| d.get("ec")).and_then(|ec| ec.as_dictionary()).and_then(|ec| ec.get("0"));
    let Some(versions) = part.and_then(|p| p.as_array()) else { return Vec::new() };
    versions
        .iter()
        .filter_map(|v| {
            let v = v.as_dictionary()?;
            let t = match v.get("d")? {
                plist::Value::Integer(i) => i.as_signed()?,
                plist::Value::Real(r) => *r as i64,
                _ => return None,
            };
            let text = text_of(None, v.get("t")?.as_data()).ok()??;
            Some(Version { unix_ms: apple_time_to_unix_ms(t), text })
        })
        .collect()
}

/// Resolves `attachment.filename` against `--attachments-root` (standing for
/// `~/Library/Messages/Attachments`), or the home directory for other `~/` paths.
pub fn resolve_attachment(filename: &str, root: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    if let (Some(rest), Some(root)) = (filename.strip_prefix(ATTACHMENTS_PREFIX), root) {
        return Some(root.join(rest));
    }
    if let Some(rest) = filename.strip_prefix("~/") {
        return home.map(|h| h.join(rest));
    }
    let p = PathBuf::from(filename);
    p.is_absolute().then_some(p)
}

/// The parties of a row: who sent it and who received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub channel: Channel,
    pub line: String,
    pub conversation_id: String,
    pub direction: Direction,
    pub sender: String,
    pub recipients: Vec<String>,
}

/// Works out a row's parties; `None` when the row names no usable channel or own handle.
pub fn parties(row: &MessageRow, chat: Option<&ChatRow>) -> Option<Parties> {
    let channel = channel(row.service.as_deref())?;
    let line = own_handle(row, chat)?;
    let others: Vec<String> = match chat {
        Some(c) if !c.participants.is_empty() => c.participants.clone(),
        _ => row.handle.iter().cloned().collect(),
    };
    let own = model::normalize_handle(&line);
    let others: Vec<String> = others.into_iter().filter(|h| model::normalize_handle(h) != own).collect();
    let conversation_id = match (chat, &row.handle) {
        (Some(c), _) => c.guid.clone(),
        (None, Some(h)) => format!("{};-;{h}", row.service.as_deref().unwrap_or("")),
        (None, None) => return None,
    };
    let (direction, sender, recipients) = if row.is_from_me {
        (Direction::Outbound, line.clone(), others)
    } else {
        let sender = row.handle.clone().or_else(|| others.first().cloned())?;
        let s = model::normalize_handle(&sender);
        let recipients =
            std::iter::once(line.clone()).chain(others.into_iter().filter(|h| model::normalize_handle(h) != s)).collect();
        (Direction::Inbound, sender, recipients)
    };
    if recipients.is_empty() {
        return None;
    }
    Some(Parties { channel, line, conversation_id, direction, sender, recipients })
}

impl Parties {
    pub fn meta(&self, source_id: String, unix_ms: i64) -> EventMeta {
        EventMeta {
            channel: self.channel,
            line: self.line.clone(),
            conversation_id: self.conversation_id.clone(),
            source_id,
            source_time_ms: unix_ms,
        }
    }
}

/// An attachment of a message as the relay found it on disk.
#[derive(Debug, Clone)]
pub struct FoundAttachment {
    pub row: AttachmentRow,
    /// The resolved path, when the file is there.
    pub present: Option<PathBuf>,
    /// Where it is expected (the resolved path, or the database's own `filename`, or its
    /// guid): named in the omission record while it is not there.
    pub expected: PathBuf,
}

/// What to do for one row, in order: capture an event, or report an attachment that is not
/// on disk yet (captured later when it appears).
#[derive(Debug, Clone)]
pub enum Action {
    Capture(Event),
    /// An attachment whose file is not there (not downloaded yet): recorded as omitted, and
    /// captured when it appears. `event` names where it was expected.
    AttachmentMissing {
        attachment: model::Attachment,
        attachment_guid: String,
    },
}

/// The source id of the edit of `guid` made at `unix_ms`.
pub fn edit_id(guid: &str, unix_ms: i64) -> String {
    format!("{guid}:edit:{unix_ms}")
}

/// The source id of the unsend of `guid`.
pub fn unsend_id(guid: &str) -> String {
    format!("{guid}:unsend")
}

pub fn attachment_event(p: &Parties, message_guid: &str, unix_ms: i64, a: &AttachmentRow, path: PathBuf) -> Event {
    Event::Attachment(attachment_of(p, message_guid, unix_ms, a, path))
}

/// The attachment of a message, its bytes expected at `path`.
pub fn attachment_of(p: &Parties, message_guid: &str, unix_ms: i64, a: &AttachmentRow, path: PathBuf) -> model::Attachment {
    let file_name = a
        .transfer_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| a.guid.clone());
    model::Attachment {
        meta: p.meta(a.guid.clone(), unix_ms),
        message_id: Some(message_guid.to_string()),
        direction: p.direction,
        sender: p.sender.clone(),
        file_name,
        mime_type: a.mime_type.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "application/octet-stream".into()),
        path,
    }
}

/// The edits after the first `seen` versions of a message's history (or, without a history,
/// one edit with the current text at `date_edited`).
pub fn edits_after(row: &MessageRow, p: &Parties, history: &[Version], seen: usize, current: Option<&str>) -> Vec<Event> {
    let edit = |unix_ms: i64, text: &str| {
        Event::Edit(model::Edit {
            meta: p.meta(edit_id(&row.guid, unix_ms), unix_ms),
            target_message_id: row.guid.clone(),
            editor: p.sender.clone(),
            new_text: text.to_string(),
        })
    };
    if history.len() > 1 {
        history.iter().skip(seen.max(1)).map(|v| edit(v.unix_ms, &v.text)).collect()
    } else {
        let at = apple_time_to_unix_ms(row.date_edited);
        vec![edit(at, current.unwrap_or(""))]
    }
}

/// The unsend of a message.
pub fn unsend_event(row: &MessageRow, p: &Parties) -> Event {
    let at = apple_time_to_unix_ms(row.date_retracted);
    Event::Unsend(model::Unsend {
        meta: p.meta(unsend_id(&row.guid), at),
        target_message_id: row.guid.clone(),
        actor: p.sender.clone(),
    })
}

/// The actions for a row seen for the first time. `Err` names why the row has no event (a
/// system row, a service or handle the relay cannot place, no content).
pub fn first_sight(
    row: &MessageRow,
    chat: Option<&ChatRow>,
    attachments: &[FoundAttachment],
) -> Result<Vec<Action>, &'static str> {
    if row.item_type != 0 {
        return Err("not a message (group or system event)");
    }
    let p = parties(row, chat).ok_or("no known service, own handle or other party")?;
    let at = apple_time_to_unix_ms(row.date);
    if let Some((reaction, removed)) = tapback(row.associated_message_type, row.associated_message_emoji.as_deref()) {
        let target =
            row.associated_message_guid.as_deref().map(target_guid).filter(|g| !g.is_empty()).ok_or("tapback without target")?;
        return Ok(vec![Action::Capture(Event::Reaction(model::Reaction {
            meta: p.meta(row.guid.clone(), at),
            target_message_id: target.to_string(),
            actor: p.sender.clone(),
            reaction,
            removed,
        }))]);
    }
    if row.date_retracted > 0 {
        // Retracted before the relay saw it: the text is gone; the unsend is the record.
        return Ok(vec![Action::Capture(unsend_event(row, &p))]);
    }
    let current = text_of(row.text.as_deref(), row.attributed_body.as_deref()).map_err(|_| "attributedBody unreadable")?;
    let history = if row.date_edited > 0 { edit_history(row.message_summary_info.as_deref()) } else { Vec::new() };
    // With a history, the message is its first version and every later one an edit.
    let original = if history.len() > 1 { Some(history[0].text.clone()) } else { current.clone() };
    let mut actions = Vec::new();
    let attachment_ids: Vec<String> = attachments.iter().map(|a| a.row.guid.clone()).collect();
    if original.is_none() && attachment_ids.is_empty() {
        return Err("no text and no attachment");
    }
    actions.push(Action::Capture(Event::Message(model::Message {
        meta: p.meta(row.guid.clone(), at),
        direction: p.direction,
        sender: p.sender.clone(),
        recipients: p.recipients.clone(),
        text: original.unwrap_or_default(),
        attachment_ids,
        reply_to: row.thread_originator_guid.clone().filter(|g| !g.is_empty()),
    })));
    for a in attachments {
        actions.push(match &a.present {
            Some(path) => Action::Capture(attachment_event(&p, &row.guid, at, &a.row, path.clone())),
            None => Action::AttachmentMissing {
                attachment: attachment_of(&p, &row.guid, at, &a.row, a.expected.clone()),
                attachment_guid: a.row.guid.clone(),
            },
        });
    }
    if row.date_edited > 0 && history.len() > 1 {
        actions.extend(edits_after(row, &p, &history, 1, current.as_deref()).into_iter().map(Action::Capture));
    }
    Ok(actions)
}
