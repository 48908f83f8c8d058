//! Safe names: file names from device-supplied ids, and RFC 5322 addresses and message ids
//! from handles and source ids. Device input is untrusted, so nothing it sends can reach a
//! path separator, a `..`, a header line break or an address delimiter.

use sha2::{Digest, Sha256};

/// A file or directory name for `raw`: kept as is when it is already plain
/// (`[A-Za-z0-9._-]`, not starting with a dot, at most 100 bytes); otherwise the plain
/// characters are kept, the rest become `_`, and a hash suffix keeps distinct ids distinct.
pub fn file_name(raw: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
    if !raw.is_empty() && raw.len() <= 100 && !raw.starts_with('.') && raw.chars().all(plain) {
        return raw.to_string();
    }
    let mut kept: String = raw.chars().map(|c| if plain(c) { c } else { '_' }).take(60).collect();
    if kept.starts_with('.') {
        kept.replace_range(0..1, "_");
    }
    let digest = Sha256::digest(raw.as_bytes());
    format!("{kept}-{}", hex::encode(&digest[..4]))
}

/// Encodes `raw` into RFC 5322 `atext` only (no dots): letters, digits, `-`, `_`, `+` kept,
/// every other byte as `=HH`. Reversible, and safe in a local part, a domain label's place
/// and a message id.
pub fn atext(raw: &str) -> String {
    if raw.is_empty() {
        return "unknown".to_string();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'+' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The domain every synthetic address and message id lives under (`.invalid` is reserved and
/// never resolves: these are identifiers, not mailboxes).
pub fn domain(channel: &str) -> String {
    format!("{}.verbatim.invalid", atext(channel))
}

/// `<source-id@channel.verbatim.invalid>` for a message; `<kind.source-id@...>` otherwise.
pub fn message_id(kind: Option<&str>, source_id: &str, channel: &str) -> String {
    match kind {
        None => format!("<{}@{}>", atext(source_id), domain(channel)),
        Some(k) => format!("<{}.{}@{}>", atext(k), atext(source_id), domain(channel)),
    }
}

/// `"handle" <handle@channel.verbatim.invalid>`: the display name keeps the handle as typed.
pub fn address(handle: &str, channel: &str) -> String {
    format!("{} <{}@{}>", super::eml::phrase(handle), atext(handle), domain(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_or_collide() {
        assert_eq!(file_name("att-1.pdf"), "att-1.pdf");
        for bad in ["../etc/passwd", "..", ".", "", "a/b", "a\\b", "x\0y", ".hidden"] {
            let n = file_name(bad);
            assert!(!n.contains('/') && !n.contains('\\') && !n.starts_with('.') && !n.is_empty(), "{bad:?} -> {n}");
        }
        assert_ne!(file_name("a/b"), file_name("a_b"));
        assert_ne!(file_name("a?b"), file_name("a*b"));
    }

    #[test]
    fn atext_is_reversible_and_plain() {
        assert_eq!(atext("+1 555.0100"), "+1=20555=2E0100");
        assert_eq!(atext("al<i>ce@x"), "al=3Ci=3Ece=40x");
        assert_eq!(message_id(None, "m-1", "sms"), "<m-1@sms.verbatim.invalid>");
    }
}
