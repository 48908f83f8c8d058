//! Provider rows → the agent's events: who sent to whom, on which channel, in which
//! conversation, under which ids.

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Attachment, Direction, Edit, Event, EventMeta, Message, Reaction, Unsend, normalize_handle};

use super::Row;
use super::memory::Seen;
use super::view::Part;

/// What the provider writes in `addr` for the phone's own number on sent MMS.
const SELF_TOKEN: &str = "insert-address-token";

/// The sender of a row: the line itself when sent; the peer (`address`) of a received SMS; the
/// `addr` row of type 137 of a received MMS/RCS message.
pub(super) fn sender(row: &Row<'_>, line: &str) -> Option<String> {
    if row.outbound() {
        return Some(line.to_string());
    }
    match row {
        Row::Sms(r) => r.address.clone().filter(|a| !a.trim().is_empty()),
        Row::Mms(r) => r.from().filter(|a| *a != SELF_TOKEN).map(str::to_string),
    }
}

/// One row's events.
pub(super) struct Mapping<'a> {
    pub row: &'a Row<'a>,
    pub event_id: &'a str,
    /// The business line as the policy writes it, and normalised.
    pub line: &'a str,
    pub business: &'a str,
}

impl Mapping<'_> {
    fn meta(&self, source_id: &str) -> EventMeta {
        EventMeta {
            channel: self.row.channel(),
            line: self.line.to_string(),
            conversation_id: format!("thread:{}", self.row.thread()),
            source_id: source_id.to_string(),
            source_time_ms: self.row.time_ms(),
        }
    }

    fn direction(&self) -> Direction {
        if self.row.outbound() { Direction::Outbound } else { Direction::Inbound }
    }

    fn sender(&self) -> Result<String> {
        sender(self.row, self.line).ok_or_else(|| {
            let field = match self.row {
                Row::Sms(_) => "address",
                Row::Mms(_) => "addr (type 137, From)",
            };
            Error::new(ErrorKind::InvalidEvent, format!("{}: a received row without its sender ({field})", self.event_id))
        })
    }

    /// Everyone the row went to. Received: the row's recipients with the line among them
    /// (an SMS names only its peer; an RCS group names every member). Sent: the peer or the
    /// `addr` recipients.
    fn recipients(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = match self.row {
            Row::Sms(r) if r.outbound() => r.address.iter().cloned().collect(),
            Row::Sms(_) => Vec::new(),
            Row::Mms(r) => r.to().into_iter().filter(|a| *a != SELF_TOKEN).map(str::to_string).collect(),
        };
        out.retain(|a| !a.trim().is_empty());
        if !self.row.outbound() && !out.iter().any(|a| normalize_handle(a) == self.business) {
            out.push(self.line.to_string());
        }
        if out.is_empty() {
            let field = match self.row {
                Row::Sms(_) => "address",
                Row::Mms(_) => "addr (types 151, 130)",
            };
            return Err(Error::new(
                ErrorKind::InvalidEvent,
                format!("{}: a sent row without recipients ({field})", self.event_id),
            ));
        }
        Ok(out)
    }

    /// The row as a message, or `None` when it holds nothing (no text, no media).
    pub fn message(&self, attachment_ids: Vec<String>) -> Result<Option<Event>> {
        let text = self.row.text();
        if text.is_empty() && attachment_ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(Event::Message(Message {
            meta: self.meta(self.event_id),
            direction: self.direction(),
            sender: self.sender()?,
            recipients: self.recipients()?,
            text,
            attachment_ids,
            reply_to: None,
        })))
    }

    /// A media part, streamed from the file the platform (or the replay) put its bytes in.
    pub fn attachment(&self, part: &Part, part_key: &str) -> Result<Event> {
        let path = part.file.clone().ok_or_else(|| {
            Error::new(ErrorKind::File, format!("{part_key}: the part's bytes were not handed over (_data {:?})", part.data))
        })?;
        let file_name = part
            .name
            .clone()
            .or_else(|| part.file_name.clone())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("part-{}", part.id));
        Ok(Event::Attachment(Attachment {
            meta: self.meta(part_key),
            message_id: Some(self.event_id.to_string()),
            direction: self.direction(),
            sender: self.sender()?,
            file_name,
            mime_type: part.ct.clone(),
            path,
        }))
    }

    /// An RCS edit of `original`, with the new text.
    pub fn edit(&self, original: &str) -> Result<Event> {
        Ok(Event::Edit(Edit {
            meta: self.meta(self.event_id),
            target_message_id: original.to_string(),
            editor: self.sender()?,
            new_text: self.row.text(),
        }))
    }

    /// A tapback on `target`.
    pub fn reaction(&self, target: &str, emoji: &str) -> Result<Event> {
        Ok(Event::Reaction(Reaction {
            meta: self.meta(self.event_id),
            target_message_id: target.to_string(),
            actor: self.sender()?,
            reaction: emoji.to_string(),
            removed: false,
        }))
    }
}

/// The deletion of a captured row, seen now: the phone's user deleted it.
pub(super) fn unsend(event_id: &str, s: &Seen, line: &str, now_ms: i64) -> Event {
    Event::Unsend(Unsend {
        meta: EventMeta {
            channel: s.channel,
            line: line.to_string(),
            conversation_id: format!("thread:{}", s.thread),
            source_id: format!("{event_id}#deleted"),
            source_time_ms: now_ms,
        },
        target_message_id: event_id.to_string(),
        actor: line.to_string(),
    })
}

/// A tapback's text, as Google Messages writes it: `<emoji> to "<quoted text>"`, the emoji
/// between zero-width spaces, straight or curly quotes. Returns the emoji and the quoted text;
/// `None` for anything else (the row is then an ordinary message).
pub(super) fn tapback(text: &str) -> Option<(&str, &str)> {
    const ZERO_WIDTH: &[char] = &['\u{200B}', '\u{2060}', '\u{FEFF}'];
    let (emoji, rest) = text.split_once(" to ")?;
    let emoji = emoji.trim_matches(ZERO_WIDTH).trim();
    let rest = rest.trim_start_matches(ZERO_WIDTH);
    let quoted = rest
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .or_else(|| rest.strip_prefix('\u{201C}').and_then(|q| q.strip_suffix('\u{201D}')))?;
    // An emoji (sequence) is short and has no letters or digits: "Meeting to" is not one.
    let is_emoji = !emoji.is_empty()
        && emoji.chars().count() <= 12
        && emoji.chars().all(|c| !c.is_alphanumeric() && !c.is_whitespace() && !c.is_ascii_punctuation());
    is_emoji.then_some((emoji, quoted))
}

#[cfg(test)]
mod tests {
    use super::tapback;

    #[test]
    fn tapbacks_are_recognised_only_in_their_exact_form() {
        assert_eq!(tapback("\u{200B}👍\u{200B} to \"See you at 3\""), Some(("👍", "See you at 3")));
        assert_eq!(tapback("❤️ to \u{201C}ok\u{201D}"), Some(("❤️", "ok")));
        assert_eq!(tapback("👨\u{200D}👩\u{200D}👧 to \"family\""), Some(("👨\u{200D}👩\u{200D}👧", "family")));
        assert_eq!(tapback("Talk to \"him\""), None, "words are not an emoji");
        assert_eq!(tapback("👍 to \"unterminated"), None);
        assert_eq!(tapback("👍 to you"), None);
        assert_eq!(tapback("See you at 3"), None);
    }
}
