//! Reading a policy file as an MDM admin would push it: an XML or binary property list (iOS
//! managed app configuration) or a JSON object. Only for tools (the CLI); on a phone the
//! platform hands the tree over directly.
//!
//! Types [`Value`] cannot hold are refused with [`FormatError::Unsupported`] naming the key,
//! rather than converted: a plist `<real>`, `<date>`, `<data>` or UID, a JSON fraction or
//! `null`, an integer beyond the signed 64-bit range. Guessing (2.0 → 2, a date → text) would
//! let a console's mistake through silently; every key Verbatim knows is a string, integer,
//! boolean or list.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::Value;

/// The largest policy file read. Real policies are a few KiB; the limit keeps a wrong path
/// (a disk image, a log) from being read whole.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why bytes are not a policy tree.
#[derive(Debug)]
pub enum FormatError {
    /// Neither a property list (`<`, `bplist`) nor a JSON object (`{`).
    UnknownFormat,
    /// The property list is malformed; the detail is the `plist` crate's (kind and offset only).
    Plist(String),
    /// The JSON is malformed; the detail is `serde_json`'s (kind, line and column only).
    Json(String),
    /// A value of a type policies never use; `key` is its path (`tls_pins[2]`), `found` its type.
    Unsupported { key: String, found: &'static str },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::UnknownFormat => f.write_str("not a property list or JSON object (expected `<?xml`, `bplist` or `{`)"),
            FormatError::Plist(detail) => write!(f, "malformed property list: {detail}"),
            FormatError::Json(detail) => write!(f, "malformed JSON: {detail}"),
            FormatError::Unsupported { key, found } => {
                write!(f, "{key}: {found} values are not supported (use a string, integer, boolean or list)")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Why a policy file could not be loaded. `Display` names the file and what failed.
#[derive(Debug)]
pub enum FileError {
    Read { path: PathBuf, source: std::io::Error },
    TooLarge { path: PathBuf, bytes: u64 },
    Format { path: PathBuf, source: FormatError },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::Read { path, .. } | FileError::TooLarge { path, .. } | FileError::Format { path, .. } => path,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            FileError::TooLarge { path, bytes } => {
                write!(f, "{}: too large for a policy ({bytes} bytes, at most {MAX_FILE_BYTES})", path.display())
            }
            FileError::Format { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Read { source, .. } => Some(source),
            FileError::Format { source, .. } => Some(source),
            FileError::TooLarge { .. } => None,
        }
    }
}

/// Reads a policy file, choosing the format by its content (not its extension).
pub fn load(path: &Path) -> Result<Value, FileError> {
    let read_error = |source| FileError::Read { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { path: path.to_path_buf(), bytes: size });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    from_bytes(&bytes).map_err(|source| FileError::Format { path: path.to_path_buf(), source })
}

/// Parses policy bytes, choosing by content: `bplist` or `<` (after an optional UTF-8 byte
/// order mark and blanks) is a property list, `{` is JSON.
pub fn from_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).trim_ascii_start();
    if text.starts_with(b"bplist") {
        from_plist_bytes(text)
    } else if text.starts_with(b"<") {
        let plist = plist::Value::from_reader_xml(text).map_err(|e| FormatError::Plist(e.to_string()))?;
        convert_plist(&plist, "(root)")
    } else if text.starts_with(b"{") {
        from_json_bytes(text)
    } else {
        Err(FormatError::UnknownFormat)
    }
}

/// Parses an XML or binary property list (the `plist` crate tells them apart).
pub fn from_plist_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    let plist = plist::Value::from_reader(Cursor::new(bytes)).map_err(|e| FormatError::Plist(e.to_string()))?;
    convert_plist(&plist, "(root)")
}

/// Parses a JSON document.
pub fn from_json_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| FormatError::Json(e.to_string()))?;
    convert_json(&json, "(root)")
}

/// The path of a child for error messages: `key` at the top level, `parent.key` below it.
fn child_path(parent: &str, key: &str) -> String {
    let key: String = key.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
    if parent == "(root)" { key } else { format!("{parent}.{key}") }
}

fn unsupported(key: &str, found: &'static str) -> FormatError {
    FormatError::Unsupported { key: key.to_string(), found }
}

fn convert_plist(value: &plist::Value, key: &str) -> Result<Value, FormatError> {
    Ok(match value {
        plist::Value::String(s) => Value::String(s.clone()),
        plist::Value::Boolean(b) => Value::Bool(*b),
        plist::Value::Integer(n) => Value::Integer(n.as_signed().ok_or_else(|| unsupported(key, "huge integer"))?),
        plist::Value::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert_plist(item, &format!("{key}[{}]", i + 1)))
                .collect::<Result<_, _>>()?,
        ),
        plist::Value::Dictionary(dict) => Value::Dict(
            dict.iter()
                .map(|(k, v)| Ok((k.clone(), convert_plist(v, &child_path(key, k))?)))
                .collect::<Result<BTreeMap<_, _>, FormatError>>()?,
        ),
        plist::Value::Real(_) => return Err(unsupported(key, "real-number")),
        plist::Value::Date(_) => return Err(unsupported(key, "date")),
        plist::Value::Data(_) => return Err(unsupported(key, "data")),
        plist::Value::Uid(_) => return Err(unsupported(key, "UID")),
        // `plist::Value` is non-exhaustive; a future variant is refused the same way.
        _ => return Err(unsupported(key, "unknown plist")),
    })
}

fn convert_json(value: &serde_json::Value, key: &str) -> Result<Value, FormatError> {
    Ok(match value {
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None if n.is_f64() => return Err(unsupported(key, "fractional number")),
            None => return Err(unsupported(key, "huge integer")),
        },
        serde_json::Value::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert_json(item, &format!("{key}[{}]", i + 1)))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => Value::Dict(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), convert_json(v, &child_path(key, k))?)))
                .collect::<Result<BTreeMap<_, _>, FormatError>>()?,
        ),
        serde_json::Value::Null => return Err(unsupported(key, "null")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_plist() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <!-- a comment -->
  <key>s</key><string>x</string>
  <key>n</key><integer>42</integer>
  <key>b</key><true/>
  <key>l</key><array><string>a</string><string>b</string></array>
</dict>
</plist>"#;
        let v = from_bytes(xml).unwrap();
        let expected = Value::dict([
            ("s", Value::from("x")),
            ("n", Value::from(42)),
            ("b", Value::from(true)),
            ("l", Value::List(vec!["a".into(), "b".into()])),
        ]);
        assert_eq!(v, expected);
    }

    #[test]
    fn binary_plist() {
        let mut dict = plist::Dictionary::new();
        dict.insert("n".into(), plist::Value::Integer(7.into()));
        dict.insert("s".into(), plist::Value::String("x".into()));
        let mut bytes = Vec::new();
        plist::Value::Dictionary(dict).to_writer_binary(&mut bytes).unwrap();
        let v = from_bytes(&bytes).unwrap();
        assert_eq!(v, Value::dict([("n", Value::from(7)), ("s", Value::from("x"))]));
    }

    #[test]
    fn json_with_bom() {
        let v = from_bytes(b"\xEF\xBB\xBF  {\"a\": [1, \"b\"]}").unwrap();
        assert_eq!(v, Value::dict([("a", Value::List(vec![1.into(), "b".into()]))]));
    }

    #[test]
    fn unsupported_types_name_the_key() {
        let e = from_bytes(br#"{"max_batch_kb": 1.5}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "max_batch_kb: fractional number values are not supported (use a string, integer, boolean or list)"
        );
        let e = from_bytes(br#"{"tls_pins": ["a", null]}"#).unwrap_err();
        assert!(e.to_string().starts_with("tls_pins[2]: null"), "{e}");
        let xml = b"<plist version=\"1.0\"><dict><key>x</key><real>1.5</real></dict></plist>";
        let e = from_bytes(xml).unwrap_err();
        assert!(e.to_string().starts_with("x: real-number"), "{e}");
    }

    #[test]
    fn garbage_is_unknown_format() {
        assert!(matches!(from_bytes(b"archive_url=https://x"), Err(FormatError::UnknownFormat)));
        assert!(matches!(from_bytes(b"{ not json"), Err(FormatError::Json(_))));
        assert!(matches!(from_bytes(b"<plist><dict>"), Err(FormatError::Plist(_))));
    }
}
