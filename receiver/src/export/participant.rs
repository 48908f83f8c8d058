//! The participant filter of a subject-access export (`verbatim export --participant`):
//! exactly the records in which a handle took part.
//!
//! A message is in when the handle sent or received it; an edit, unsend or reaction when the
//! handle made it or its target message is in; a call when the handle was a participant; an
//! attachment (its start, chunks, end, or omission) when the handle sent it or its message is
//! in. Agent events, client notices and key records are not about a person: they are left
//! out. Records come in chain order, so a target is always met before what refers to it.

use std::collections::HashSet;

use verbatim_core::record::RecordBody;

use crate::participants::normalize;

pub struct ParticipantFilter {
    handle: String,
    /// (conversation id, message source id) of the messages that are in.
    messages: HashSet<(String, String)>,
    /// Attachment ids that are in.
    attachments: HashSet<String>,
}

impl ParticipantFilter {
    pub fn new(handle: &str) -> ParticipantFilter {
        ParticipantFilter { handle: normalize(handle), messages: HashSet::new(), attachments: HashSet::new() }
    }

    fn is(&self, handle: &str) -> bool {
        normalize(handle) == self.handle
    }

    fn target_in(&self, conversation: &str, target: &str) -> bool {
        self.messages.contains(&(conversation.to_string(), target.to_string()))
    }

    /// Whether `body` belongs in the export; remembers what later records may refer to.
    pub fn admits(&mut self, body: &RecordBody) -> bool {
        match body {
            RecordBody::Message(m) => {
                let inside = self.is(&m.sender) || m.recipients.iter().any(|r| self.is(r));
                if inside {
                    self.messages.insert((m.meta.conversation_id.clone(), m.meta.source_id.clone()));
                }
                inside
            }
            RecordBody::Edit(e) => self.is(&e.editor) || self.target_in(&e.meta.conversation_id, &e.target_message_id),
            RecordBody::Unsend(u) => self.is(&u.actor) || self.target_in(&u.meta.conversation_id, &u.target_message_id),
            RecordBody::Reaction(r) => self.is(&r.actor) || self.target_in(&r.meta.conversation_id, &r.target_message_id),
            RecordBody::Call(c) => {
                let inside = c.participants.iter().any(|p| self.is(p));
                if let (true, Some(rid)) = (inside, &c.recording_id) {
                    self.attachments.insert(rid.clone());
                }
                inside
            }
            RecordBody::AttachmentStart(h) | RecordBody::AttachmentOmitted { header: h, .. } => {
                let inside = self.attachments.contains(&h.attachment_id)
                    || self.is(&h.sender)
                    || h.message_id.as_ref().is_some_and(|m| self.target_in(&h.meta.conversation_id, m));
                if inside {
                    self.attachments.insert(h.attachment_id.clone());
                }
                inside
            }
            RecordBody::AttachmentChunk { attachment_id, .. } | RecordBody::AttachmentEnd { attachment_id, .. } => {
                self.attachments.contains(attachment_id)
            }
            RecordBody::DisclaimerShown { .. } | RecordBody::Agent(_) | RecordBody::ConversationKey(_) => false,
        }
    }
}
