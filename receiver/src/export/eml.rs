//! Writing RFC 5322 / MIME messages: CRLF line endings, RFC 2047 encoded words for headers
//! that are not plain ASCII, UTF-8 text bodies in quoted-printable, files as base64 parts
//! streamed from disk (memory stays bounded whatever the file size).
//!
//! Header values come from the device, so they are sanitised before they are encoded: an
//! encoded word decodes back to whatever it holds, and a CR or LF in a decoded address makes
//! mail parsers refuse the whole message (and, in a less careful one, starts a new header).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const CRLF: &str = "\r\n";

/// Printable ASCII that a mail reader shows as is: not holding `=?`, which would start what
/// a reader decodes as an encoded word (a device could spell a line break that way).
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b)) && !s.contains("=?")
}

/// RFC 2047 `B` encoded words for `value`, each at most 75 characters, split on character
/// boundaries and folded onto continuation lines.
fn encoded_words(value: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Characters no header value may hold, even once decoded: control characters (C0 with CR,
/// LF and tab, DEL, C1), the Unicode line and paragraph separators, and the invisible
/// direction marks and overrides that make a text read differently from what it is.
pub fn is_unsafe_in_header(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `value` with every character of [`is_unsafe_in_header`] replaced by U+FFFD (the
/// replacement character), so the header shows that something was there. The JSON Lines keep
/// the value as captured.
pub fn header_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.chars().any(is_unsafe_in_header) {
        value.chars().map(|c| if is_unsafe_in_header(c) { '\u{fffd}' } else { c }).collect::<String>().into()
    } else {
        value.into()
    }
}

/// An unstructured header value (Subject, X-Verbatim-*), sanitised ([`header_safe`]): as is
/// when plain ASCII and short, encoded words otherwise.
pub fn unstructured(value: &str) -> String {
    let value = header_safe(value);
    if is_plain(&value) && value.len() <= 900 { value.into_owned() } else { encoded_words(&value) }
}

/// A display name, sanitised ([`header_safe`]): a quoted string when plain ASCII, encoded
/// words otherwise.
pub fn phrase(value: &str) -> String {
    let value = header_safe(value);
    if is_plain(&value) && value.len() <= 200 {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        encoded_words(&value)
    }
}

/// A MIME parameter (`name="value"`, or RFC 2231 `name*=UTF-8''...` when not plain),
/// sanitised ([`header_safe`]).
pub fn mime_param(name: &str, value: &str) -> String {
    let value = header_safe(value);
    if is_plain(&value) && !value.contains(['"', '\\']) && value.len() <= 200 {
        format!("{name}=\"{value}\"")
    } else {
        let mut enc = String::new();
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{name}*=UTF-8''{enc}")
    }
}

/// A MIME type from the device if it looks like one, else `application/octet-stream`.
pub fn safe_mime_type(raw: &str) -> String {
    let token =
        |s: &str| !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match raw.trim().split_once('/') {
        Some((t, s)) if token(t) && token(s) => format!("{}/{}", t.to_ascii_lowercase(), s.to_ascii_lowercase()),
        _ => "application/octet-stream".to_string(),
    }
}

/// Quoted-printable (RFC 2045 6.7) of UTF-8 text; any line break becomes CRLF.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    for (i, line) in normalised.split('\n').enumerate() {
        if i > 0 {
            out.push_str(CRLF);
        }
        let bytes = line.as_bytes();
        let mut col = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece = if literal { (b as char).to_string() } else { format!("={b:02X}") };
            if col + piece.len() > 75 {
                out.push_str("=\r\n");
                col = 0;
            }
            out.push_str(&piece);
            col += piece.len();
        }
    }
    out.push_str(CRLF);
    out
}

/// A file to attach as a base64 MIME part.
pub struct FilePart<'a> {
    pub path: &'a Path,
    pub file_name: &'a str,
    pub mime_type: &'a str,
}

/// Writes one message: `headers` (name, already encoded value), a text body, and optionally a
/// file as a second part. `boundary_seed` must be unique per message; the boundary starts
/// with `=_`, which neither quoted-printable nor base64 output can contain.
pub fn write(
    path: &Path,
    headers: &[(&str, String)],
    text: &str,
    file: Option<&FilePart<'_>>,
    boundary_seed: u64,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (name, value) in headers {
        write!(w, "{name}: {value}{CRLF}")?;
    }
    write!(w, "MIME-Version: 1.0{CRLF}")?;
    let text_headers = format!("Content-Type: text/plain; charset=utf-8{CRLF}Content-Transfer-Encoding: quoted-printable{CRLF}");
    match file {
        None => {
            write!(w, "{text_headers}{CRLF}")?;
            w.write_all(quoted_printable(text).as_bytes())?;
        }
        Some(part) => {
            let boundary = format!("=_verbatim_{boundary_seed}");
            write!(w, "Content-Type: multipart/mixed; boundary=\"{boundary}\"{CRLF}{CRLF}")?;
            write!(w, "This is a MIME message.{CRLF}--{boundary}{CRLF}{text_headers}{CRLF}")?;
            w.write_all(quoted_printable(text).as_bytes())?;
            write!(w, "--{boundary}{CRLF}")?;
            // The name a mail client saves the file under: never a path (the JSON Lines keep
            // the name as captured).
            let base = super::names::safe_base_name(part.file_name);
            write!(w, "Content-Type: {}; {}{CRLF}", safe_mime_type(part.mime_type), mime_param("name", &base))?;
            write!(w, "Content-Disposition: attachment; {}{CRLF}", mime_param("filename", &base))?;
            write!(w, "Content-Transfer-Encoding: base64{CRLF}{CRLF}")?;
            write_base64(&mut w, part.path)?;
            write!(w, "--{boundary}--{CRLF}")?;
        }
    }
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Base64 in 76-character lines, read from `path` 57 × 64 bytes at a time.
fn write_base64(w: &mut impl Write, path: &Path) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 57 * 64];
    loop {
        // Fill the buffer completely (short reads would misalign the 57-byte lines).
        let mut n = 0;
        while n < buf.len() {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        for line in buf[..n].chunks(57) {
            w.write_all(STANDARD.encode(line).as_bytes())?;
            w.write_all(CRLF.as_bytes())?;
        }
        if n < buf.len() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_keeps_lines_short_and_encodes_what_it_must() {
        let qp = quoted_printable("héllo = world \nline two\t\r\n".repeat(10).as_str());
        for line in qp.split("\r\n") {
            assert!(line.len() <= 76, "{line}");
            assert!(!line.ends_with(' ') && !line.ends_with('\t'));
        }
        assert!(qp.contains("h=C3=A9llo =3D world=20"));
        assert!(!qp.replace("\r\n", "").contains('\n'));
        assert!(!qp.contains("=_"));
    }

    #[test]
    fn headers_never_carry_raw_line_breaks_or_non_ascii() {
        for v in ["plain", "Ünïcödé 🙂", "evil\r\nBcc: x@y", &"long ".repeat(300)] {
            for s in [unstructured(v), phrase(v)] {
                for line in s.split("\r\n ") {
                    assert!(line.is_ascii() && !line.contains('\r') && !line.contains('\n'), "{s}");
                    assert!(line.len() <= 998);
                }
            }
        }
        assert_eq!(phrase("a\"b"), "\"a\\\"b\"");
    }

    /// Decodes the encoded words of a header value (what a mail reader shows).
    fn decoded(value: &str) -> String {
        let mut out = String::new();
        for word in value.split("\r\n ") {
            match word.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")) {
                Some(b64) => out.push_str(std::str::from_utf8(&STANDARD.decode(b64).unwrap()).unwrap()),
                None => out.push_str(word),
            }
        }
        out
    }

    #[test]
    fn decoded_headers_hold_no_line_break_or_control_character() {
        let hostile =
            ["Zoë\r\nBcc: x@y", "a\nb", "a\rb", "tab\there", "nul\0", "del\u{7f}", "c1\u{85}", "ls\u{2028}", "\u{202e}fdp.exe"];
        for v in hostile {
            for s in [unstructured(v), phrase(v)] {
                let d = decoded(s.trim_matches('"'));
                assert!(!d.chars().any(is_unsafe_in_header), "{v:?} -> {s} -> {d:?}");
                assert!(d.contains('\u{fffd}'), "{v:?}: the replacement shows: {d:?}");
            }
            assert!(!mime_param("filename", v).contains(['\r', '\n']));
        }
        assert_eq!(decoded(&phrase("Zoë\r\nBcc: x@y")), "Zoë\u{fffd}\u{fffd}Bcc: x@y");
        assert_eq!(unstructured("a\nb"), "=?UTF-8?B?Ye+/vWI=?=");
        assert_eq!(header_safe("plain text"), "plain text");
        // Text that spells an encoded word is itself encoded: it reads back as typed.
        assert_eq!(unstructured("=?UTF-8?B?Cg==?="), "=?UTF-8?B?PT9VVEYtOD9CP0NnPT0/PQ==?=");
        assert_eq!(decoded(&phrase("=?UTF-8?B?Cg==?=")), "=?UTF-8?B?Cg==?=");
        assert_eq!(mime_param("filename", "a\r\n.pdf"), "filename*=UTF-8''a%EF%BF%BD%EF%BF%BD.pdf");
        assert_eq!(mime_param("filename", "r\u{e9}sum\u{e9}.pdf"), "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf");
        assert_eq!(safe_mime_type("image/PNG"), "image/png");
        assert_eq!(safe_mime_type("text/html\r\nX: y"), "application/octet-stream");
    }
}
