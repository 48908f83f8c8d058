//! The webhook's JSON, turned into what to capture. Meta's payload is an envelope
//! (`object`, `entry[].changes[]` with a `field` and a `value`) around lists of messages in
//! the Cloud API's message shape; this module reads exactly the parts Verbatim needs and
//! plans one [`Item`] per WhatsApp message, in payload order. Nothing here touches storage.
//!
//! Parties are E.164 (`+` and digits): Meta writes numbers as bare digits (`wa_id`,
//! `display_phone_number`), the policy's `business_lines` as an admin types them.

use serde_json::Value as Json;

use crate::model::{Attachment, Channel, Direction, Edit, Event, EventMeta, Message, Reaction, Unsend};

/// Media message types whose bytes are fetched from the Graph API.
pub const MEDIA_TYPES: [&str; 5] = ["image", "document", "audio", "video", "sticker"];

/// A media object of a message: what to fetch and how to name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaRef {
    /// The Graph API media id.
    pub id: String,
    pub mime_type: String,
    pub file_name: String,
    /// The payload's SHA-256 of the bytes (base64 or hex), checked after the fetch.
    pub sha256: Option<String>,
}

/// What one WhatsApp message of a payload becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// A message, an edit, a revoke (unsend) or a reaction.
    Event(Event),
    /// A media message: its bytes as an attachment (`attachment.path` is filled in once
    /// fetched), then the message naming it.
    Media { media: MediaRef, attachment: Box<Attachment>, message: Box<Message> },
    /// Something that is no conversation event could be made of (no id, no parties): evidenced
    /// as an uncaptured communication, with why.
    Refused { meta: EventMeta, direction: Direction, reason: String },
}

/// One WhatsApp message of a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The business line (E.164) it happened on.
    pub line: String,
    /// The idempotency key: the message's `wamid`.
    pub wamid: String,
    pub plan: Plan,
}

/// What a payload held, planned.
#[derive(Debug, Default, PartialEq)]
pub struct Planned {
    pub items: Vec<Item>,
    /// Status callbacks (sent, delivered, read, failed): they change nothing archived.
    pub statuses: u64,
    /// Contact changes (`smb_app_state_sync`) and fields Verbatim does not subscribe to.
    pub ignored: u64,
}

/// Why a payload could not be read at all. Names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// `+` and the digits of a number as Meta writes it.
pub fn e164(raw: &str) -> String {
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("+{digits}")
}

fn text<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str).filter(|s| !s.is_empty())
}

/// Reads a verified webhook body into items.
pub fn plan(body: &[u8]) -> Result<Planned, Malformed> {
    let root: Json = serde_json::from_slice(body).map_err(|e| Malformed(format!("not JSON (column {})", e.column())))?;
    if root.get("object").and_then(Json::as_str) != Some("whatsapp_business_account") {
        return Err(Malformed("`object` is not whatsapp_business_account".into()));
    }
    let entries = root.get("entry").and_then(Json::as_array).ok_or_else(|| Malformed("`entry` is not a list".into()))?;
    let mut planned = Planned::default();
    for (e, entry) in entries.iter().enumerate() {
        let changes = entry
            .get("changes")
            .and_then(Json::as_array)
            .ok_or_else(|| Malformed(format!("entry[{e}].changes is not a list")))?;
        for (c, change) in changes.iter().enumerate() {
            let at = format!("entry[{e}].changes[{c}]");
            let field = text(change, "field").ok_or_else(|| Malformed(format!("{at}.field is missing")))?;
            let value = change.get("value").ok_or_else(|| Malformed(format!("{at}.value is missing")))?;
            plan_change(field, value, &at, &mut planned)?;
        }
    }
    Ok(planned)
}

fn plan_change(field: &str, value: &Json, at: &str, planned: &mut Planned) -> Result<(), Malformed> {
    let line = value
        .get("metadata")
        .and_then(|m| text(m, "display_phone_number"))
        .map(e164)
        .ok_or_else(|| Malformed(format!("{at}.value.metadata.display_phone_number is missing")))?;
    let list = |key: &str| value.get(key).and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
    match field {
        "messages" => {
            planned.statuses += list("statuses").len() as u64;
            for m in list("messages") {
                planned.items.push(item(&line, m, None));
            }
        }
        "smb_message_echoes" => {
            for m in list("message_echoes") {
                planned.items.push(item(&line, m, None));
            }
        }
        "history" => {
            for chunk in list("history") {
                let threads = chunk.get("threads").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
                for thread in threads {
                    let peer = text(thread, "id").map(e164);
                    let messages = thread.get("messages").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
                    for m in messages {
                        planned.items.push(item(&line, m, peer.as_deref()));
                    }
                }
            }
        }
        _ => planned.ignored += 1, // smb_app_state_sync (contacts), account updates, templates
    }
    Ok(())
}

/// One message object. `thread_peer` is the history thread's WhatsApp user.
fn item(line: &str, m: &Json, thread_peer: Option<&str>) -> Item {
    let wamid = text(m, "id").map(str::to_string);
    let from = text(m, "from").map(e164);
    let outbound = from.as_deref() == Some(line);
    let peer = if outbound { text(m, "to").map(e164).or(thread_peer.map(str::to_string)) } else { from.clone() };
    let time_ms = text(m, "timestamp").and_then(|t| t.parse::<i64>().ok()).map(|s| s.saturating_mul(1000)).unwrap_or(0);
    let direction = if outbound { Direction::Outbound } else { Direction::Inbound };
    let conversation = peer.as_deref().map(|p| format!("wa:{p}")).unwrap_or_else(|| "wa:unknown".into());
    let meta = EventMeta {
        channel: Channel::Whatsapp,
        line: line.to_string(),
        conversation_id: conversation,
        // Without a wamid, the message's own bytes name it: evidenced once, and another such
        // message is not taken for a repeat of it.
        source_id: wamid.clone().unwrap_or_else(|| {
            use sha2::Digest;
            format!("no-wamid:{}", &hex::encode(sha2::Sha256::digest(m.to_string().as_bytes()))[..32])
        }),
        source_time_ms: time_ms,
    };
    let refused = |reason: &str| Item {
        line: line.to_string(),
        wamid: meta.source_id.clone(),
        plan: Plan::Refused { meta: meta.clone(), direction, reason: reason.to_string() },
    };
    let (Some(wamid), Some(from), Some(peer)) = (wamid.clone(), from, peer) else {
        return refused("the message has no id, sender or peer");
    };
    if time_ms <= 0 {
        return refused("the message has no timestamp");
    }
    let kind = text(m, "type").unwrap_or("unknown");
    let plan = match kind {
        "edit" => {
            let edit = m.get("edit").cloned().unwrap_or(Json::Null);
            let Some(target) = text(&edit, "original_message_id") else { return refused("an edit without original_message_id") };
            let inner = edit.get("message").cloned().unwrap_or(Json::Null);
            let new_text = content_text(&inner, text(&inner, "type").unwrap_or("unknown"));
            Plan::Event(Event::Edit(Edit { meta, target_message_id: target.into(), editor: from, new_text }))
        }
        "revoke" => {
            let Some(target) = m.get("revoke").and_then(|r| text(r, "original_message_id")) else {
                return refused("a revoke without original_message_id");
            };
            Plan::Event(Event::Unsend(Unsend { meta, target_message_id: target.into(), actor: from }))
        }
        "reaction" => {
            let r = m.get("reaction").cloned().unwrap_or(Json::Null);
            let Some(target) = text(&r, "message_id") else { return refused("a reaction without message_id") };
            let emoji = text(&r, "emoji");
            Plan::Event(Event::Reaction(Reaction {
                meta,
                target_message_id: target.into(),
                actor: from,
                // WhatsApp takes a reaction back by sending an empty emoji.
                reaction: emoji.unwrap_or("removed").to_string(),
                removed: emoji.is_none(),
            }))
        }
        t if MEDIA_TYPES.contains(&t) && m.get(t).and_then(|o| text(o, "id")).is_some() => {
            let o = &m[t];
            let mime = text(o, "mime_type").unwrap_or("application/octet-stream").to_string();
            let file_name = text(o, "filename").map(str::to_string).unwrap_or_else(|| format!("{t}{}", extension(&mime)));
            let media = MediaRef {
                id: text(o, "id").unwrap_or_default().to_string(),
                mime_type: mime.clone(),
                file_name: file_name.clone(),
                sha256: text(o, "sha256").map(str::to_string),
            };
            let attachment_id = format!("{wamid}/{t}");
            let attachment = Attachment {
                meta: EventMeta { source_id: attachment_id.clone(), ..meta.clone() },
                message_id: Some(wamid.clone()),
                direction,
                sender: from.clone(),
                file_name,
                mime_type: mime,
                // Where the bytes are until fetched (never stored: the record keeps no path).
                path: format!("graph-media:{}", text(o, "id").unwrap_or_default()).into(),
            };
            let message = message(meta, direction, &from, &peer, line, text(o, "caption").unwrap_or("").into(), m);
            Plan::Media {
                media,
                attachment: Box::new(attachment),
                message: Box::new(Message { attachment_ids: vec![attachment_id], ..message }),
            }
        }
        other => {
            let mut body = content_text(m, other);
            if body.is_empty() {
                body = format!("[{other}]");
            }
            Plan::Event(Event::Message(message(meta, direction, &from, &peer, line, body, m)))
        }
    };
    Item { line: line.to_string(), wamid, plan }
}

fn message(meta: EventMeta, direction: Direction, from: &str, peer: &str, line: &str, text: String, m: &Json) -> Message {
    let recipient = if direction == Direction::Outbound { peer } else { line };
    Message {
        meta,
        direction,
        sender: from.to_string(),
        recipients: vec![recipient.to_string()],
        text,
        attachment_ids: Vec::new(),
        reply_to: m.get("context").and_then(|c| text_of(c, "id")),
    }
}

fn text_of(v: &Json, key: &str) -> Option<String> {
    text(v, key).map(str::to_string)
}

/// The text a message of `kind` carries: a text's body, a media caption, a location or
/// contact card written out, and for any other kind its object as JSON (nothing is lost).
fn content_text(m: &Json, kind: &str) -> String {
    let o = m.get(kind).cloned().unwrap_or(Json::Null);
    match kind {
        "text" => text(&o, "body").unwrap_or("").to_string(),
        t if MEDIA_TYPES.contains(&t) => text(&o, "caption").unwrap_or("").to_string(),
        "location" => {
            let coord = |k: &str| o.get(k).and_then(Json::as_f64).map(|v| v.to_string()).unwrap_or_default();
            let mut s = format!("[location] {},{}", coord("latitude"), coord("longitude"));
            for k in ["name", "address", "url"] {
                if let Some(v) = text(&o, k) {
                    s.push_str(&format!("; {v}"));
                }
            }
            s
        }
        "contacts" => {
            let cards = m.get("contacts").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
            let mut lines = Vec::new();
            for card in cards {
                let name = card.get("name").and_then(|n| text(n, "formatted_name")).unwrap_or("(no name)");
                let mut parts = vec![name.to_string()];
                for p in card.get("phones").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default() {
                    if let Some(phone) = text(p, "phone").or_else(|| text(p, "wa_id")) {
                        parts.push(phone.to_string());
                    }
                }
                for e in card.get("emails").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default() {
                    if let Some(email) = text(e, "email") {
                        parts.push(email.to_string());
                    }
                }
                lines.push(format!("[contact] {}", parts.join(", ")));
            }
            lines.join("\n")
        }
        _ if o.is_null() => String::new(),
        other => format!("[{other}] {o}"),
    }
}

fn extension(mime: &str) -> &'static str {
    match mime.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => ".jpg",
        "image/png" => ".png",
        "image/webp" => ".webp",
        "video/mp4" => ".mp4",
        "audio/ogg" => ".ogg",
        "audio/mpeg" => ".mp3",
        "audio/aac" => ".aac",
        "application/pdf" => ".pdf",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LINE: &str = "15550783881";

    fn envelope(field: &str, value: Json) -> Vec<u8> {
        let mut value = value;
        value["metadata"] = json!({"display_phone_number": LINE, "phone_number_id": "106540352242922"});
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}]})
            .to_string()
            .into_bytes()
    }

    fn only(field: &str, value: Json) -> Item {
        let p = plan(&envelope(field, value)).unwrap();
        assert_eq!(p.items.len(), 1, "{p:?}");
        p.items.into_iter().next().unwrap()
    }

    #[test]
    fn an_inbound_text_reply_is_a_message_from_the_peer_to_the_line() {
        let it = only(
            "messages",
            json!({"messages": [{"from": "16505551234", "id": "wamid.A", "timestamp": "1739321024", "type": "text",
                "text": {"body": "hi"}, "context": {"from": LINE, "id": "wamid.Z"}}]}),
        );
        assert_eq!((it.line.as_str(), it.wamid.as_str()), ("+15550783881", "wamid.A"));
        let Plan::Event(Event::Message(m)) = it.plan else { panic!() };
        assert_eq!(m.direction, Direction::Inbound);
        assert_eq!((m.sender.as_str(), m.recipients[0].as_str(), m.text.as_str()), ("+16505551234", "+15550783881", "hi"));
        assert_eq!(m.reply_to.as_deref(), Some("wamid.Z"));
        assert_eq!(m.meta.conversation_id, "wa:+16505551234");
        assert_eq!(m.meta.source_time_ms, 1_739_321_024_000);
    }

    #[test]
    fn an_echo_is_outbound_to_its_recipient() {
        let it = only(
            "smb_message_echoes",
            json!({"message_echoes": [{"from": LINE, "to": "16505551234", "id": "wamid.E", "timestamp": "1739321024",
                "type": "text", "text": {"body": "sent from the app"}}]}),
        );
        let Plan::Event(Event::Message(m)) = it.plan else { panic!() };
        assert_eq!(m.direction, Direction::Outbound);
        assert_eq!((m.sender.as_str(), m.recipients[0].as_str()), ("+15550783881", "+16505551234"));
    }

    #[test]
    fn media_edits_revokes_reactions_locations_and_contacts_map_to_their_events() {
        let msg = |extra: Json| {
            let mut m = json!({"from": "16505551234", "id": "wamid.M", "timestamp": "1739321024"});
            m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            only("messages", json!({ "messages": [m] })).plan
        };
        let Plan::Media { media, attachment, message } = msg(
            json!({"type": "document", "document": {"id": "987", "mime_type": "application/pdf", "filename": "deck.pdf", "caption": "the deck", "sha256": "abc"}}),
        ) else {
            panic!()
        };
        assert_eq!((media.id.as_str(), media.file_name.as_str()), ("987", "deck.pdf"));
        assert_eq!(attachment.meta.source_id, "wamid.M/document");
        assert_eq!(
            (message.text.as_str(), message.attachment_ids.as_slice()),
            ("the deck", &["wamid.M/document".to_string()][..])
        );
        let Plan::Media { attachment, .. } = msg(json!({"type": "sticker", "sticker": {"id": "5", "mime_type": "image/webp"}}))
        else {
            panic!()
        };
        assert_eq!(attachment.file_name, "sticker.webp");

        let Plan::Event(Event::Edit(e)) = msg(
            json!({"type": "edit", "edit": {"original_message_id": "wamid.O", "message": {"type": "text", "text": {"body": "v2"}}}}),
        ) else {
            panic!()
        };
        assert_eq!((e.target_message_id.as_str(), e.new_text.as_str()), ("wamid.O", "v2"));
        let Plan::Event(Event::Unsend(u)) = msg(json!({"type": "revoke", "revoke": {"original_message_id": "wamid.O"}})) else {
            panic!()
        };
        assert_eq!(u.target_message_id, "wamid.O");
        let Plan::Event(Event::Reaction(r)) =
            msg(json!({"type": "reaction", "reaction": {"message_id": "wamid.O", "emoji": "👍"}}))
        else {
            panic!()
        };
        assert_eq!((r.reaction.as_str(), r.removed), ("👍", false));
        let Plan::Event(Event::Reaction(r)) = msg(json!({"type": "reaction", "reaction": {"message_id": "wamid.O"}})) else {
            panic!()
        };
        assert!(r.removed);
        let Plan::Event(Event::Message(m)) = msg(
            json!({"type": "location", "location": {"latitude": 48.85, "longitude": 2.35, "name": "Office", "address": "1 Rue X"}}),
        ) else {
            panic!()
        };
        assert_eq!(m.text, "[location] 48.85,2.35; Office; 1 Rue X");
        let Plan::Event(Event::Message(m)) = msg(
            json!({"type": "contacts", "contacts": [{"name": {"formatted_name": "Kerry Fisher"}, "phones": [{"phone": "+1 650 555 1234"}]}]}),
        ) else {
            panic!()
        };
        assert_eq!(m.text, "[contact] Kerry Fisher, +1 650 555 1234");
        let Plan::Event(Event::Message(m)) = msg(
            json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes"}}}),
        ) else {
            panic!()
        };
        assert!(m.text.starts_with("[interactive] ") && m.text.contains("Yes"), "{}", m.text);
    }

    #[test]
    fn history_threads_give_the_peer_and_statuses_and_contact_syncs_capture_nothing() {
        let p = plan(&envelope(
            "history",
            json!({"history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": [{"id": "16505551234", "messages": [
                {"from": LINE, "id": "wamid.H1", "timestamp": "1739000000", "type": "text", "text": {"body": "old out"}, "history_context": {"status": "READ"}},
                {"from": "16505551234", "id": "wamid.H2", "timestamp": "1739000001", "type": "text", "text": {"body": "old in"}}]}]}]}),
        ))
        .unwrap();
        let dirs: Vec<Direction> = p
            .items
            .iter()
            .map(|i| match &i.plan {
                Plan::Event(Event::Message(m)) => {
                    assert_eq!(m.meta.conversation_id, "wa:+16505551234");
                    m.direction
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(dirs, [Direction::Outbound, Direction::Inbound]);

        let statuses = plan(&envelope(
            "messages",
            json!({"statuses": [{"id": "wamid.A", "status": "read", "timestamp": "1739321024", "recipient_id": "16505551234"}]}),
        ))
        .unwrap();
        assert_eq!((statuses.items.len(), statuses.statuses), (0, 1));
        let sync = plan(&envelope(
            "smb_app_state_sync",
            json!({"state_sync": [{"type": "contact", "contact": {"full_name": "Kerry", "phone_number": "16505551234"}, "action": "add"}]}),
        ))
        .unwrap();
        assert_eq!((sync.items.len(), sync.ignored), (0, 1));
    }

    #[test]
    fn unreadable_payloads_are_refused_by_field_without_quoting_values() {
        assert_eq!(plan(b"{\"secret words").unwrap_err().0, "not JSON (column 14)");
        assert!(plan(br#"{"object":"page","entry":[]}"#).unwrap_err().0.contains("`object`"));
        let no_meta =
            br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[]}}]}]}"#;
        assert!(plan(no_meta).unwrap_err().0.contains("display_phone_number"));
        // A message without an id is evidenced, not dropped.
        let it = only(
            "messages",
            json!({"messages": [{"from": "16505551234", "timestamp": "1739321024", "type": "text", "text": {"body": "x"}}]}),
        );
        assert!(matches!(it.plan, Plan::Refused { .. }));
        assert!(it.wamid.starts_with("no-wamid:"), "{}", it.wamid);
        let other = only(
            "messages",
            json!({"messages": [{"from": "16505551234", "timestamp": "1739321024", "type": "text", "text": {"body": "y"}}]}),
        );
        assert_ne!(it.wamid, other.wamid, "two messages without a wamid are two messages");
    }
}
