//! Who took part in a record, by handle: for the key vault's participant index (erasure of
//! every conversation with a person) and for subject-access exports (`export --participant`).
//!
//! Handles are compared normalised: an e-mail address or other handle in lower case, a phone
//! number as its digits with a leading `+` kept (`+1 (555) 010-0111` and `+15550100111` are
//! one person). Anything subtler (national vs international forms) is left to whoever asks:
//! they can name every form they know.

use verbatim_core::record::RecordBody;

/// The comparable form of a handle.
pub fn normalize(handle: &str) -> String {
    let t = handle.trim();
    let phone_like = !t.contains('@')
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if phone_like {
        let plus = if t.starts_with('+') { "+" } else { "" };
        format!("{plus}{}", t.chars().filter(char::is_ascii_digit).collect::<String>())
    } else {
        t.to_lowercase()
    }
}

/// Every handle a record names as taking part (normalised, deduplicated), the employee's own
/// line included. Chunks, ends, key records and agent events name nobody.
pub fn of_record(body: &RecordBody) -> Vec<String> {
    let mut out: Vec<&str> = Vec::new();
    match body {
        RecordBody::Message(m) => {
            out.extend([m.meta.line.as_str(), m.sender.as_str()]);
            out.extend(m.recipients.iter().map(String::as_str));
        }
        RecordBody::Edit(e) => out.extend([e.meta.line.as_str(), e.editor.as_str()]),
        RecordBody::Unsend(u) => out.extend([u.meta.line.as_str(), u.actor.as_str()]),
        RecordBody::Reaction(r) => out.extend([r.meta.line.as_str(), r.actor.as_str()]),
        RecordBody::Call(c) => {
            out.push(c.meta.line.as_str());
            out.extend(c.participants.iter().map(String::as_str));
        }
        RecordBody::AttachmentStart(h) | RecordBody::AttachmentOmitted { header: h, .. } => {
            out.extend([h.meta.line.as_str(), h.sender.as_str()])
        }
        RecordBody::DisclaimerShown { meta, .. } => out.push(meta.line.as_str()),
        RecordBody::AttachmentChunk { .. }
        | RecordBody::AttachmentEnd { .. }
        | RecordBody::Agent(_)
        | RecordBody::ConversationKey(_) => {}
    }
    let mut handles: Vec<String> = out.into_iter().filter(|h| !h.trim().is_empty()).map(normalize).collect();
    handles.sort();
    handles.dedup();
    handles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_and_addresses_compare_in_one_form() {
        assert_eq!(normalize("+1 (555) 010-0111"), "+15550100111");
        assert_eq!(normalize(" +15550100111 "), "+15550100111");
        assert_eq!(normalize("555.010.0111"), "5550100111");
        assert_eq!(normalize("Alice@Example.COM"), "alice@example.com");
        assert_eq!(normalize("+1 555 HELLO"), "+1 555 hello", "not a number: compared as text");
    }
}
