//! Safe names: file names from device-supplied ids, and RFC 5322 addresses and message ids
//! from handles and source ids. Device input is untrusted, so nothing it sends can reach a
//! path separator, a `..`, a header line break or an address delimiter.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Longest id kept as its own file name; longer ids are shortened and hashed.
const MAX_PLAIN: usize = 64;
/// Characters of a hashed name's readable prefix, at most.
const PREFIX: usize = 32;
/// Hex digits of SHA-256 in a hashed name: 128 bits, so finding two ids with one name takes
/// about 2^64 hashes (and [`PathClaims`] refuses such a pair anyway).
const HASH_HEX: usize = 32;
/// Separates a hashed name's prefix from its hash: never part of a plain name.
const HASH_MARK: char = '~';

/// Names Windows reserves whatever follows them: an export copied to a share must not hit them.
const RESERVED: &[&str] = &["con", "prn", "aux", "nul"];

fn is_plain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn is_reserved(raw: &str) -> bool {
    RESERVED.contains(&raw)
        || (raw.len() == 4 && (raw.starts_with("com") || raw.starts_with("lpt")) && raw.as_bytes()[3].is_ascii_digit())
}

/// A file or directory name for the device-supplied id `raw`, injective over all ids and safe
/// on case-insensitive file systems:
///
/// - a *plain* id (1 to 64 characters of `a-z 0-9 - _`, starting with a letter or digit, not a
///   Windows device name) is its own name;
/// - any other id becomes a readable prefix (lowercase, other characters as `-`, at most 32),
///   `~`, and 32 hex digits of its SHA-256 (`att/1` → `att-1~…`; `id` when no character
///   is left for the prefix).
///
/// Names hold only `a-z 0-9 - _ ~`: never a dot (so never `.` or `..`, and never a clash
/// with the `.jsonl`, `.partial` and `.incomplete` names export adds), never a separator,
/// never upper case. A plain name has no `~` and a hashed one has, so the two kinds cannot
/// meet; two hashed names meet only when SHA-256 collides.
pub fn file_name(raw: &str) -> String {
    let plain = !raw.is_empty()
        && raw.len() <= MAX_PLAIN
        && raw.chars().all(is_plain_char)
        && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !is_reserved(raw);
    if plain {
        return raw.to_string();
    }
    let prefix: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if is_plain_char(c) { c } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(PREFIX)
        .collect();
    let prefix = if prefix.is_empty() { "id".to_string() } else { prefix };
    let digest = hex::encode(Sha256::digest(raw.as_bytes()));
    format!("{prefix}{HASH_MARK}{}", &digest[..HASH_HEX])
}

/// The names one export run has handed out, each with the id it stands for: a second id
/// asking for a name already given (a SHA-256 collision, found on purpose) is refused
/// rather than allowed to overwrite the first one's files. Names compare case-folded.
#[derive(Default)]
pub struct PathClaims {
    owners: HashMap<String, String>,
}

impl PathClaims {
    /// Claims `name` for `owner`; Err with the owner that holds it already.
    pub fn claim(&mut self, name: &str, owner: &str) -> Result<(), String> {
        let key = name.to_lowercase();
        match self.owners.get(&key) {
            Some(held) if held != owner => Err(held.clone()),
            Some(_) => Ok(()),
            None => {
                self.owners.insert(key, owner.to_string());
                Ok(())
            }
        }
    }
}

/// The base name of a device-supplied file name, safe to offer as the name to save a file
/// under (`Content-Disposition`): the part after the last `/` or `\`, control and invisible
/// direction characters and `: * ? " < > |` as `_`, leading dots and surrounding spaces
/// removed, at most 150 bytes (keeping a short extension), `attachment` when nothing is left.
pub fn safe_base_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String =
        last.chars().map(|c| if super::eml::is_unsafe_in_header(c) || ":*?\"<>|".contains(c) { '_' } else { c }).collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']);
    if trimmed.is_empty() {
        return "attachment".to_string();
    }
    const MAX: usize = 150;
    if trimmed.len() <= MAX {
        return trimmed.to_string();
    }
    let ext = match trimmed.rsplit_once('.') {
        Some((_, e)) if e.len() <= 16 => format!(".{e}"),
        _ => String::new(),
    };
    let mut stem = String::new();
    for c in trimmed.chars() {
        if stem.len() + c.len_utf8() + ext.len() > MAX {
            break;
        }
        stem.push(c);
    }
    format!("{stem}{ext}")
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
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// What a name may hold, and that it cannot be mistaken for a name export adds itself.
    fn assert_safe(raw: &str, name: &str) {
        assert!(!name.is_empty() && name.len() <= MAX_PLAIN.max(PREFIX + 1 + HASH_HEX), "{raw:?} -> {name}");
        assert!(name.chars().all(|c| is_plain_char(c) || c == HASH_MARK), "{raw:?} -> {name}");
        assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()), "{raw:?} -> {name}");
        assert!(!is_reserved(name), "{raw:?} -> {name}");
    }

    /// Hostile ids the receiver accepts (1 to 256 bytes of UTF-8 without control characters),
    /// with every case variant that matters on a case-insensitive file system.
    fn hostile_ids() -> Vec<String> {
        let bases = [
            "x",
            "x.jsonl",
            "x.JSONL",
            "x.jsonl.jsonl",
            "x.partial",
            "x.incomplete",
            ".",
            "..",
            "...",
            "a/b",
            "a\\b",
            "a_b",
            "a-b",
            "a b",
            "a/../b",
            "../../etc/passwd",
            "/abs",
            "~",
            "~root",
            "x~0123",
            "-rf",
            "_x",
            ".hidden",
            "con",
            "CON",
            "con.txt",
            "nul",
            "com1",
            "lpt9",
            "com10",
            "attachments",
            "eml",
            "records.jsonl",
            "Pixel-7",
            "pixel-7",
            "PIXEL-7",
            "E621E1F8-C36C-495A-93FC-0C247A3E6E5F",
            "e621e1f8-c36c-495a-93fc-0c247a3e6e5f",
            "café",
            "cafe\u{301}",
            "CAFÉ",
            "İstanbul",
            "istanbul",
            "ß",
            "ss",
            "SS",
            "ﬀ",
            "ff",
            "Ω",
            "ω",
            "Ω",
            "🙂",
            "日本",
            "\u{202e}fdp.exe",
            "a:b",
            "a*b",
            "a?b",
            "a\"b",
            "a<b>",
            "a|b",
        ];
        let mut ids: Vec<String> = bases.iter().map(|s| s.to_string()).collect();
        for b in bases {
            ids.push(b.to_uppercase());
            ids.push(b.to_lowercase());
            ids.push(format!("{b}.jsonl"));
            ids.push(format!("{b}/"));
        }
        for n in [63, 64, 65, 100, 200, 256] {
            ids.push("a".repeat(n));
            ids.push("A".repeat(n));
            ids.push(format!("{}b", "a".repeat(n - 1)));
            ids.push("é".repeat(n / 2));
        }
        ids.sort();
        ids.dedup();
        ids
    }

    #[test]
    fn names_of_hostile_ids_are_safe_and_never_meet_case_folded() {
        let mut seen: HashMap<String, String> = HashMap::new();
        for raw in hostile_ids() {
            let name = file_name(&raw);
            assert_safe(&raw, &name);
            // A stream's JSON Lines file sits beside the stream directories of its device.
            for path in [name.clone(), format!("{name}.jsonl")] {
                if let Some(other) = seen.insert(path.to_lowercase(), raw.clone()) {
                    panic!("{raw:?} and {other:?} share {path}");
                }
            }
        }
    }

    #[test]
    fn plain_ids_keep_their_names_and_others_say_where_they_came_from() {
        assert_eq!(file_name("s-1"), "s-1");
        assert_eq!(file_name("acme_securities"), "acme_securities");
        let hashed = file_name("Pixel 7/../x");
        assert!(hashed.starts_with("pixel-7----x~") && hashed.len() == 13 + HASH_HEX, "{hashed}");
        assert!(file_name("..").starts_with("id~"));
        assert!(file_name("-rf").starts_with("rf~"));
        assert_eq!(file_name(&"é".repeat(128)).len(), 2 + 1 + HASH_HEX);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Over a small hostile alphabet near collisions are common: distinct ids still get
        /// distinct names, case-folded, and no name is another's `.jsonl` file.
        #[test]
        fn distinct_ids_get_distinct_names(a in "[aA.~/_\\- é0]{1,8}", b in "[aA.~/_\\- é0]{1,8}") {
            let (na, nb) = (file_name(&a), file_name(&b));
            assert_safe(&a, &na);
            prop_assert_eq!(a == b, na.to_lowercase() == nb.to_lowercase(), "{:?} -> {}, {:?} -> {}", a, na, b, nb);
            prop_assert_ne!(format!("{na}.jsonl").to_lowercase(), nb.to_lowercase());
        }
    }

    #[test]
    fn a_second_id_cannot_claim_a_name_already_given() {
        let mut claims = PathClaims::default();
        assert!(claims.claim("acme/dev/s", "one").is_ok());
        assert!(claims.claim("acme/dev/s", "one").is_ok());
        assert_eq!(claims.claim("ACME/dev/s", "two"), Err("one".to_string()));
    }

    #[test]
    fn base_names_never_climb_or_carry_line_breaks() {
        assert_eq!(safe_base_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_base_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_base_name("term sheet é.pdf"), "term sheet é.pdf");
        assert_eq!(safe_base_name("a\r\nb.pdf"), "a__b.pdf");
        assert_eq!(safe_base_name("\u{202e}fdp.exe"), "_fdp.exe");
        assert_eq!(safe_base_name("a:b*c?.txt"), "a_b_c_.txt");
        for empty in ["", ".", "..", "../", "/", " . ", "..."] {
            assert_eq!(safe_base_name(empty), "attachment", "{empty:?}");
        }
        assert_eq!(safe_base_name(".bashrc"), "bashrc");
        let long = safe_base_name(&format!("{}.pdf", "é".repeat(200)));
        assert!(long.len() <= 150 && long.ends_with(".pdf"), "{long}");
    }

    #[test]
    fn atext_is_reversible_and_plain() {
        assert_eq!(atext("+1 555.0100"), "+1=20555=2E0100");
        assert_eq!(atext("al<i>ce@x"), "al=3Ci=3Ece=40x");
        assert_eq!(message_id(None, "m-1", "sms"), "<m-1@sms.verbatim.invalid>");
    }
}
